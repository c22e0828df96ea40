"""Snapshots: one account's balances at one moment, as exact typed fields.

A Snapshot is the one currency between the venue half (adapters, poller) and the rule
half (evaluator, lifecycle). Every field the venue sent is readable by its dotted
snake_case path; nested objects and lists are also kept whole at their own path so that
collection functions (`sum_of(securities, "market_value")`) can walk them.
"""

from __future__ import annotations

import enum
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from monitor.errors import SnapshotParseError

#: The normalized fields every venue maps where it has the meaning (see README).
NORMALIZED_FIELDS: tuple[str, ...] = (
    "buying_power",
    "equity",
    "margin_excess",
    "margin_requirement",
    "pattern_day_trader",
    "day_trade_count",
    "daily_pnl",
)


class FieldType(enum.Enum):
    DECIMAL = "decimal"  # a decimal string or a JSON number
    INTEGER = "integer"  # a JSON integer (or an integral decimal string)
    BOOLEAN = "boolean"
    STRING = "string"
    OBJECT = "object"
    LIST = "list"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One account's fields at one moment, from one venue."""

    venue: str
    venue_kind: str
    account: str
    fields: Mapping[str, Any]
    taken_at: float  # wall-clock seconds since the epoch when the answer arrived
    currency: str | None = None
    request_id: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)

    def get(self, path: str, default: Any = None) -> Any:
        """A field by its SPEC path, including venue/account/labels.x/params.x."""
        value = self.fields.get(path, _ABSENT)
        if value is not _ABSENT:
            return value
        if path in ("venue", "venue_kind", "account", "currency"):
            value = getattr(self, path)
            return default if value is None else value
        head, _, rest = path.partition(".")
        if head == "labels":
            return self.labels.get(rest, default)
        if head == "params":
            return self.params.get(rest, default)
        return default


_ABSENT = object()
_DECIMAL_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_snake_cache: dict[str, str] = {}
_path_cache: dict[tuple[str, str], str] = {}


def snake_case(name: str) -> str:
    """`buyingPower` -> `buying_power`; already snake_case names pass unchanged."""
    cached = _snake_cache.get(name)
    if cached is None:
        cached = sys.intern(_CAMEL_BOUNDARY.sub("_", name).lower())
        if len(_snake_cache) < 100_000:
            _snake_cache[name] = cached
    return cached


def _join(parent: str, key: str) -> str:
    """Interned dotted paths, so thousands of snapshots share their key strings."""
    cached = _path_cache.get((parent, key))
    if cached is None:
        cached = sys.intern(f"{parent}.{key}" if parent else key)
        if len(_path_cache) < 100_000:
            _path_cache[(parent, key)] = cached
    return cached


def to_decimal(value: Any) -> Decimal | None:
    """An exact Decimal from a decimal string or JSON number, or None if not numeric."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value.strip()):
        try:
            return Decimal(value.strip())
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid text
            return None
    return None


@dataclass(frozen=True, slots=True)
class FieldSchema:
    """What a venue is known to send: types of known paths, maps with data keys.

    Paths use `*` for any list index or map key: `securities.*.market_value`.
    """

    types: Mapping[str, FieldType]
    maps: frozenset[str] = frozenset()  # paths whose keys are data (symbols), kept verbatim
    deprecated: frozenset[str] = frozenset()

    def type_of(self, pattern: str) -> FieldType | None:
        return self.types.get(pattern)


def _coerce(value: Any, kind: FieldType | None, path: str) -> Any:
    """Check a known field's type; lenient conversion of unknown ones."""
    if kind is None:
        if isinstance(value, str):
            number = to_decimal(value)
            return value if number is None else number
        if isinstance(value, float):  # only when the caller parsed floats as floats
            return Decimal(repr(value))
        if isinstance(value, int) and not isinstance(value, bool):
            return Decimal(value)
        return value
    if kind is FieldType.DECIMAL or kind is FieldType.INTEGER:
        number = to_decimal(value)
        if number is None:
            raise SnapshotParseError(f"field {path}: expected a decimal number, got {_show(value)}")
        if kind is FieldType.INTEGER and number != number.to_integral_value():
            raise SnapshotParseError(f"field {path}: expected an integer, got {_show(value)}")
        return number
    if kind is FieldType.BOOLEAN:
        if not isinstance(value, bool):
            raise SnapshotParseError(f"field {path}: expected true or false, got {_show(value)}")
        return value
    if not isinstance(value, str):
        raise SnapshotParseError(f"field {path}: expected a string, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    kind = type(value).__name__
    if kind == "Decimal":
        kind = "number"
    return f"{kind} {text[:40]}{'...' if len(text) > 40 else ''}"


def flatten(data: Mapping[str, Any], schema: FieldSchema) -> dict[str, Any]:
    """Every field of a venue answer by its dotted snake_case path.

    Nested objects and lists are also stored whole (converted) at their own path.
    Nulls are treated as absent. Known fields of the wrong type raise SnapshotParseError.
    """
    out: dict[str, Any] = {}
    _walk(data, "", "", schema, out)
    return out


def _walk(
    node: Mapping[str, Any], path: str, pattern: str, schema: FieldSchema, out: dict[str, Any]
) -> dict[str, Any]:
    converted: dict[str, Any] = {}
    data_keys = pattern in schema.maps
    for raw_key, value in node.items():
        if value is None:
            continue
        key = raw_key if data_keys else snake_case(raw_key)
        child_path = _join(path, key)
        child_pattern = _join(pattern, "*" if data_keys else key)
        converted[key] = out[child_path] = _convert(value, child_path, child_pattern, schema, out)
    return converted


def _convert(value: Any, path: str, pattern: str, schema: FieldSchema, out: dict[str, Any]) -> Any:
    kind = schema.type_of(pattern)
    if kind is FieldType.OBJECT or kind is FieldType.LIST:
        wanted = dict if kind is FieldType.OBJECT else list
        if not isinstance(value, wanted):
            article = "an" if kind is FieldType.OBJECT else "a"
            raise SnapshotParseError(
                f"field {path}: expected {article} {kind.value}, got {_show(value)}"
            )
    elif kind is not None:  # a known scalar field: an object or list here is a wrong type
        if isinstance(value, dict | list):
            raise SnapshotParseError(f"field {path}: expected a {kind.value}, got {_show(value)}")
        return _coerce(value, kind, path)
    if isinstance(value, dict):
        return _walk(value, path, pattern, schema, out)
    if isinstance(value, list):
        item_pattern = _join(pattern, "*")
        items = []
        for i, item in enumerate(value):
            if item is None:
                continue
            item_path = _join(path, str(i))
            items.append(_convert(item, item_path, item_pattern, schema, out))
        return items
    return _coerce(value, None, path)
