"""The expression language cannot be made to run long or allocate much.

At load: number literals (and a rule's params) of at most 50 digits and exponents within
±1000, strings of at most 1000 characters, no `**`, at most 50 levels of nesting and 2000
characters, each refused with the rule file's `path:line:col`. At run time: every
operation on Decimals runs in `CONTEXT` (34 digits, exponents within ±999,999, overflow
trapped), so values of any exponent or length in a snapshot give an answer or an
EvalError at once, in little memory, and strings are never built (no string arithmetic).
"""

from __future__ import annotations

import textwrap
from decimal import Decimal
from typing import Any

import pytest
from test_expr import both_ways, snapshot
from test_template_bounds import measured

from monitor.engine.expr import EvalError, compile_expression
from monitor.engine.rulefile import parse_rules
from monitor.yamlsource import SourceError

#: Snapshot values at and past every bound a venue could send.
EXTREMES: dict[str, Any] = {
    "huge": Decimal("-1E+999999999"),
    "big": Decimal("9.99E+999999"),
    "tiny": Decimal("1E-999999999"),
    "many_digits": Decimal("7" * 100_000 + ".5"),
    "text": "x" * 1_000_000,
    "items": [{"v": Decimal("9E+999999")}] * 10_000,
    "positions": {f"S{i}": {"v": Decimal(i)} for i in range(10_000)},
}


@pytest.mark.parametrize(
    "text",
    [
        "huge < 0",
        "huge * 2 < 0",
        "huge + 1 < 0",
        "-huge > 0",
        "abs(huge) > 0",
        "huge / tiny > 0",
        "tiny / huge < 0",
        "huge % 7 == 0",
        "big % tiny == 0",
        "tiny % big == 0",
        "big * big * big * big > 0",
        "tiny * tiny > 0",
        "round(huge) < 0",
        "round(huge, 1000) < 0",
        "round(huge, -1000) < 0",
        "round(tiny, 1000) >= 0",
        "round(tiny, -1000) >= 0",
        "round(many_digits, 2) > 0",
        "round(many_digits / 3, 1000) > 0",
        "many_digits * many_digits > 0",
        "many_digits == many_digits + 0",
        "min(huge, big, tiny, many_digits) < 0",
        "9e1000 * 9e1000 * 9e1000 * 9e1000 > 0",
        "1e-1000 * 1e-1000 * 1e-1000 >= 0",
        "round(9e1000, -1000) > 0",
        "len(text) > 0",
        "'needle' in text",
        "text == text",
        "text < text",
        "len(text + text) > 0",
        "len(text * 1000) > 0",
        "sum_of(items, 'v') > 0",
        "max_of(items, 'v') > 0",
        "sum_of(positions, 'v') > 0",
        "'S9999' in positions",
    ],
)
def test_extreme_values_give_an_answer_at_once_in_little_memory(text: str) -> None:
    expr = compile_expression(text)
    snap = snapshot(EXTREMES)
    result, peak = measured(lambda: both_ways(expr, snap, {}))
    assert isinstance(result, bool | Decimal | EvalError)
    assert peak < 2 * 1024 * 1024


def _rule(expr: str, params: str = "{}") -> str:
    return textwrap.dedent(f"""\
        groups:
          - name: g
            rules:
              - alert: A
                expr: {expr}
                params: {params}
        """)


@pytest.mark.parametrize(
    ("expr", "offset", "message"),
    [
        ("buying_power < 1" + "0" * 60, 15, "number literal longer than 50 digits"),
        ("buying_power < 1e999999999", 15, "exponent beyond ±1000"),
        ("account == '" + "x" * 1001 + "'", 11, "string literal longer than 1000"),
        ("buying_power < 10 ** 10 ** 10", 15, "** is not allowed"),
        ("-" * 60 + "buying_power < 0", 49, "nested too deeply"),  # at the 51st level
        ("buying_power < " + " + ".join(["1"] * 700), 0, "longer than 2000 characters"),
    ],
)
def test_an_unbounded_expression_is_refused_with_its_place_in_the_file(
    expr: str, offset: int, message: str
) -> None:
    with pytest.raises(SourceError) as exc:
        parse_rules(_rule(expr), "rules/r.yaml")
    (problem,) = exc.value.problems
    assert str(problem.location) == f"rules/r.yaml:5:{15 + offset}"  # expr: starts at 15
    assert message in problem.message


@pytest.mark.parametrize(
    ("params", "column", "message"),
    [
        ("{floor: 1e999999999}", 25, "params.floor: number with an exponent beyond ±1000"),
        ("{floor: -1e-1001}", 25, "params.floor: number with an exponent beyond ±1000"),
        ("{floor: " + "9" * 51 + "}", 25, "params.floor: number longer than 50 digits"),
        # quoted decimal text is a number too, held to the same bounds
        ("{floor: '" + "9" * 51 + "'}", 25, "params.floor: number longer than 50 digits"),
        # other text stays text, which a rule comparing it with a number refuses
        (
            "{floor: '9 x'}",
            25,
            "params.floor: '9 x' is not a number, but this rule compares it with a number "
            "or computes with it",
        ),
        ("{floor: 1e1000}", None, None),
    ],
)
def test_a_rule_param_is_bounded_as_number_literals_are(
    params: str, column: int | None, message: str | None
) -> None:
    text = _rule("buying_power < params.floor", params)
    if message is None:
        parse_rules(text, "rules/r.yaml")
        return
    with pytest.raises(SourceError) as exc:
        parse_rules(text, "rules/r.yaml")
    (problem,) = exc.value.problems
    assert str(problem) == f"rules/r.yaml:6:{column}: {message}"
