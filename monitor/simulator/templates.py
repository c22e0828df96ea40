"""Default account bodies, taken from the examples in the venues' API references (Clear
Street's AccountBalances, Polymarket Exchange's GetAccountBalanceResponse).

Each template is a plain nested dict that is never mutated: an account stores only its
overrides, and a response body is the template with those overrides patched in along
copied paths. A template also knows its compact JSON, so an untouched account's body is
one string concatenation.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final

FieldPath = tuple[str, ...]

_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    """Compact JSON; the simulator's only encoder."""
    return _ENCODER.encode(value)


class _Missing:
    """Marks a field that is absent from the body (removed)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

#: Deprecated by Clear Street on 2026-06-04 (VENUES.md); only `legacy_pdt` sends them.
CS_DEPRECATED_FIELDS: Final = (
    "daily_total_pnl",
    "margin_details.day_trade_count",
    "margin_details.pattern_day_trader",
    "margin_details.day_trade_buying_power_usage",
    "sod.day_trade_buying_power",
)

# --- Clear Street ----------------------------------------------------------------------

# Clear Street's API reference: the REG_T example, exactly (top_contributors are added on
# request only).
_CS_LEGACY_PDT: dict[str, Any] = {
    "buying_power": "90000.00",
    "currency": "USD",
    "daily_realized_pnl": "700.00",
    "daily_total_pnl": "1250.00",
    "daily_unrealized_pnl": "550.00",
    "equity": "100000.00",
    "long_market_value": "40000.00",
    "margin_details": {
        "day_trade_buying_power_usage": "0.00",
        "day_trade_count": 2,
        "initial_margin_excess": "50000.00",
        "initial_margin_requirement": "50000.00",
        "maintenance_margin_excess": "75000.00",
        "maintenance_margin_requirement": "25000.00",
        "pattern_day_trader": False,
        "usage": {"total": "100000.00", "used": "5000.00"},
    },
    "margin_type": "REG_T",
    "multiplier": "2",
    "open_order_adjustment": "-10000.00",
    "settled_cash": "99775.05",
    "short_market_value": "10000.00",
    "sod": {
        "asof": "2023-09-27",
        "buying_power": "90000.00",
        "day_trade_buying_power": "200000.00",
        "equity": "100000.00",
        "long_market_value": "40000.00",
        "maintenance_margin_excess": "50000.00",
        "maintenance_margin_requirement": "50000.00",
        "short_market_value": "10000.00",
        "trade_cash": "70000.00",
    },
    "trade_cash": "70000.00",
    "unsettled_credits": "20000.00",
    "unsettled_debits": "10000.00",
    "withdrawable_cash": "75000.00",
}

# The current API (since 2026-06): the REG_T example without the deprecated PDT fields,
# with the new P&L fields and the intraday margin framework's details.
_CS_MARGIN: dict[str, Any] = {
    "buying_power": "90000.00",
    "currency": "USD",
    "daily_change": "1250.00",
    "daily_pnl": "1250.00",
    "daily_realized_pnl": "700.00",
    "daily_unrealized_pnl": "550.00",
    "equity": "100000.00",
    "long_market_value": "40000.00",
    "margin_details": {
        "initial_margin_excess": "50000.00",
        "initial_margin_requirement": "50000.00",
        "intraday_details": {"buying_power": "180000.00", "multiplier": "4"},
        "maintenance_margin_excess": "75000.00",
        "maintenance_margin_requirement": "25000.00",
        "overnight_details": {"buying_power": "90000.00", "multiplier": "2"},
        "usage": {"total": "100000.00", "used": "5000.00"},
    },
    "margin_type": "REG_T",
    "multiplier": "2",
    "open_order_adjustment": "-10000.00",
    "settled_cash": "99775.05",
    "short_market_value": "10000.00",
    "sod": {
        "asof": "2023-09-27",
        "buying_power": "90000.00",
        "equity": "100000.00",
        "long_market_value": "40000.00",
        "maintenance_margin_excess": "50000.00",
        "maintenance_margin_requirement": "50000.00",
        "short_market_value": "10000.00",
        "trade_cash": "70000.00",
    },
    "trade_cash": "70000.00",
    "unrealized_pnl": "2300.00",
    "unsettled_credits": "20000.00",
    "unsettled_debits": "10000.00",
    "withdrawable_cash": "75000.00",
}

# Clear Street's API reference: the NONE (cash) example, current API: no margin_details,
# no daily_total_pnl.
_CS_CASH: dict[str, Any] = {
    "buying_power": "45000.00",
    "currency": "USD",
    "daily_change": "1250.00",
    "daily_pnl": "1250.00",
    "daily_realized_pnl": "700.00",
    "daily_unrealized_pnl": "550.00",
    "equity": "100000.00",
    "long_market_value": "30000.00",
    "margin_type": "NONE",
    "open_order_adjustment": "-5000.00",
    "settled_cash": "60000.00",
    "sod": {
        "asof": "2023-09-27",
        "buying_power": "45000.00",
        "equity": "100000.00",
        "long_market_value": "30000.00",
    },
    "trade_cash": "60000.00",
    "unrealized_pnl": "1800.00",
    "unsettled_credits": "20000.00",
    "unsettled_debits": "10000.00",
    "withdrawable_cash": "55000.00",
}


def _contributors() -> list[dict[str, Any]]:
    """Five top margin contributors; the first is the seed's."""
    out: list[dict[str, Any]] = [
        {
            "initial_margin_requirement": "25000.00",
            "maintenance_margin_requirement": "15000.00",
            "market_value": "50000.00",
            "underlying_instrument_id": "a1a2a3a4-b1b2-c1c2-d1d2-d3d4d5d6d7d8",
        }
    ]
    for i, share in enumerate((Decimal(12000), Decimal(6000), Decimal(3000), Decimal(1500))):
        out.append(
            {
                "initial_margin_requirement": f"{share:.2f}",
                "maintenance_margin_requirement": f"{share * Decimal('0.6'):.2f}",
                "market_value": f"{share * 2:.2f}",
                "underlying_instrument_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sim/u/{i}")),
            }
        )
    return out


CS_TOP_CONTRIBUTORS: Final = _contributors()

# --- Polymarket ------------------------------------------------------------------------

# Polymarket's GetAccountBalanceResponse example, fields in the schema's order (updateTime is added
# per response). excessCapital = balance + totalSecurityAvailableValue - capitalRequirement.
_PM_DEFAULT: dict[str, Any] = {
    "balance": "25000.00",
    "capitalRequirement": "5000.00",
    "excessCapital": "21450.00",
    "buyingPower": "18000.00",
    "securities": {
        "PRES-2028-DEM-YES": {
            "balance": "2000.00",
            "marketValue": "1100.00",
            "haircut": "500",
            "notionalValue": "2000.00",
            "availableValue": "1045.00",
        },
        "FED-DEC-CUT-NO": {
            "balance": "1500.00",
            "marketValue": "450.00",
            "haircut": "1000",
            "notionalValue": "1500.00",
            "availableValue": "405.00",
        },
    },
    "totalSecurityNotionalValue": "3500.00",
    "totalSecurityAvailableValue": "1450.00",
    "openOrders": "2000.00",
    "alternateCapitalRequirementCurrency": "USD",
    "alternateCapitalRequirement": "0.00",
    "unsettledFunds": "0.00",
    "marginRequirement": "0.00",
}

# --- field kinds -----------------------------------------------------------------------

DEC = "dec"  # decimal string with 2 places, "90000.00"
INTSTR = "intstr"  # integer string, "500" (int64 as string)
INT = "int"
OTHER = "other"


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return OTHER
    if isinstance(value, int):
        return INT
    if isinstance(value, str):
        try:
            Decimal(value)
        except InvalidOperation:
            return OTHER
        return DEC if "." in value else INTSTR
    return OTHER


def _collect_kinds(body: dict[str, Any], prefix: FieldPath, out: dict[FieldPath, str]) -> None:
    for key, value in body.items():
        path = (*prefix, key)
        if isinstance(value, dict):
            _collect_kinds(value, path, out)
        else:
            out.setdefault(path, _kind_of(value))


@dataclass(frozen=True)
class Template:
    """One venue's default body for a kind of account."""

    name: str
    body: dict[str, Any]
    subtype: str = ""  # Clear Street listing subtype
    json_body: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "json_body", dumps(self.body))

    def get(self, path: FieldPath) -> Any:
        node: Any = self.body
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return MISSING
            node = node[key]
        return node


CS_TEMPLATES: Final = {
    "margin": Template("margin", _CS_MARGIN, "MARGIN"),
    "cash": Template("cash", _CS_CASH, "CASH"),
    "legacy_pdt": Template("legacy_pdt", _CS_LEGACY_PDT, "MARGIN"),
}
PM_TEMPLATES: Final = {"default": Template("default", _PM_DEFAULT)}


class FieldKinds:
    """How a venue's field is written on the wire, learnt from every template."""

    def __init__(self, templates: dict[str, Template]) -> None:
        self._by_path: dict[FieldPath, str] = {}
        for template in templates.values():
            _collect_kinds(template.body, (), self._by_path)
        self._by_leaf: dict[str, str] = {}
        for path, kind in self._by_path.items():
            self._by_leaf.setdefault(path[-1], kind)

    def kind(self, path: FieldPath) -> str:
        return self._by_path.get(path) or self._by_leaf.get(path[-1], DEC)


CS_KINDS: Final = FieldKinds(CS_TEMPLATES)
PM_KINDS: Final = FieldKinds(PM_TEMPLATES)
_CENT: Final = Decimal("0.01")


def format_number(value: Decimal, kind: str) -> Any:
    """A computed number written the way the field is written in the templates."""
    if kind == INT:
        return int(value.to_integral_value())
    if kind == INTSTR:
        return str(int(value.to_integral_value()))
    text = f"{value.quantize(_CENT):f}"
    return "0.00" if text == "-0.00" else text


def wire_value(value: Any, kind: str) -> Any:
    """A value given in a scenario or control call, as the wire carries it.

    Numbers become the field's wire form (decimal strings with two places, integer
    strings, integers); strings and every other JSON value are sent as given.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return value
    return format_number(Decimal(str(value)), kind)


def to_decimal(value: Any) -> Decimal:
    """A field's current value as a number (absent or non-numeric counts as 0)."""
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, int | float | Decimal | str):
        try:
            return Decimal(str(value))
        except InvalidOperation:
            return Decimal(0)
    return Decimal(0)


def split_path(path: str) -> FieldPath:
    parts = tuple(path.split("."))
    if not path or any(not p for p in parts):
        raise ValueError(f"invalid field path {path!r}: use dotted names like sod.equity")
    return parts


def patched(base: dict[str, Any], patches: Any) -> dict[str, Any]:
    """`base` with each (path, value) of `patches` applied, copying only touched dicts.

    A MISSING value deletes the field. Missing intermediate objects are created.
    """
    root = dict(base)
    copied = {id(root)}
    for parts, value in patches:
        node = root
        for key in parts[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                if value is MISSING:
                    break
                child = {}
                node[key] = child
                copied.add(id(child))
            elif id(child) not in copied:
                child = dict(child)
                node[key] = child
                copied.add(id(child))
            node = child
        else:
            if value is MISSING:
                node.pop(parts[-1], None)
            else:
                node[parts[-1]] = value
    return root


def mutate(obj: Any, parts: FieldPath, value: Any) -> None:
    """Set (or with MISSING delete) a path in a freshly built JSON value, in place.

    Segments that are integers index lists; missing objects on the way are created.
    """
    node = obj
    for key in parts[:-1]:
        if isinstance(node, list):
            try:
                node = node[int(key)]
            except (ValueError, IndexError):
                return
            continue
        if not isinstance(node, dict):
            return
        child = node.get(key)
        if not isinstance(child, dict | list):
            if value is MISSING:
                return
            child = {}
            node[key] = child
        node = child
    last = parts[-1]
    if isinstance(node, list):
        try:
            index = int(last)
            if value is MISSING:
                del node[index]
            else:
                node[index] = value
        except (ValueError, IndexError):
            return
    elif isinstance(node, dict):
        if value is MISSING:
            node.pop(last, None)
        else:
            node[last] = value
