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
    # The paths whose values the producer guarantees are Decimals wherever present: its
    # schema's `decimal_paths` for a snapshot that `flatten` parsed (and the rules' fast
    # path then skips its per-field type checks); empty for any other snapshot.
    decimal_fields: frozenset[str] = frozenset()

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
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_snake_cache: dict[str, str] = {}
_path_cache: dict[tuple[str, str], str] = {}
_PATHS_HELD = 10_000


def snake_case(name: str) -> str:
    """`buyingPower` -> `buying_power`; already snake_case names pass unchanged."""
    cached = _snake_cache.get(name)
    if cached is None:
        cached = sys.intern(_CAMEL_BOUNDARY.sub("_", name).lower())
        if len(_snake_cache) < 100_000:
            _snake_cache[name] = cached
    return cached


def _join(parent: str, key: str) -> str:
    """Interned dotted paths, so thousands of snapshots share their key strings.

    Paths under data keys (Polymarket's `securities.<symbol>.*`) come and go with the
    markets held: the cache is emptied when it holds _PATHS_HELD (it kept up to 100,000,
    26 MB, for the process's life); `sys.intern` still gives the snapshots one string
    per path while any of them holds it."""
    cached = _path_cache.get((parent, key))
    if cached is None:
        cached = sys.intern(f"{parent}.{key}" if parent else key)
        if len(_path_cache) >= _PATHS_HELD:
            _path_cache.clear()
        _path_cache[(parent, key)] = cached
    return cached


def to_decimal(value: Any) -> Decimal | None:
    """An exact Decimal from a decimal string or JSON number, or None if not numeric.

    A string is numeric when it is a plain decimal number, optionally signed and with an
    exponent, surrounded by blanks at most: `"90000.00"`, `" -1.5e3 "`. Not: `"NaN"`,
    `"Infinity"`, `"1_000"` (which `Decimal()` alone would take), `""`.
    """
    if type(value) is str:
        return _decimal_text(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):  # a subclass of str
        return _decimal_text(str(value))
    return None


def _decimal_text(text: str) -> Decimal | None:
    # Decimal() parses exactly the plain decimal syntax (blanks around it stripped), plus
    # infinities, NaNs and digit-grouping underscores, which are refused here. It is
    # five times faster than matching a pattern first, and it runs once per field per
    # poll (bench/poll_cost.py); tests/test_snapshot_parsing.py holds it to the pattern.
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    if not number.is_finite() or "_" in text:
        return None
    return number


#: The range of numbers a venue may send for money and quantities: at most MAX_DIGITS
#: significant digits, and a magnitude (the power of ten of the leading digit) within
#: +-MAX_MAGNITUDE. Beyond it a number is an error or an attack: `"-1E+999999999"` is a
#: valid decimal whose `format(d, "f")` takes 2 GB, and its arithmetic is as costly.
MAX_DIGITS = 40
MAX_MAGNITUDE = 30


#: The longest text a known string field may hold: they are codes, dates and ids
#: (`currency`, `margin_type`, `sod.asof`), and `currency` labels every metric of its
#: account. Unknown fields' text is not bounded.
MAX_KNOWN_TEXT = 64


def in_money_range(number: Decimal) -> bool:
    """A finite `number` within MAX_DIGITS and +-MAX_MAGNITUDE."""
    return (
        number.is_finite()
        and -MAX_MAGNITUDE <= number.adjusted() <= MAX_MAGNITUDE
        and len(number.as_tuple().digits) <= MAX_DIGITS
    )


def _out_of_range(value: Any, path: str) -> SnapshotParseError:
    return SnapshotParseError(
        f"field {path}: {_show(value)} is outside the range of money riskmon accepts "
        f"(finite, at most {MAX_DIGITS} digits, exponent within +-{MAX_MAGNITUDE})"
    )


@dataclass(frozen=True, slots=True)
class FieldSchema:
    """What a venue is known to send: types of known paths, maps with data keys.

    Paths use `*` for any list index or map key: `securities.*.market_value`.
    """

    types: Mapping[str, FieldType]
    maps: frozenset[str] = frozenset()  # paths whose keys are data (symbols), kept verbatim
    deprecated: frozenset[str] = frozenset()
    # parent pattern -> key as sent -> (snake_case key, pattern, type): what `flatten`
    # works out once per field name instead of once per field per poll
    _steps: dict[str, dict[str, tuple[str, str, FieldType | None]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    #: The paths at which `flatten` stores nothing but a Decimal: those of known decimal
    #: and integer fields outside maps and lists (where a data key or an index is part
    #: of the path, so that a path is not its pattern). The adapters' snapshots carry it
    #: as `Snapshot.decimal_fields`.
    decimal_paths: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decimal_paths", _decimal_paths(self))

    def type_of(self, pattern: str) -> FieldType | None:
        return self.types.get(pattern)


def _decimal_paths(schema: FieldSchema) -> frozenset[str]:
    collections = set(schema.maps)
    collections.update(p for p, kind in schema.types.items() if kind is FieldType.LIST)
    paths = set()
    for path, kind in schema.types.items():
        if kind is not FieldType.DECIMAL and kind is not FieldType.INTEGER:
            continue
        parts = path.split(".")
        if any(part == "*" or part.isdigit() for part in parts):
            continue
        if any(".".join(parts[:i]) in collections for i in range(1, len(parts))):
            continue
        paths.add(sys.intern(path))
    return frozenset(paths)


def _coerce(value: Any, kind: FieldType | None, path: str) -> Any:
    """Check a known field's type; lenient conversion of unknown ones."""
    if kind is None:
        # An unknown field's number out of range (a long reference number, say) stays
        # text: nothing reads it as money, and the poll need not fail for it.
        if isinstance(value, str):
            number = to_decimal(value)
            if number is None or not in_money_range(number):
                return _shared_text(value)
            return number
        if isinstance(value, float):  # only when the caller parsed floats as floats
            number = Decimal(repr(value))
        elif isinstance(value, Decimal):
            number = value
        elif isinstance(value, int) and not isinstance(value, bool):
            number = Decimal(value)
        else:
            return value
        return number if in_money_range(number) else str(number)
    if kind is FieldType.DECIMAL or kind is FieldType.INTEGER:
        number = to_decimal(value)
        if number is None:
            if isinstance(value, Decimal):  # NaN or an infinity
                raise _out_of_range(value, path)
            raise SnapshotParseError(f"field {path}: expected a decimal number, got {_show(value)}")
        if not in_money_range(number):
            raise _out_of_range(value, path)
        if kind is FieldType.INTEGER and number != number.to_integral_value():
            raise SnapshotParseError(f"field {path}: expected an integer, got {_show(value)}")
        return number
    if kind is FieldType.BOOLEAN:
        if not isinstance(value, bool):
            raise SnapshotParseError(f"field {path}: expected true or false, got {_show(value)}")
        return value
    if not isinstance(value, str):
        raise SnapshotParseError(f"field {path}: expected a string, got {_show(value)}")
    if len(value) > MAX_KNOWN_TEXT:
        raise SnapshotParseError(
            f"field {path}: text of {len(value)} characters, more than the "
            f"{MAX_KNOWN_TEXT} riskmon accepts there"
        )
    return _shared_text(value)


_SHARED_TEXT_MAX = 32  # characters
_SHARED_TEXTS_HELD = 1_024  # texts; then the table starts again
_shared_texts: dict[str, str] = {}


def _shared_text(text: str) -> str:
    """One object for each short text value: thousands of accounts send the same few
    (currency `USD`, margin type `REG_T`, the `sod.asof` date), 50 bytes each a copy.

    Some texts are new in every answer (Polymarket's `updateTime`): kept here, they
    outlived their snapshots, and the table grew by one text an answer up to a cap of
    100,000 texts (11 MB: RSS grew by 11-17 MiB over the first 23-25 minutes with 100
    Polymarket polls a second, bench/soak.py). The table is emptied when full instead:
    the texts that repeat are back in it at their next answer, and a snapshot still
    holding an older copy gives it up at its next poll."""
    if len(text) > _SHARED_TEXT_MAX:
        return text
    shared = _shared_texts.get(text)
    if shared is None:
        if len(_shared_texts) >= _SHARED_TEXTS_HELD:
            _shared_texts.clear()
        shared = _shared_texts[text] = text
    return shared


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
    if pattern in schema.maps:  # data keys (symbols): kept verbatim
        item_pattern = _join(pattern, "*")
        for key, value in node.items():
            if value is not None:
                child_path = _join(path, key)
                converted[key] = out[child_path] = _convert(
                    value, child_path, item_pattern, schema, out
                )
        return converted
    steps = schema._steps.get(pattern)
    if steps is None:
        steps = {}
        if len(schema._steps) < 10_000:  # nested objects under ever new names: no cache
            schema._steps[pattern] = steps
    outside_collections = path == pattern  # then every child's path is its pattern
    decimal_kind, string_kind = FieldType.DECIMAL, FieldType.STRING
    max_digits, low, high = MAX_DIGITS, -MAX_MAGNITUDE, MAX_MAGNITUDE
    for raw_key, value in node.items():
        if value is None:
            continue
        try:
            key, child_pattern, kind = steps[raw_key]
        except KeyError:
            key, child_pattern, kind = _step(schema, steps, pattern, raw_key)
        child_path = child_pattern if outside_collections else _join(path, key)
        if kind is decimal_kind and type(value) is str:  # most fields: `_decimal_text` inlined
            try:
                number = Decimal(value)
            except (InvalidOperation, ValueError):
                pass
            else:
                # a short text's digits are in range (the one-call check for most fields)
                if (
                    number.is_finite()
                    and "_" not in value
                    and len(value) <= max_digits
                    and low <= number.adjusted() <= high
                ):
                    converted[key] = out[child_path] = number
                    continue
        elif kind is string_kind and type(value) is str and len(value) <= MAX_KNOWN_TEXT:
            # a known text field (`currency`, ids): `_coerce` inlined, 1 us a field less
            converted[key] = out[child_path] = _shared_text(value)
            continue
        converted[key] = out[child_path] = _convert(value, child_path, child_pattern, schema, out)
    return converted


def _step(
    schema: FieldSchema,
    steps: dict[str, tuple[str, str, FieldType | None]],
    pattern: str,
    raw_key: str,
) -> tuple[str, str, FieldType | None]:
    key = snake_case(raw_key)
    child_pattern = _join(pattern, key)
    step = (key, child_pattern, schema.type_of(child_pattern))
    if len(steps) < 10_000:  # a venue that sends ever new field names
        steps[raw_key] = step
    return step


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
