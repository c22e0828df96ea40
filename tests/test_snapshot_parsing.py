"""Venue answers become exact, typed snapshot fields (seed examples from the venues' docs)."""

from __future__ import annotations

import copy
import gc
import json
import re
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.errors import SnapshotParseError
from monitor.snapshot import (
    FieldSchema,
    FieldType,
    flatten,
    in_money_range,
    snake_case,
    to_decimal,
)
from monitor.venues.clearstreet import SCHEMA as _CS_SCHEMA
from monitor.venues.clearstreet import ClearStreetAdapter
from monitor.venues.polymarket import PolymarketAdapter

DATA = Path(__file__).parent / "data"


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text(), parse_float=Decimal)


def cs(name: str = "cs_balances_margin.json") -> dict[str, Any]:
    return dict(load(name)["data"])


def test_margin_account_fields_are_exact_decimals_by_path() -> None:
    fields = ClearStreetAdapter.parse_balances(cs(), "19816")
    assert fields["buying_power"] == Decimal("90000.00")
    assert str(fields["settled_cash"]) == "99775.05"
    assert fields["margin_details.maintenance_margin_excess"] == Decimal("75000.00")
    assert fields["margin_details.usage.used"] == Decimal("5000.00")
    assert fields["sod.equity"] == Decimal("100000.00")
    assert fields["sod.asof"] == "2023-09-27"
    assert fields["margin_type"] == "REG_T"
    assert fields["margin_details.top_contributors.0.market_value"] == Decimal("50000.00")
    assert fields["margin_details.top_contributors"][0]["market_value"] == Decimal("50000.00")
    assert all(not isinstance(v, float) for v in fields.values())


def test_normalized_set_for_clear_street() -> None:
    fields = ClearStreetAdapter.parse_balances(cs(), "19816")
    assert fields["margin_excess"] == Decimal("75000.00")
    assert fields["margin_requirement"] == Decimal("25000.00")
    assert fields["pattern_day_trader"] is False
    assert fields["day_trade_count"] == 2
    assert fields["daily_pnl"] == Decimal("1250.00")  # from the deprecated daily_total_pnl


def test_new_daily_pnl_wins_over_deprecated_total() -> None:
    data = cs()
    data["daily_pnl"] = "-300.00"
    assert ClearStreetAdapter.parse_balances(data, "19816")["daily_pnl"] == Decimal("-300.00")


def test_cash_account_has_no_margin_fields_and_zero_short_value() -> None:
    fields = ClearStreetAdapter.parse_balances(cs("cs_balances_cash.json"), "19816")
    assert fields["short_market_value"] == Decimal(0)
    assert fields["sod.short_market_value"] == Decimal(0)
    for absent in ("margin_excess", "margin_details.maintenance_margin_excess", "margin_details"):
        assert absent not in fields


def test_null_margin_details_is_a_cash_account() -> None:
    data = cs()
    data["margin_details"] = None
    fields = ClearStreetAdapter.parse_balances(data, "19816")
    assert "margin_excess" not in fields
    assert "margin_details" not in fields


def test_deprecated_pdt_fields_missing_are_absent_never_false_or_zero() -> None:
    data = cs()
    md = copy.deepcopy(data["margin_details"])
    for name in ("day_trade_count", "pattern_day_trader", "day_trade_buying_power_usage"):
        del md[name]
    data["margin_details"] = md
    del data["daily_total_pnl"]
    del data["sod"]["day_trade_buying_power"]
    fields = ClearStreetAdapter.parse_balances(data, "19816")
    for absent in (
        "pattern_day_trader",
        "day_trade_count",
        "daily_pnl",
        "margin_details.pattern_day_trader",
        "margin_details.day_trade_count",
        "sod.day_trade_buying_power",
    ):
        assert absent not in fields


def test_optional_nulls_are_absent_and_unknown_fields_are_kept() -> None:
    data = cs()
    data["open_order_adjustment"] = None
    data["brand_new_field"] = "12.50"
    data["brandNewFlag"] = True
    data["margin_details"]["intraday_details"] = {"buying_power": "4000.00", "multiplier": "4"}
    fields = ClearStreetAdapter.parse_balances(data, "19816")
    assert "open_order_adjustment" not in fields
    assert fields["brand_new_field"] == Decimal("12.50")
    assert fields["brand_new_flag"] is True
    assert fields["margin_details.intraday_details.buying_power"] == Decimal("4000.00")


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("buying_power",), {"a": 1}, "field buying_power: expected a decimal"),
        (("buying_power",), True, "field buying_power: expected a decimal"),
        (("equity",), "lots", "field equity: expected a decimal number"),
        (("margin_details", "pattern_day_trader"), "no", "expected true or false"),
        (("margin_details", "day_trade_count"), "2.5", "expected an integer"),
        (("currency",), 840, "field currency: expected a string"),
        (("margin_details",), "none", "field margin_details: expected an object"),
        (("margin_details", "top_contributors"), {}, "top_contributors: expected a list"),
    ],
)
def test_wrong_types_are_named_errors(path: tuple[str, ...], value: Any, expected: str) -> None:
    data = cs()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(SnapshotParseError, match=expected):
        ClearStreetAdapter.parse_balances(data, "19816")


def test_answer_for_another_account_is_refused() -> None:
    with pytest.raises(SnapshotParseError, match="answer is for account 19816"):
        ClearStreetAdapter.parse_balances(cs(), "12345")


def test_missing_buying_power_is_refused() -> None:
    data = cs()
    del data["buying_power"]
    with pytest.raises(SnapshotParseError, match="lacks buying_power"):
        ClearStreetAdapter.parse_balances(data, "19816")


def test_polymarket_fields_snake_case_with_symbols_kept_verbatim() -> None:
    fields = PolymarketAdapter.parse_balance(load("pmx_balance.json"))
    assert fields["buying_power"] == Decimal("640.00")
    assert fields["excess_capital"] == Decimal("750.00")
    assert fields["margin_excess"] == Decimal("750.00")
    assert fields["margin_requirement"] == Decimal("0.00")
    assert fields["securities.PRES-2028-DEM.market_value"] == Decimal("52.00")
    assert fields["securities.PRES-2028-DEM.haircut"] == 5
    assert fields["securities"]["PRES-2028-DEM"]["notional_value"] == Decimal("100.00")
    assert fields["update_time"] == "2026-11-21T10:00:00Z"
    for absent in ("pattern_day_trader", "day_trade_count", "equity"):
        assert absent not in fields


def test_polymarket_haircut_must_be_an_integer_string() -> None:
    data = load("pmx_balance.json")
    data["securities"]["PRES-2028-DEM"]["haircut"] = "0.5"
    with pytest.raises(SnapshotParseError, match=r"securities\.PRES-2028-DEM\.haircut"):
        PolymarketAdapter.parse_balance(data)


@pytest.mark.parametrize(
    ("name", "snake"),
    [
        ("buyingPower", "buying_power"),
        ("excessCapital", "excess_capital"),
        ("buying_power", "buying_power"),
        ("totalSecurityNotionalValue", "total_security_notional_value"),
        ("updateTime", "update_time"),
        ("HTTPCode", "http_code"),
    ],
)
def test_snake_case(name: str, snake: str) -> None:
    assert snake_case(name) == snake


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.10", Decimal("1.10")),
        ("-0.5", Decimal("-0.5")),
        (3, Decimal(3)),
        ("1e3", Decimal("1e3")),
        ("abc", None),
        ("NaN", None),
        ("Infinity", None),
        (True, None),
        ("", None),
        (" 2.50 ", Decimal("2.50")),
        (".5", Decimal("0.5")),
        ("7.", Decimal(7)),
        ("+1E-2", Decimal("0.01")),
        ("1_000", None),
        ("-inf", None),
        ("sNaN", None),
        (".", None),
        ("1 000", None),
        ("0x10", None),
        ("1e99999999999999999999", None),
        (Decimal("NaN"), None),
        (1.5, None),
        (None, None),
    ],
)
def test_to_decimal(value: Any, expected: Decimal | None) -> None:
    result = to_decimal(value)
    assert result == expected
    assert result is None or result.as_tuple() == expected.as_tuple()  # exactly: 2.50


# to_decimal's definition of a numeric string: a plain decimal number within blanks.
_PLAIN_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.text(alphabet="0123456789+-.eE_ naNiIfFsxX\t\u0663\u00a0", max_size=12),
        st.decimals(allow_nan=True, allow_infinity=True).map(str),
        st.text(max_size=8),
    )
)
def test_to_decimal_takes_exactly_the_plain_decimal_syntax(text: str) -> None:
    expected = Decimal(text.strip()) if _PLAIN_DECIMAL.fullmatch(text.strip()) else None
    result = to_decimal(text)
    assert result == expected
    assert result is None or expected is None or result.as_tuple() == expected.as_tuple()
    # flatten's own copy of the check, inlined in its field loop for speed, takes the same
    # within the range of money
    try:
        parsed = flatten({"x": text}, _ONE_DECIMAL)["x"]
    except SnapshotParseError:
        parsed = None
    if expected is not None and not in_money_range(expected):
        expected = None
    assert parsed == expected
    assert parsed is None or expected is None or parsed.as_tuple() == expected.as_tuple()


_ONE_DECIMAL = FieldSchema({"x": FieldType.DECIMAL})


def test_flatten_skips_null_items_and_keeps_lists_whole() -> None:
    schema = FieldSchema({"xs.*.v": FieldType.DECIMAL})
    fields = flatten({"xs": [{"v": "1"}, None, {"v": "2"}]}, schema)
    assert fields["xs"] == [{"v": Decimal(1)}, {"v": Decimal(2)}]


@pytest.mark.parametrize(
    "value",
    [
        "-1E+999999999",
        "1E+31",
        "1E-31",
        "0E-100",
        "1" + "0" * 40,
        "0." + "1" * 41,
        Decimal("-1E+999999999"),
        Decimal("NaN"),
        Decimal("-Infinity"),
        10**41,
    ],
)
def test_numbers_beyond_the_range_of_money_are_a_parse_error_naming_the_field(
    value: object,
) -> None:
    with pytest.raises(SnapshotParseError, match=r"field daily_pnl: .* outside the range of money"):
        flatten({"daily_pnl": value}, _CS_SCHEMA)
    with pytest.raises(SnapshotParseError, match=r"field sod\.equity: .* outside the range"):
        flatten({"sod": {"equity": value}}, _CS_SCHEMA)
    # an unknown field's out-of-range number is kept as its text: nothing reads it as money
    assert flatten({"reference": value}, _CS_SCHEMA)["reference"] == str(value)


@pytest.mark.parametrize(
    "text",
    ["1E+30", "-9.99E+30", "1E-30", "0.00", "1" * 31 + "." + "1" * 9, "0." + "0" * 29 + "1", "-0"],
)
def test_numbers_at_the_edge_of_the_range_of_money_are_kept(text: str) -> None:
    assert flatten({"daily_pnl": text}, _CS_SCHEMA)["daily_pnl"] == Decimal(text)
    assert flatten({"daily_pnl": Decimal(text)}, _CS_SCHEMA)["daily_pnl"] == Decimal(text)
    assert flatten({"reference": text}, _CS_SCHEMA)["reference"] == Decimal(text)


def test_a_text_new_in_every_answer_is_not_kept_once_its_snapshot_is_gone() -> None:
    """Polymarket's `updateTime` is new in every answer; 1,000 accounts every 2 s made
    RSS grow for 20 minutes while the shared-text table filled with them."""
    body = json.loads((DATA / "pmx_balance.json").read_text())

    def parse(stamp: int) -> None:
        body["updateTime"] = f"2026-12-05T03:{stamp:011d}Z"
        assert (
            PolymarketAdapter.parse_balance(body)["alternate_capital_requirement_currency"] == "USD"
        )

    for stamp in range(2_000):  # the tables settle
        parse(stamp)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for stamp in range(2_000, 22_000):
            parse(stamp)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 200_000, f"{kept:,} bytes kept after 20,000 answers"
    text = (DATA / "pmx_balance.json").read_text()  # each answer its own "USD" object
    fields = [PolymarketAdapter.parse_balance(json.loads(text)) for _ in range(3)]
    shared = [f["alternate_capital_requirement_currency"] for f in fields]
    assert shared[0] is shared[1] is shared[2]  # still one object for all


def test_paths_under_markets_that_come_and_go_are_not_kept_once_their_snapshots_are_gone() -> None:
    """Polymarket's `securities` are keyed by market symbol, and markets come and go:
    their paths (`securities.<symbol>.market_value` ...) must not pile up."""
    body = json.loads((DATA / "pmx_balance.json").read_text())
    position = body["securities"].pop("PRES-2028-DEM")

    def parse(market: int) -> None:
        body["securities"] = {f"MARKET-{market}": position}
        assert f"securities.MARKET-{market}.market_value" in PolymarketAdapter.parse_balance(body)

    for market in range(2_000):  # the tables settle
        parse(market)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for market in range(2_000, 32_000):
            parse(market)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 26 MB before; 2-4 MB now (the cache at its bound, and the interpreter's table of
    # interned strings, whose size depends on what ran before in the process)
    assert kept < 8_000_000, f"{kept:,} bytes kept after 30,000 markets"


def test_decimal_paths_are_the_known_numbers_outside_maps_and_lists() -> None:
    """The paths at which `flatten` stores only Decimals, which the rules' fast path then
    does not check: under a map or a list the path holds a data key or an index, and
    is not the pattern whose type was checked."""
    schema = FieldSchema(
        {
            "n": FieldType.DECIMAL,
            "count": FieldType.INTEGER,
            "name": FieldType.STRING,
            "flag": FieldType.BOOLEAN,
            "o": FieldType.OBJECT,
            "o.n": FieldType.DECIMAL,
            "xs": FieldType.LIST,
            "xs.*.v": FieldType.DECIMAL,
            "xs.v": FieldType.DECIMAL,  # a list's "v" item would not be at this path
            "m.*.v": FieldType.DECIMAL,
            "m.v": FieldType.DECIMAL,  # nor a map's key "v"
            "o.0": FieldType.DECIMAL,
        },
        maps=frozenset({"m"}),
    )
    assert schema.decimal_paths == {"n", "count", "o.n"}
    assert "margin_excess" in _CS_SCHEMA.decimal_paths  # the normalized fields too
    assert "margin_details.usage.used" in _CS_SCHEMA.decimal_paths


_JSON_SCALARS = st.one_of(
    st.sampled_from(["12.5", "-3", "7", "", "abc", "1_000", "NaN", "1e999", "0x10"]),
    st.integers(-5, 5),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
_JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=2),
        st.dictionaries(st.sampled_from(["v", "used", "equity", "0"]), inner, max_size=2),
    ),
    max_leaves=4,
)
# keys that collide with typed paths in every way the wire allows: camelCase, dotted,
# the normalized names themselves, nested spellings
_CS_KEYS = [
    ("buyingPower",),
    ("marginExcess",),
    ("margin_excess",),
    ("marginRequirement",),
    ("dayTradeCount",),
    ("day_trade_count",),
    ("dailyPnl",),
    ("daily_total_pnl",),
    ("margin_details.usage.used",),
    ("sod.equity",),
    ("sod", "equity"),
    ("margin_details",),
    ("margin_details", "maintenanceMarginExcess"),
    ("margin_details", "usage", "total"),
    ("margin_details", "dayTradeCount"),
    ("margin_details", "top_contributors"),
]
_PM_KEYS = [
    ("buyingPower",),
    ("excessCapital",),
    ("marginExcess",),
    ("margin_requirement",),
    ("securities",),
    ("securities", "buying_power"),
    ("securities.x",),
]


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


def _keeps_its_guarantee(parse: Any, data: dict[str, Any], schema: FieldSchema) -> None:
    try:
        fields = parse(data)
    except SnapshotParseError:
        return
    for path in schema.decimal_paths:
        if path in fields:
            assert type(fields[path]) is Decimal, (path, fields[path])
            assert fields[path].is_finite(), (path, fields[path])


@settings(max_examples=400, deadline=None)
@given(
    answer=st.sampled_from(["cs_balances_margin.json", "cs_balances_cash.json"]),
    changes=st.lists(st.tuples(st.sampled_from(_CS_KEYS), _JSON_VALUES), max_size=4),
)
def test_a_clear_street_snapshot_holds_decimals_wherever_its_parser_vouches(
    answer: str, changes: list[tuple[tuple[str, ...], Any]]
) -> None:
    """Whatever Clear Street sends, a parsed answer holds a finite Decimal at every path
    of `decimal_paths`, which its snapshots carry and the rules then do not check."""
    data = cs(answer)
    for path, value in changes:
        _set(data, path, value)
    _keeps_its_guarantee(lambda d: ClearStreetAdapter.parse_balances(d, "19816"), data, _CS_SCHEMA)


@settings(max_examples=200, deadline=None)
@given(changes=st.lists(st.tuples(st.sampled_from(_PM_KEYS), _JSON_VALUES), max_size=4))
def test_a_polymarket_snapshot_holds_decimals_wherever_its_parser_vouches(
    changes: list[tuple[tuple[str, ...], Any]],
) -> None:
    from monitor.venues.polymarket import SCHEMA

    data = load("pmx_balance.json")
    for path, value in changes:
        _set(data, path, value)
    _keeps_its_guarantee(PolymarketAdapter.parse_balance, data, SCHEMA)


@pytest.mark.parametrize("kind", ["clearstreet", "polymarket"])
def test_a_normalized_field_the_parser_vouches_for_is_copied_from_one_it_vouches_for(
    kind: str,
) -> None:
    """The adapters copy normalized fields after `flatten` (margin_excess from
    margin_details.maintenance_margin_excess): a copy into a vouched path from a field
    of another type would break the guarantee the rules take on trust."""
    from monitor.venues import registry

    venue = registry.get(kind)
    vouched = venue.schema.decimal_paths
    for item in venue.normalized:
        if item.name in vouched:
            assert item.source in vouched, item
            assert item.fallback is None or item.fallback in vouched, item
