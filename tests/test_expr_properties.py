"""Random expressions and snapshots: refused at load, or evaluated without ever raising.

The grammar mixes allowed and forbidden constructs, so most generated expressions are
refused; those that load are evaluated alone and in a rule set over random snapshots,
with an audit hook and patched builtins proving nothing outside the allow-list runs.
"""

from __future__ import annotations

import builtins
import dataclasses
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.engine import expr as expr_module
from monitor.engine.expr import MISSING, EvalError, compile_expression, compile_rules
from monitor.snapshot import Snapshot
from monitor.yamlsource import Location, SourceError

SAFE_FIELDS = [
    "a",
    "b",
    "flag",
    "name",
    "m.x",
    "m.y",
    "securities",
    "positions",
    "buying_power",
    "venue",
    "venue_kind",
    "account",
    "currency",
    "labels.team",
    "labels",
    "params.p",
    "params.q",
    "params.n.x",
    "params",
    "nope",
    "_private",
]
DUNDER_FIELDS = ["__class__", "__import__", "a.__globals__", "__builtins__.open", "x.__dict__"]
FIELD_NAMES = SAFE_FIELDS + DUNDER_FIELDS
FUNCTIONS = ["abs", "min", "max", "round", "len", "present", "coalesce"]
FORBIDDEN_FUNCTIONS = ["open", "eval", "exec", "getattr", "__import__", "print", "sum", "type"]
BINARY = ["+", "-", "*", "/", "%"]
FORBIDDEN_BINARY = ["**", "//", "|", "&", "^", "<<", ">>", "@"]
COMPARE = ["<", "<=", ">", ">=", "==", "!=", "in", "not in"]
ALLOWED_ATOMS = [
    "0",
    "1",
    "0.1",
    "-3",
    "1e3",
    "0x1F",
    "1_000",
    "True",
    "False",
    "None",
    "''",
    "'a'",
]
FORBIDDEN_ATOMS = [
    "1e999999",
    "9" * 60,
    "1j",
    "...",
    "b'x'",
    "lambda: 1",
    "f'{a}'",
    "[x for x in a]",
    "(x for x in a)",
    "{k: 1 for k in a}",
    "().__class__",
    "().__class__.__bases__[0].__subclasses__()",
    "__import__('os').system('true')",
    "open('/etc/passwd')",
    "(a := 1)",
    "{1: 2}",
    "[1, 2]",
    "*a",
    "a[0]",
    "a.y()",
    "len",
    "x is None",
    "~a",
]
ATOMS = ALLOWED_ATOMS + FORBIDDEN_ATOMS

numbers = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=4).map(
        lambda d: str(d) if d >= 0 else f"({d})"
    ),
)
safe_leaves = st.one_of(
    st.sampled_from(SAFE_FIELDS),
    st.sampled_from(ALLOWED_ATOMS),
    numbers,
    st.text(max_size=4).map(repr),
)
FORBIDDEN_WRAPPERS = [
    "({})[0]",
    "({}).real",
    "({}).__class__",
    "({}).y()",
    "max({0}, key={0})",
    "max(*{})",
    "max(1, **{})",
    "[{} for x in a]",
    "sum(x for x in {})",
    "(lambda: {})()",
    "f'{{{}}}'",
    "({0} is {0})",
    "~({})",
    "({} ** 3)",
    "({} // 2)",
    "({} | 1)",
    "open({})",
    "eval({})",
    "getattr({}, 'x')",
    "__import__({})",
    "({} + (y := 1))",
]


def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def call(name: str, args: list[str]) -> str:
        return f"{name}({', '.join(args)})"

    return st.one_of(
        st.tuples(children, st.sampled_from(BINARY), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(children, st.sampled_from(COMPARE), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(children, st.sampled_from(["<", "<="]), children, children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]} < {t[3]})"
        ),
        st.tuples(children, st.sampled_from(["and", "or"]), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(st.sampled_from(["not ", "-", "+"]), children).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(st.sampled_from(FUNCTIONS), st.lists(children, min_size=1, max_size=3)).map(
            lambda t: call(*t)
        ),
        st.tuples(
            st.sampled_from(["sum_of", "max_of", "min_of"]),
            st.sampled_from(["securities", "positions", "a", "nope", "params.n"]),
            st.sampled_from(["'market_value'", "'pnl'", "'x'", "'risk.delta'"]),
        ).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        st.tuples(children, children, children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        st.tuples(children, st.lists(children, max_size=3)).map(
            lambda t: f"({t[0]} in ({''.join(x + ', ' for x in t[1])}))"
        ),
    )


allowed_expressions = st.recursive(safe_leaves, extend, max_leaves=10)


@st.composite
def expressions(draw: st.DrawFn) -> str:
    """Allowed expressions; one in three spoiled by a forbidden construct or name."""
    text = draw(allowed_expressions)
    spoil = draw(st.integers(0, 5))
    if spoil == 0:
        text = draw(st.sampled_from(FORBIDDEN_WRAPPERS)).format(text)
    elif spoil == 1:
        bad = draw(st.sampled_from(FORBIDDEN_ATOMS + DUNDER_FIELDS))
        op = draw(st.sampled_from([*BINARY, "and", "or", "<", "in"]))
        text = f"({text}) {op} {bad}" if draw(st.booleans()) else f"{bad} {op} ({text})"
    return text


decimals = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False),
    st.sampled_from([Decimal(0), Decimal("-0"), Decimal("9E+999990"), Decimal("1E-999990")]),
)
scalars = st.one_of(decimals, st.booleans(), st.text(max_size=4), st.integers(), st.none())
elements = st.dictionaries(
    st.sampled_from(["market_value", "pnl", "x", "risk"]),
    st.one_of(scalars, st.fixed_dictionaries({"delta": decimals})),
    max_size=3,
)
collections = st.one_of(
    st.dictionaries(st.sampled_from(["AAPL", "MSFT", "GOOG"]), elements, max_size=3),
    st.lists(st.one_of(elements, scalars), max_size=4),
)
values = st.one_of(decimals, decimals, scalars, collections)
snapshots = st.builds(
    Snapshot,
    venue=st.sampled_from(["cs", "pm"]),
    venue_kind=st.sampled_from(["clearstreet", "polymarket"]),
    account=st.text(max_size=3),
    fields=st.dictionaries(st.sampled_from(FIELD_NAMES), values, max_size=8),
    taken_at=st.just(0.0),
    currency=st.one_of(st.none(), st.sampled_from(["USD", "USDC"])),
    labels=st.dictionaries(st.sampled_from(["team", "tier"]), st.text(max_size=3), max_size=2),
)
params = st.dictionaries(
    st.sampled_from(["p", "q", "n"]),
    st.one_of(values, st.floats(allow_nan=True), st.fixed_dictionaries({"x": decimals})),
    max_size=3,
)

RESULT_TYPES = (Decimal, bool, str, type(None), type(MISSING), EvalError)
FORBIDDEN_EVENTS = ("exec", "compile", "import", "open", "os.", "subprocess.", "socket.")
_events: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _events is not None and event.startswith(FORBIDDEN_EVENTS):
        _events.append(event)


sys.addaudithook(_audit)


class Escaped(BaseException):
    """Raised by a patched builtin; a BaseException so evaluate cannot swallow it."""


@contextmanager
def sandbox_watch() -> Iterator[list[str]]:
    """Record forbidden audit events and calls of dangerous builtins while active."""
    global _events
    calls: list[str] = []
    names = ("__import__", "open", "eval", "exec", "compile", "getattr", "setattr", "input")
    namespace = vars(builtins)  # patched through the dict: setattr itself is trapped
    saved = {name: namespace[name] for name in names}

    def trap(name: str) -> Any:
        def trapped(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise Escaped(name)

        return trapped

    _events = calls
    for name in names:
        namespace[name] = trap(name)
    try:
        yield calls
    finally:
        namespace.update(saved)
        _events = None


def check_result(result: Any) -> None:
    assert isinstance(result, RESULT_TYPES), repr(result)


@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(text=expressions(), snapshot=snapshots, rule_params=params)
def test_refused_or_evaluates_without_raising(
    text: str, snapshot: Snapshot, rule_params: dict[str, Any]
) -> None:
    try:
        expr = compile_expression(text, where=Location("rules.yaml", 5, 9))
    except SourceError as exc:
        problems = exc.problems
    else:
        problems = []
    if problems:
        for problem in problems:
            assert problem.location.file == "rules.yaml"
            assert problem.location.line >= 5
            assert problem.location.col >= 1
            assert problem.message
        return
    segments = [segment for path in expr.fields for segment in path.split(".")]
    assert not any(seg.startswith("__") or seg.endswith("__") for seg in segments)
    rules = compile_rules([expr, expr])
    prepared = rules.prepare([rule_params, {}])
    with sandbox_watch() as calls:
        alone = expr.evaluate(snapshot, rule_params)
        in_set = rules.run(snapshot, prepared)
    assert calls == []
    check_result(alone)
    for result in in_set:
        check_result(result)
    if isinstance(alone, EvalError):
        assert isinstance(in_set[0], EvalError)
    else:
        assert type(in_set[0]) is type(alone)
        assert in_set[0] == alone or alone is MISSING


def test_the_forbidden_atoms_never_load() -> None:
    for text in ALLOWED_ATOMS:
        compile_expression(text)
    for text in FORBIDDEN_ATOMS + DUNDER_FIELDS:
        try:
            compile_expression(text)
        except SourceError:
            continue
        raise AssertionError(f"{text!r} loaded")


def test_the_sandbox_watch_notices_escapes() -> None:
    with sandbox_watch() as calls, suppress(Escaped):
        builtins.eval("1")
    assert calls == ["eval"]


# The fast block of a rule set (one `return [...]` over fields and params known to be
# Decimals, falling back to the slow function on anything unusual) against each
# expression evaluated alone: snapshots and params that are mostly the usual Decimals,
# with now and then a value of another kind or an absent one.
NUMERIC_FIELDS = ["a", "b", "m.x", "zero"]
usual_numbers = st.one_of(
    st.decimals(min_value=-(10**7), max_value=10**7, places=2),
    st.sampled_from([Decimal(0), Decimal("-0"), Decimal("0.9"), Decimal("1E+30")]),
)
odd_values = st.one_of(
    st.booleans(), st.text(max_size=2), st.integers(-3, 3), st.sampled_from([MISSING])
)
fast_leaves = st.one_of(
    st.sampled_from([*NUMERIC_FIELDS, "flag", "name", "nope", "params.p", "params.q"]),
    st.sampled_from(["0", "1", "0.9", "-3", "'a'", "True", "None"]),
)


def extend_fast(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, st.sampled_from(BINARY), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(children, st.sampled_from(COMPARE[:6]), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(children, st.sampled_from(["and", "or"]), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(children, st.sampled_from(["and", "or"]), children, children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]} {t[1]} {t[3]})"
        ),
        st.tuples(st.sampled_from(["not ", "-", "abs"]), children).map(
            lambda t: f"({t[0]}({t[1]}))"
        ),
        st.tuples(st.sampled_from(["min", "max", "coalesce"]), children, children).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"
        ),
        st.sampled_from(NUMERIC_FIELDS).map(lambda f: f"present({f})"),
        st.tuples(children, children, children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
    )


fast_expressions = st.recursive(fast_leaves, extend_fast, max_leaves=8)


@st.composite
def usual_snapshots(draw: st.DrawFn) -> Snapshot:
    fields: dict[str, Any] = {"zero": Decimal(0), "flag": draw(st.booleans()), "name": "a"}
    for name in NUMERIC_FIELDS[:3]:
        if draw(st.integers(0, 9)):
            fields[name] = draw(usual_numbers)
        else:
            value = draw(odd_values)
            if value is not MISSING:
                fields[name] = value
    return Snapshot(venue="cs", venue_kind="clearstreet", account="1", fields=fields, taken_at=0.0)


@st.composite
def usual_params(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("p", "q"):
        if draw(st.integers(0, 9)):
            out[name] = draw(usual_numbers)
        else:
            value = draw(odd_values)
            if value is not MISSING:
                out[name] = value
    return out


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(fast_expressions, min_size=1, max_size=4),
    snapshot=usual_snapshots(),
    rule_params=st.lists(usual_params(), min_size=4, max_size=4),
)
def test_rule_sets_agree_with_each_expression_alone(
    texts: list[str], snapshot: Snapshot, rule_params: list[dict[str, Any]]
) -> None:
    exprs = [compile_expression(text) for text in texts]
    params = rule_params[: len(exprs)]
    rules = compile_rules(exprs)
    prepared = rules.prepare(params)
    slow_only: Any = (None, prepared[1])  # what `run` does when the fast block falls through
    results, slow = rules.run(snapshot, prepared), rules.run(snapshot, slow_only)
    for expr, p, result, expected in zip(exprs, params, results, slow, strict=True):
        assert type(result) is type(expected), (expr, result, expected)
        assert result is expected or str(result) == str(expected), (expr, result, expected)
        alone = expr.evaluate(snapshot, p)
        assert type(result) is type(alone), (expr, result, alone)
        assert isinstance(alone, EvalError) or result is alone or str(result) == str(alone)


_item_values = st.one_of(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=2, min_value=-(10**9), max_value=10**9
    ),
    st.sampled_from([None, True, "12", 7, MISSING]),
)
_items = st.one_of(
    st.dictionaries(st.sampled_from(["v", "w", "v.x"]), _item_values, max_size=3),
    st.dictionaries(st.just("v"), _item_values, min_size=1),  # the usual: the number there
    st.sampled_from([None, "text", 3, [1], {"v": {"x": Decimal(1)}}]),
)


@settings(max_examples=800, deadline=None)
@given(
    name=st.sampled_from(["sum_of", "max_of", "min_of"]),
    items=st.lists(_items, max_size=6),
    as_map=st.booleans(),
    key=st.sampled_from(["v", "w", "v.x"]),
)
def test_aggregates_agree_with_the_item_by_item_loop(
    name: str, items: list[Any], as_map: bool, key: str
) -> None:
    """`sum_of`/`max_of`/`min_of` over plain objects each with a number are picked out in
    C; any collection gives what the item-by-item loop gives, or the same refusal."""
    collection: Any = {f"k{i}": item for i, item in enumerate(items)} if as_map else items

    def outcome(agg: Any) -> tuple[str, str]:
        try:
            result = agg(name, collection, key)
        except Exception as exc:
            return type(exc).__name__, str(exc)
        return type(result).__name__, repr(result)  # repr: 1.0 and 1.00 differ

    assert outcome(expr_module._agg) == outcome(expr_module._agg_loop)


# A venue's parser vouches that its snapshots hold Decimals wherever its typed numeric
# fields are present (`FieldSchema.decimal_paths`, carried as `Snapshot.decimal_fields`);
# rules compiled for that venue skip those fields' type checks in such snapshots. These
# vouch for all of the numeric fields or for some, as a venue's schema covers some.
VOUCHING = [frozenset(NUMERIC_FIELDS), frozenset({"a", "zero"})]


@st.composite
def vouched_snapshots(draw: st.DrawFn, vouched: frozenset[str]) -> Snapshot:
    """Usual snapshots; those that keep the guarantee (a Decimal wherever a vouched field
    is present) mostly carry it, as a parser's snapshots do."""
    snapshot = draw(usual_snapshots())
    keeps = all(type(snapshot.fields.get(path, Decimal(0))) is Decimal for path in vouched)
    if keeps and draw(st.integers(0, 3)):
        return dataclasses.replace(snapshot, decimal_fields=vouched)
    return snapshot


@pytest.mark.filterwarnings("ignore:Generating overly large repr")
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(fast_expressions, min_size=1, max_size=4),
    data=st.data(),
    rule_params=st.lists(usual_params(), min_size=4, max_size=4),
    which=st.sampled_from(range(len(VOUCHING))),
)
def test_a_parsers_guarantee_changes_no_result(
    texts: list[str], data: st.DataObject, rule_params: list[dict[str, Any]], which: int
) -> None:
    vouched = VOUCHING[which]
    snapshot = data.draw(vouched_snapshots(vouched))
    exprs = [compile_expression(text) for text in texts]
    params = rule_params[: len(exprs)]
    trusting = compile_rules(exprs, decimal_fields=vouched)
    checking = compile_rules(exprs)
    results = trusting.run(snapshot, trusting.prepare(params))
    expected = checking.run(snapshot, checking.prepare(params))
    for expr, result, wanted in zip(exprs, results, expected, strict=True):
        assert type(result) is type(wanted), (expr, result, wanted)
        assert result is wanted or str(result) == str(wanted), (expr, result, wanted)


def test_the_guarantee_is_taken_only_from_snapshots_that_carry_that_very_set() -> None:
    """An equal set is not the parser's: a snapshot built elsewhere (a rule test, a
    replay) is checked field by field, so a bool where a number belongs is no number."""
    rules = compile_rules([compile_expression("a < 1")], decimal_fields=frozenset({"a"}))
    prepared = rules.prepare([{}])
    fields = {"a": True}
    copy = Snapshot(
        venue="cs",
        venue_kind="clearstreet",
        account="1",
        fields=fields,
        taken_at=0.0,
        decimal_fields=frozenset({"a"}),
    )
    [result] = rules.run(copy, prepared)
    assert isinstance(result, EvalError)
