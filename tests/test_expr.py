"""The rule expression language: what it computes, and what it refuses at load time."""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest

from monitor.engine.expr import (
    CONTEXT,
    MISSING,
    CompiledExpr,
    EvalError,
    compile_expression,
    compile_rules,
)
from monitor.snapshot import Snapshot
from monitor.yamlsource import Location, SourceError

D = Decimal

FIELDS: dict[str, Any] = {
    "buying_power": D("30000.50"),
    "equity": D("100000"),
    "daily_pnl": D("-1200.25"),
    "day_trade_count": D("3"),
    "zero": D("0"),
    "flag": True,
    "off": False,
    "name": "alpha",
    "huge": D("9E+999990"),
    "big": D("1E+40"),
    "long": D("12345678901234567890123456789012345.5"),  # 36 digits, as a venue sent it
    "margin_details.maintenance_margin_excess": D("-5.5"),
    "margin_details.usage.used": D("45"),
    "margin_details.usage.total": D("60"),
    "margin_details.pattern_day_trader": False,
    "sod.equity": D("110000"),
    "securities": {
        "AAPL": {"market_value": D("1000.5"), "qty": D("10")},
        "MSFT": {"market_value": D("2000"), "qty": D("-3")},
        "CASH": {"qty": D("1")},
    },
    "securities.AAPL.market_value": D("1000.5"),
    "securities.MSFT.market_value": D("2000"),
    "positions": [
        {"symbol": "AAPL", "pnl": D("5")},
        {"symbol": "MSFT", "pnl": D("-7"), "risk": {"delta": D("0.5")}},
        {"symbol": "GOOG"},
        "not a map",
    ],
    "names": ["a", "b"],
    "bad_items": {"x": {"market_value": "n/a"}},
    "venue": "from the venue, must not shadow",
    "params.floor": D("1"),  # venue data must not shadow rule params
}
PARAMS: dict[str, Any] = {
    "floor": D("25000"),
    "max_util": D("0.7"),
    "int_floor": 25000,  # YAML ints and floats work too (slow path)
    "float_util": 0.75,
    "allowed": ["cs", "ib"],
    "nested": {"limit": D("7")},
    "text": "alpha",
}


def snapshot(fields: Mapping[str, Any] | None = None, **identity: Any) -> Snapshot:
    values: dict[str, Any] = {
        "venue": "cs",
        "venue_kind": "clearstreet",
        "account": "19816",
        "currency": "USD",
        "labels": {"team": "risk"},
    }
    values.update(identity)
    return Snapshot(fields=FIELDS if fields is None else fields, taken_at=0.0, **values)


def both_ways(expr: CompiledExpr, snap: Snapshot, params: Mapping[str, Any]) -> Any:
    """Evaluate alone and inside a rule set (prepared params); both must agree."""
    alone = expr.evaluate(snap, params)
    other = compile_expression("buying_power > 0")
    rules = compile_rules([other, expr, other])
    in_set = rules.run(snap, rules.prepare([{}, params, {}]))[1]
    convenient = rules(snap, [{}, params, {}])[1]
    if isinstance(alone, EvalError):
        assert isinstance(in_set, EvalError)
        assert isinstance(convenient, EvalError)
    else:
        assert type(in_set) is type(alone)
        assert in_set == alone or (in_set is MISSING and alone is MISSING)
        assert type(convenient) is type(alone)
    return alone


def ev(text: str, fields: Mapping[str, Any] | None = None, **identity: Any) -> Any:
    return both_ways(compile_expression(text), snapshot(fields, **identity), PARAMS)


def same(result: Any, expected: Any) -> bool:
    if expected is MISSING:
        return result is MISSING
    return type(result) is type(expected) and result == expected


VALUES = [
    # literals: numbers are exact decimals
    ("1", D(1)),
    ("0.1", D("0.1")),
    ("0.1 + 0.2", D("0.3")),
    ("0.1 + 0.2 == 0.3", True),
    ("1_000", D(1000)),
    ("0x10", D(16)),
    ("1e3", D("1e3")),
    ("-5", D(-5)),
    ("'text'", "text"),
    ('"double"', "double"),
    ("True", True),
    ("False", False),
    ("None", None),
    # arithmetic
    ("7 - 10", D(-3)),
    ("2 * 3.5", D("7.0")),
    ("1 / 4", D("0.25")),
    ("1 / 3", D("0.3333333333333333333333333333333333")),  # 34 digits
    ("7 % 3", D(1)),
    ("-7 % 3", D(-1)),  # Decimal remainder: the sign of the dividend
    ("(1 + 2) * 3", D(9)),
    ("1 + 2 * 3", D(7)),
    ("-buying_power", D("-30000.50")),
    ("+buying_power", D("30000.50")),
    ("-(1 + 2)", D(-3)),
    ("margin_details.usage.used / margin_details.usage.total", D("0.75")),
    ("sod.equity - equity", D(10000)),
    # comparisons
    ("1 < 2", True),
    ("2 <= 2", True),
    ("3 > 4", False),
    ("3 >= 3", True),
    ("1 == 1.0", True),
    ("1 != 2", True),
    ("'a' < 'b'", True),
    ("name == 'alpha'", True),
    ("name != 'alpha'", False),
    ("1 < 2 < 3", True),
    ("1 < 3 < 2", False),
    ("3 > 2 > 1 > 0", True),
    ("0 < buying_power <= 30000.50", True),
    ("flag == True", True),
    ("None == None", True),
    ("name == None", False),
    ("buying_power != None", True),
    ("buying_power < params.floor", False),
    ("margin_details.maintenance_margin_excess < 0", True),
    ("margin_details.usage.used / margin_details.usage.total > params.max_util", True),
    ("buying_power > params.int_floor", True),
    ("margin_details.usage.used / margin_details.usage.total >= params.float_util", True),
    ("buying_power > params.floor * 1.2", True),
    ("buying_power > params.floor * 1.25", False),
    ("buying_power >= -params.floor", True),
    # in / not in
    ("'cs' in ('cs', 'ib')", True),
    ("venue in ['cs']", True),
    ("venue in {'ib', 'x'}", False),
    ("venue not in ('ib',)", True),
    ("5 in (1, 5)", True),
    ("5.0 in (1, 5)", True),
    ("5 in ('5',)", False),  # other kinds never match
    ("flag in (1, 'x')", False),
    ("name in (buying_power, 'alpha')", True),
    ("'AAPL' in securities", True),
    ("'GOOG' in securities", False),
    ("'GOOG' not in securities", True),
    ("'lph' in name", True),
    ("'a' in names", True),
    ("venue in params.allowed", True),
    ("venue_kind in params.allowed", False),
    # logic
    ("True and False", False),
    ("True and True", True),
    ("False or True", True),
    ("False or False", False),
    ("not True", False),
    ("not off", True),
    ("buying_power > 0 and equity > 0 and flag", True),
    ("buying_power < 0 or equity < 0 or off", False),
    ("not (1 > 2)", True),
    # fields and identity
    ("buying_power", D("30000.50")),
    ("margin_details.maintenance_margin_excess", D("-5.5")),
    ("securities.AAPL.market_value", D("1000.5")),
    ("venue", "cs"),  # the snapshot's identity, not venue data of that name
    ("venue_kind", "clearstreet"),
    ("account", "19816"),
    ("currency", "USD"),
    ("labels.team", "risk"),
    ("params.floor", D(25000)),
    ("params.int_floor", D(25000)),
    ("params.float_util", D("0.75")),
    ("params.nested.limit", D(7)),
    ("params.text", "alpha"),
    ("present(margin_details.pattern_day_trader) and margin_details.pattern_day_trader", False),
    # functions
    ("abs(-3)", D(3)),
    ("abs(daily_pnl)", D("1200.25")),
    ("min(3, 1, 2)", D(1)),
    ("max(1, 5)", D(5)),
    ("min(buying_power, equity)", D("30000.50")),
    ("max(buying_power, equity)", D(100000)),
    ("max(buying_power, equity - 1, 7)", D(99999)),
    ("round(2.5)", D(2)),  # half-even, like Python's round
    ("round(3.5)", D(4)),
    ("round(1.2345, 2)", D("1.23")),
    ("round(1.2355, 3)", D("1.236")),
    ("round(1.5, 100)", D("1.5")),  # already has fewer decimals
    ("round(1234, -2) == 1200", True),
    ("round(big)", D("1E+40")),
    ("len('abc')", D(3)),
    ("len(securities)", D(3)),
    ("len(positions)", D(4)),
    ("present(buying_power)", True),
    ("present(nope)", False),
    ("present(labels.team)", True),
    ("present(labels.nope)", False),
    ("present(params.floor)", True),
    ("present(params.nope)", False),
    ("coalesce(nope, 5)", D(5)),
    ("coalesce(daily_pnl, 0)", D("-1200.25")),
    ("coalesce(nope, other, 'x')", "x"),
    ("coalesce(daily_pnl, 0) < -params.floor", False),
    ("sum_of(securities, 'market_value')", D("3000.5")),  # CASH lacks it: skipped
    ("max_of(securities, 'market_value')", D(2000)),
    ("min_of(securities, 'qty')", D(-3)),
    ("sum_of(positions, 'pnl')", D(-2)),  # GOOG and the string are skipped
    ("sum_of(positions, 'risk.delta')", D("0.5")),
    ("sum_of(securities, 'nope')", D(0)),
    ("max_of(securities, 'nope')", MISSING),
    # conditional expressions
    ("1 if True else 2", D(1)),
    ("1 if False else 2", D(2)),
    ("'big' if buying_power > 1000 else 'small'", "big"),
    ("1 if flag else 1 / 0", D(1)),  # the branch not taken is not evaluated
]


@pytest.mark.parametrize(("text", "expected"), VALUES)
def test_values(text: str, expected: Any) -> None:
    result = ev(text)
    assert same(result, expected), f"{text!r} gave {result!r}, expected {expected!r}"


def test_decimals_are_exact_and_keep_their_scale() -> None:
    assert str(ev("0.1 + 0.2")) == "0.3"
    assert str(ev("1.10 + 2.20")) == "3.30"
    assert ev("0.1 * 3 == 0.3") is True
    assert ev("123456789012345678901234567890.1 + 0.1") == D("123456789012345678901234567890.2")


MISSING_CASES = [
    ("nope", MISSING),
    ("nope + 1", MISSING),
    ("1 - nope", MISSING),
    ("-nope", MISSING),
    ("nope < 1", MISSING),
    ("nope == 1", MISSING),
    ("nope == None", MISSING),
    ("nope != 'x'", MISSING),
    ("not nope", MISSING),
    ("abs(nope)", MISSING),
    ("min(nope, 1)", MISSING),
    ("max(1, 2, nope)", MISSING),
    ("round(nope)", MISSING),
    ("round(1.5, nope)", MISSING),
    ("len(nope)", MISSING),
    ("sum_of(nope, 'x')", MISSING),
    ("nope in (1, 2)", MISSING),
    ("1 in (nope, 2)", MISSING),
    ("2 in (nope, 2)", True),
    ("'x' in nope", MISSING),
    ("nope in securities", MISSING),
    ("1 < nope < 3", MISSING),
    ("5 < 3 < nope", False),  # stops at the first false link, like Python
    ("nope < 3 < 2", False),  # MISSING and False is False
    ("nope if True else 1", MISSING),
    ("1 if nope else 2", MISSING),
    ("labels.nope", MISSING),
    ("params.nope", MISSING),
    ("params.nested.nope", MISSING),
    ("coalesce(nope, other)", MISSING),
    ("present(nope)", False),
    ("coalesce(nope, 1) + 1", D(2)),
    # three-valued logic
    ("False and nope", False),
    ("nope and False", False),
    ("True and nope", MISSING),
    ("nope and True", MISSING),
    ("True or nope", True),
    ("nope or True", True),
    ("False or nope", MISSING),
    ("nope or False", MISSING),
    ("nope and nope > 1", MISSING),
    ("(nope > 1) and buying_power < 0", False),
    ("(nope > 1) or buying_power > 0", True),
    ("not (nope > 1) or True", True),
]


@pytest.mark.parametrize(("text", "expected"), MISSING_CASES)
def test_missing_propagates_with_three_valued_logic(text: str, expected: Any) -> None:
    result = ev(text)
    assert same(result, expected), f"{text!r} gave {result!r}, expected {expected!r}"


def test_missing_is_a_falsy_singleton() -> None:
    assert not MISSING
    assert repr(MISSING) == "MISSING"
    assert type(MISSING)() is MISSING


def test_currency_falls_back_to_a_venue_field_only_when_the_snapshot_has_none() -> None:
    assert ev("currency", {"currency": "EUR"}) == "USD"
    assert ev("currency", {"currency": "EUR"}, currency=None) == "EUR"
    assert ev("currency", {}, currency=None) is MISSING
    assert ev("present(currency)", {}, currency=None) is False


ERRORS = [
    ("1 / 0", "division by zero"),
    ("buying_power / zero", "division by zero"),
    ("0 / 0", "division by zero"),
    ("1 % 0", "division by zero"),
    ("big % 3", "34 digits"),
    ("huge * huge", "overflow"),
    ("'a' < 1", "cannot compare string < number"),
    ("name > buying_power", "cannot compare string > number"),
    ("'a' == 1", "cannot compare string with number"),
    ("currency != 5", "cannot compare string with number"),
    ("True + 1", "arithmetic needs numbers"),
    ("flag + 1", "arithmetic needs numbers"),
    ("flag * buying_power", "arithmetic needs numbers"),
    ("-flag", "arithmetic needs numbers"),
    ("'a' + 'b'", "arithmetic needs numbers"),
    ("'%s' % 1", "arithmetic needs numbers"),
    ("name * 3", "arithmetic needs numbers"),
    ("True < 2", "cannot compare"),
    ("True == 1", "cannot compare true/false with number"),
    ("flag == 1", "cannot compare true/false with number"),
    ("not 5", "`not` needs true or false"),
    ("5 and True", "`and` needs true or false"),
    ("True and 'x'", "`and` needs true or false"),
    ("False or 0", "`or` needs true or false"),
    ("buying_power or True", "`or` needs true or false"),
    ("1 if 5 else 2", "needs true or false"),
    ("abs('a')", "abs() needs a number"),
    ("min('a', 1)", "min() needs numbers"),
    ("max(flag, 1)", "max() needs numbers"),
    ("round('a')", "round() needs a number"),
    ("round(1.5, 0.5)", "whole number"),
    ("round(1.5, 5000)", "|n| <= 1000"),
    ("round(long)", "34 digits"),
    ("len(5)", "len() needs a string, list or map"),
    ("sum_of(buying_power, 'x')", "sum_of() needs a map or a list"),
    ("sum_of(bad_items, 'market_value')", "not a number"),
    ("'a' in 5", "needs a string, list or map on the right"),
    ("5 in 'abc'", "needs a string on the left"),
    ("securities in securities", "needs a single value"),
    ("securities", "a whole map"),
    ("positions", "a whole list"),
    ("params.allowed", "a whole list"),
    ("coalesce(nope, securities)", "a whole map"),
    ("1 < 2 < 'x'", "cannot compare"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_evaluation_errors_are_values(text: str, message: str) -> None:
    result = ev(text)
    assert isinstance(result, EvalError), f"{text!r} gave {result!r}"
    assert message in result.message
    assert not result


def test_an_error_is_reached_only_when_evaluated() -> None:
    assert ev("False and 1 / 0 > 1") is False
    assert ev("True or 1 / 0 > 1") is True
    assert isinstance(ev("1 / 0 > 1 and False"), EvalError)
    assert isinstance(ev("nope and 1 / 0 > 1"), EvalError)
    assert ev("coalesce(1, 1 / 0)") == 1
    assert isinstance(ev("coalesce(nope, 1 / 0)"), EvalError)


def test_params_only_arithmetic_fails_only_where_it_is_used() -> None:
    rules = compile_rules(
        [
            compile_expression("buying_power > params.floor / 0"),
            compile_expression("buying_power < 0 and params.floor / 0 > 1"),
            compile_expression("nope > params.floor / 0"),
            compile_expression("params.floor / 0"),
            compile_expression("buying_power > 0"),
        ]
    )
    prepared = rules.prepare([PARAMS] * 5)
    results = rules.run(snapshot(), prepared)
    assert isinstance(results[0], EvalError)
    assert results[0].message == "division by zero"
    assert results[1] is False
    assert isinstance(results[2], EvalError)
    assert isinstance(results[3], EvalError)
    assert results[4] is True


def test_rule_sets_keep_going_past_a_failing_rule() -> None:
    texts = ["buying_power / zero > 1", "buying_power > params.floor", "nope > 1", "'a' < 1"]
    rules = compile_rules([compile_expression(t) for t in texts])
    assert len(rules) == 4
    results = rules(snapshot(), [PARAMS] * 4)
    assert isinstance(results[0], EvalError)
    assert results[1] is True
    assert results[2] is MISSING
    assert isinstance(results[3], EvalError)


def test_prepare_needs_one_params_mapping_per_expression() -> None:
    rules = compile_rules([compile_expression("params.a > 1")])
    with pytest.raises(ValueError, match="1 expressions but 2"):
        rules.prepare([{}, {}])


def test_empty_rule_set() -> None:
    rules = compile_rules([])
    assert rules(snapshot(), []) == []


def test_evaluate_never_raises_on_broken_inputs() -> None:
    expr = compile_expression("buying_power > params.floor and labels.team == 'x'")
    broken: Any = object()
    assert isinstance(expr.evaluate(broken, PARAMS), EvalError)
    assert isinstance(expr.evaluate(snapshot(), broken), EvalError)
    rules = compile_rules([expr])
    assert isinstance(rules.run(broken, rules.prepare([PARAMS]))[0], EvalError)
    assert isinstance(rules.run(snapshot(), broken)[0], EvalError)


def test_evaluation_restores_the_decimal_context() -> None:
    before = decimal.getcontext()
    ev("1 / 3")
    ev("1 / 0")
    assert decimal.getcontext() is before


def test_results_do_not_depend_on_the_callers_decimal_context() -> None:
    third = D("0.3333333333333333333333333333333333")
    with decimal.localcontext(decimal.Context(prec=3, traps=[])):
        assert ev("1 / 3") == third
        assert isinstance(ev("1 / 0"), EvalError)
        assert isinstance(ev("huge * huge"), EvalError)
    with decimal.localcontext():
        decimal.setcontext(CONTEXT)  # an evaluation task may run under CONTEXT: no switching
        assert ev("1 / 3") == third
        assert isinstance(ev("1 / 0"), EvalError)
        assert decimal.getcontext() is CONTEXT


def test_fields_lists_every_path_read() -> None:
    expr = compile_expression(
        "a.b + coalesce(c, params.d) > sum_of(securities, 'mv') and present(e.f)"
        " and labels.team == 'x' and venue == 'y' and 'k' in params.list"
    )
    assert expr.fields == frozenset(
        {"a.b", "c", "params.d", "securities", "e.f", "labels.team", "venue", "params.list"}
    )
    assert compile_expression("1 + 2").fields == frozenset()


def test_static_kind() -> None:
    assert compile_expression("a < 1").kind == "bool"
    assert compile_expression("not a").kind == "bool"
    assert compile_expression("present(a)").kind == "bool"
    assert compile_expression("a + 1").kind == "number"
    assert compile_expression("sum_of(a, 'x')").kind == "number"
    assert compile_expression("'x'").kind == "string"
    assert compile_expression("a").kind == "any"
    assert compile_expression("coalesce(a, 1)").kind == "any"
    assert compile_expression("1 if a else 2").kind == "number"


REFUSED = [
    ("__import__('os')", "double underscores", 1),
    ("().__class__", "double underscores", 1),
    ("().__class__.__bases__[0].__subclasses__()", "", 1),
    ("buying_power.__class__", "double underscores", 1),
    ("__builtins__", "double underscores", 1),
    ("a.__dict__.b", "double underscores", 1),
    ("x.y()", "calling methods", 1),
    ("'a'.upper()", "calling methods", 1),
    ("(1).real", "attribute access is only allowed in field paths", 1),
    ("lambda: 1", "lambda", 1),
    ("[x for x in y]", "comprehensions", 1),
    ("{x for x in y}", "comprehensions", 1),
    ("{x: 1 for x in y}", "comprehensions", 1),
    ("(x for x in y)", "generator", 1),
    ("f'{x}'", "f-strings", 1),
    ("(x := 1)", "assignment expressions", 2),
    ("a[0]", "subscripts", 1),
    ("securities['AAPL']", "use a dotted path", 1),
    ("10 ** 10 ** 10", "unbounded", 1),
    ("2 ** 3", "** is not allowed", 1),
    ("1" * 60, "longer than 50 digits", 1),
    ("1" * 10_000, "longer than 2000 characters", 1),
    ("1e999999", "exponent", 1),
    ("1e1001", "exponent", 1),
    ("1e-1001", "exponent", 1),
    ("(" * 300 + "1" + ")" * 300, "too many nested parentheses", 201),
    ("-" * 60 + "1", "nested too deeply", 51),
    ("abs(" * 60 + "1" + ")" * 60, "nested too deeply", 201),
    ("max(1, 2, key=abs)", "keyword argument", 11),
    ("max(1, **x)", "**kwargs", 8),
    ("max(*x)", "starred", 5),
    ("foo(1)", "unknown function `foo`", 1),
    ("open('x')", "unknown function `open`", 1),
    ("eval('1')", "unknown function `eval`", 1),
    ("exec('1')", "unknown function", 1),
    ("getattr(a, 'b')", "unknown function", 1),
    ("(lambda: 1)()", "only these functions can be called", 1),
    ("b'x'", "bytes", 1),
    ("1j", "complex", 1),
    ("...", "not allowed", 1),
    ("1 | 2", "bitwise", 1),
    ("1 & 2", "bitwise", 1),
    ("1 << 2", "bitwise", 1),
    ("~1", "bitwise", 1),
    ("1 // 2", "//", 1),
    ("a @ b", "@", 1),
    ("a is None", "`is`", 1),
    ("{1: 2}", "map literals", 1),
    ("[1, 2]", "lists are only allowed", 1),
    ("(1, 2)", "tuples are only allowed", 1),
    ("a in [1] in b", "last operand", 6),
    ("sum_of(securities, field)", "must be a string", 20),
    ("sum_of(1, 'x')", "field path of a map or list", 8),
    ("present(1)", "must be a field path", 9),
    ("max(1)", "at least two numbers", 1),
    ("abs(1, 2)", "takes 1 argument, got 2", 1),
    ("round(1, 2, 3)", "takes 1 to 2 arguments", 1),
    ("coalesce()", "at least 1 argument", 1),
    ("abs", "is a function", 1),
    ("'" + "a" * 1001 + "'", "string literal longer than 1000", 1),
    ("", "invalid expression", 1),
    ("a <", "invalid expression", 4),  # at the end, where the operand is missing
    ("a < < b", "invalid expression", 5),
    ("a.0", "invalid expression", 2),
    ("await x", "await", 1),
    ("1; 2", "invalid expression", 2),
    ("import os", "invalid expression", 1),
]


@pytest.mark.parametrize(("text", "message", "col"), REFUSED)
def test_refused_at_load_with_location(text: str, message: str, col: int) -> None:
    where = Location("rules/capital.yaml", 12, 15)
    with pytest.raises(SourceError) as caught:
        compile_expression(text, where=where)
    problem = caught.value.problems[0]
    assert problem.location.file == "rules/capital.yaml"
    assert problem.location.line == 12
    assert problem.location.col == 15 + col - 1, str(problem)
    assert message in problem.message
    assert str(caught.value).startswith(f"rules/capital.yaml:12:{15 + col - 1}: ")


def test_location_of_the_offending_node() -> None:
    where = Location("r.yaml", 3, 11)
    with pytest.raises(SourceError) as caught:
        compile_expression("buying_power < 1 and x.__class__ > 2", where=where)
    assert str(caught.value.problems[0].location) == "r.yaml:3:32"
    with pytest.raises(SourceError) as caught:
        compile_expression("  __x", where=where)  # leading blanks count
    assert str(caught.value.problems[0].location) == "r.yaml:3:13"
    with pytest.raises(SourceError) as caught:
        compile_expression("'é' + __x", where=where)  # columns count characters
    assert str(caught.value.problems[0].location) == "r.yaml:3:17"
    with pytest.raises(SourceError) as caught:
        compile_expression("(a <\n   __x)", where=where)  # later lines: own column
    assert str(caught.value.problems[0].location) == "r.yaml:4:4"
    with pytest.raises(SourceError) as caught:
        compile_expression("__x")
    assert str(caught.value.problems[0].location) == "<expression>:1:1"


@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("buying_power <", "r.yaml:3:25"),  # one past the end: the missing operand
        ("buying_power <  ", "r.yaml:3:27"),  # trailing blanks count
        ("  equity * 2 +", "r.yaml:3:25"),  # leading blanks count
        ("'é' + x and", "r.yaml:3:22"),  # columns count characters
        ("equity * (2 +", "r.yaml:3:20"),  # Python names the unclosed (
        ("equity + \\\n  1 *", "r.yaml:4:6"),  # on a later line: its own column
        ("", "r.yaml:3:11"),
    ],
)
def test_syntax_error_at_the_end_is_located_at_the_end(text: str, place: str) -> None:
    where = Location("r.yaml", 3, 11)
    with pytest.raises(SourceError) as caught:
        compile_expression(text, where=where)
    problem = caught.value.problems[0]
    assert str(problem.location) == place
    assert problem.message.startswith("invalid expression: ")
    with pytest.raises(SourceError) as caught:
        compile_expression(text + "\n", where=where)  # as with a line break after it
    assert str(caught.value.problems[0].location) == place


def test_every_problem_is_reported() -> None:
    with pytest.raises(SourceError) as caught:
        compile_expression("__a + foo(1) + b[0]")
    messages = [p.message for p in caught.value.problems]
    assert len(messages) == 3
    assert [p.location.col for p in caught.value.problems] == [1, 7, 16]


def test_allowed_deep_enough_for_real_rules() -> None:
    text = " and ".join(f"f{i} > {i}" for i in range(30))
    assert compile_expression(text).kind == "bool"
    assert compile_expression("(" * 40 + "1" + ")" * 40).kind == "number"


def test_dotted_paths_are_never_attribute_access() -> None:
    # `real` is an attribute of Decimal; here it is only a (missing) field path
    assert ev("buying_power.real") is MISSING
    assert ev("name.upper") is MISSING


def test_eval_error_is_a_value() -> None:
    error = EvalError("boom")
    assert str(error) == "boom"
    assert error == EvalError("boom")
    assert not error


def _nest(template: str, depth: int, leaf: str = "x") -> str:
    text = leaf
    for _ in range(depth):
        text = template.format(text)
    return text


@pytest.mark.parametrize(
    "template",
    [
        "-({})",
        "abs({})",
        "({} + 1)",
        "(1 if {} > 0 else 2)",
        "({} and y or z)",
        "coalesce(nope, {})",
        "(0 < {} < 2)",
        "not ({})",
        "(({} > 1) if flag else (x < 1))",
    ],
)
def test_the_deepest_expressions_still_compile_and_evaluate(template: str) -> None:
    depth = 1
    while True:  # the deepest nesting of this construct that loads
        try:
            compile_expression(_nest(template, depth + 1))
        except SourceError:
            break
        depth += 1
    with pytest.raises(SourceError, match="nested too deeply"):
        compile_expression(_nest(template, depth + 1))
    text = _nest(template, depth)
    expr = compile_expression(text)
    fields = {"x": D(1), "y": True, "z": False, "flag": True}
    result = both_ways(expr, snapshot(fields), {})
    assert isinstance(result, D | bool | EvalError) or result is MISSING
    rules = compile_rules([expr] * 20)
    assert len(rules(snapshot(fields), [{}] * 20)) == 20
