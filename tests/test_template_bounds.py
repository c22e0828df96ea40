"""Templates are bounded: what cannot be bounded is refused at load with `path:line:col`,
and a render that goes past a bound of steps, time or size renders a marker instead of
stalling the daemon or exhausting its memory."""

from __future__ import annotations

import signal
import textwrap
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import pytest
import structlog

from monitor.engine.decimal_text import MAX_FIXED_DIGITS, decimal_text
from monitor.engine.rulefile import IDENTITY_FIELDS, load_rules, parse_rules
from monitor.engine.template_limits import MAX_LOOP_ITEMS
from monitor.engine.templates import (
    MAX_OUTPUT_CHARS,
    compile_template,
    render_context,
    template_failures,
)
from monitor.snapshot import Snapshot
from monitor.yamlsource import Location, SourceError

WHERE = Location("rules/hostile.yaml", 9, 20)
#: A valid decimal whose fixed-point text is a billion digits long.
HUGE = Decimal("-1E+999999999")
_T = TypeVar("_T")


class _Stalled(BaseException):  # not an Exception: render() must not swallow it
    pass


@contextmanager
def _unless_stalled(seconds: float = 10.0) -> Iterator[None]:
    """Fail a render that does not return: what the daemon would do while it stalls."""

    def stalled(signum: int, frame: FrameType | None) -> None:
        raise _Stalled(f"still rendering after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stalled)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _context(**fields: Any) -> dict[str, Any]:
    snapshot = Snapshot(
        venue="cs",
        venue_kind="clearstreet",
        account="19816",
        fields={
            "daily_pnl": HUGE,
            "buying_power": Decimal("24000.00"),
            "note": "a " * 500_000,  # as long as a venue's answer can be (1 MiB)
            **fields,
        },
        taken_at=0.0,
        currency="USD",
    )
    return render_context(snapshot, {"max_daily_loss": Decimal("50000")})


def measured(run: Callable[[], _T]) -> tuple[_T, int]:
    """What `run()` returns and the most memory it held at once, in bytes; a run that
    does not return within 10 s fails."""
    tracemalloc.start()
    try:
        with _unless_stalled():
            result = run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak


def _render_measured(source: str) -> tuple[str, int]:
    template = compile_template(source, where=WHERE)
    context = _context()
    return measured(lambda: template.render(context))


# ------------------------------------------------------------------------- refused at load


def _rule_file(summary: str) -> str:
    """A rule file whose one annotation is `summary: {summary}` (YAML), on line 7."""
    return (
        textwrap.dedent("""\
        groups:
          - name: hostile
            rules:
              - alert: Hostile
                expr: buying_power < 0
                annotations:
                  summary: """)
        + summary
    )


@pytest.mark.parametrize(
    ("annotation", "at", "message"),
    [
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "range",
            "range() over more than 1000 numbers",
        ),
        (
            "{% for i in range(params.n) %}{{ i }}{% endfor %}",
            "range",
            "range() needs literal whole numbers",
        ),
        ("{{ 2 ** 64 }}", "**", "** is not supported in templates"),
        (
            "{% for a in labels %}{% for b in labels %}{% for c in labels %}"
            "{% endfor %}{% endfor %}{% endfor %}",
            "for",  # Jinja's nodes carry lines, not columns: the line's first loop
            "loops nested more than 2 deep",
        ),
        ("{% for x in labels recursive %}{% endfor %}", "recursive", "recursive loops are not"),
        ("{% macro m() %}{% endmacro %}", "macro", "{% macro %} is not supported"),
        ("{% set s %}x{% endset %}{{ s }}", "set", "{% set %}...{% endset %} blocks"),
        ("{% filter upper %}x{% endfilter %}", "filter", "{% filter %} blocks"),
        ("{% include 'x' %}", "include", "{% include %} is not supported"),
        ("{{ account.ljust(1000000000) }}", "ljust", "ljust() is not supported"),
        ("{{ account.replace('1', account) }}", "replace", "replace() is not supported"),
        ("{{ 'x' * 1000000 }}", "*", "this * builds more than 16384 characters"),
        ("{{ account | center(1000000000) }}", None, "No filter named 'center'"),
        ("{{ " + "9" * 5000 + " }}", None, "invalid template: ValueError: Exceeds the limit"),
    ],
)
def test_an_unboundable_template_is_refused_at_load_with_its_place(
    annotation: str, at: str | None, message: str
) -> None:
    with pytest.raises(SourceError) as exc:
        parse_rules(_rule_file(f'"{annotation}"'), "rules/hostile.yaml")
    (problem,) = exc.value.problems
    column = 21 + annotation.index(at) if at else 21  # the template starts at column 21
    assert str(problem.location) == f"rules/hostile.yaml:7:{column}"
    assert message in problem.message


def test_a_refusal_on_a_later_line_of_a_template_names_that_line() -> None:
    text = _rule_file("|\n            {{ account }} is short\n            by {{ 10 ** 100000 }}\n")
    with pytest.raises(SourceError) as exc:
        parse_rules(text, "rules/hostile.yaml")
    (problem,) = exc.value.problems
    assert str(problem.location) == "rules/hostile.yaml:9:22"  # at the **


# ------------------------------------------------------------------------- bounded at run time


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        pytest.param(  # a million loop iterations that write nothing
            "{% set r = range(1000) | list %}"
            "{% for i in r %}{% for j in r %}{% set x = r | sum %}{% endfor %}{% endfor %}",
            "template took",
            id="nested-loops",
        ),
        pytest.param(
            '{% set ns = namespace(s="ab") %}'
            "{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
            "more than 16384 characters",
            id="concat-doubling",
        ),
        pytest.param(
            '{% set ns = namespace(s="ab") %}'
            "{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}",
            "more than 16384 characters",
            id="plus-doubling",
        ),
        pytest.param(
            "{% set ns = namespace(x=3) %}"
            "{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x > 0 }}",
            "bits",
            id="repeated-squaring",
        ),
        pytest.param('{{ ("x" * 4000) * 4000 }}', "repeating", id="chained-repetition"),
        pytest.param(
            '{{ ("x" * 4000) | replace("x", "xxxxxxxxxx") }}', "replace", id="replace-growth"
        ),
        pytest.param('{{ ([("x" * 4000)] * 5) | join("-") }}', "join", id="join-growth"),
        pytest.param('{{ "{:f}".format(daily_pnl) }}', "too many digits", id="str-format-f"),
        pytest.param('{{ "%d" | format(daily_pnl) }}', "too many digits", id="format-filter-d"),
        pytest.param('{{ "%d" % daily_pnl }}', "too many digits", id="percent-d"),
        pytest.param('{{ "{:>999999999}".format(account) }}', "width", id="format-width"),
        pytest.param('{{ "%*s" % (999999999, account) }}', "width", id="percent-star"),
        pytest.param("{{ daily_pnl | int }}", "too large for int", id="int-filter"),
        pytest.param("{{ note.split() | length }}", "a method of a value", id="split-huge"),
        pytest.param("{{ daily_pnl - 1 }}", "number too large (decimal overflow)", id="overflow"),
    ],
)
def test_a_template_past_a_bound_renders_a_marker(source: str, reason: str) -> None:
    text, peak = _render_measured(source)
    assert text.startswith("<template error: ")
    assert reason in text
    assert len(text) <= MAX_OUTPUT_CHARS
    assert peak < 8 * 1024 * 1024


def test_huge_decimals_print_in_bounded_text() -> None:
    text, peak = _render_measured(
        "{{ account }} daily P&L {{ daily_pnl }} ({{ daily_pnl | string }}) is past "
        "the -{{ params.max_daily_loss }} loss limit"
    )
    assert text == ("19816 daily P&L -1E+999999999 (-1E+999999999) is past the -50000 loss limit")
    assert peak < 1024 * 1024


def _nested(paths: Iterable[str], leaf: Any) -> dict[str, Any]:
    """`{"a": {"b": leaf}}` for the path `a.b`, for every path."""
    root: dict[str, Any] = {}
    for path in sorted(paths):
        *parents, last = path.split(".")
        node = root
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node.setdefault(last, leaf)
    return root


def test_every_shipped_template_prints_huge_numbers_in_bounded_text() -> None:
    """`"daily_pnl": "-1E+999999999"` took 2 GB and 2 s in DailyLossOverLimit's summary."""
    rules, _ = load_rules(sorted((Path(__file__).parents[1] / "rules").glob("*.yaml")))
    not_venue_data = {*IDENTITY_FIELDS, "labels", "params"}
    rendered = 0
    for rule in rules.rules:
        for template in (*rule.labels.values(), *rule.annotations.values()):
            read = [f for f in template.fields if f.partition(".")[0] not in not_venue_data]
            snapshot = Snapshot(
                venue="cs",
                venue_kind="clearstreet",
                account="19816",
                fields=_nested(read, HUGE),
                taken_at=0.0,
            )
            params = {name: HUGE for name in rule.params}  # as an account could override
            context = render_context(snapshot, params)
            text, peak = measured(lambda: template.render(context))  # noqa: B023 - called here
            assert len(text) <= MAX_OUTPUT_CHARS
            assert peak < 1024 * 1024, (rule.alert, template.source)
            rendered += 1
    assert rendered >= 12


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("24000.00", "24000.00"),
        ("2.4E+4", "24000"),
        ("-0.0000001", "-0.0000001"),
        ("1E+63", "1" + "0" * 63),
        ("1E+64", "1E+64"),
        ("-1E+999999999", "-1E+999999999"),
        ("1.5E-999999999", "1.5E-999999999"),
        ("-1.23456789E-70", "-1.23456789E-70"),
        ("NaN", "NaN"),
        ("-Infinity", "-Infinity"),
    ],
)
def test_decimal_text_is_fixed_point_while_short(value: str, text: str) -> None:
    assert decimal_text(Decimal(value)) == text


@pytest.mark.parametrize("exponent", [-(10**9), -1000, -66, -65, -64, -63, 0, 62, 63, 64, 10**9])
@pytest.mark.parametrize("digits", ["1", "-1", "123456789", "-" + "9" * 40])
def test_decimal_text_is_never_much_longer_than_the_digits(digits: str, exponent: int) -> None:
    value = Decimal(f"{digits}E{exponent}")
    text = decimal_text(value)
    assert Decimal(text) == value
    assert len(text) <= MAX_FIXED_DIGITS + len(digits) + 2


def test_a_loop_over_more_than_the_bound_stops() -> None:
    template = compile_template("{% for x in labels.big %}{% endfor %}done", where=WHERE)
    context = _context()
    context["labels"] = {"big": list(range(MAX_LOOP_ITEMS + 1))}
    assert template.render(context).startswith(
        f"<template error: a loop over more than {MAX_LOOP_ITEMS} items>"
    )


def test_bounded_templates_still_loop_filter_and_format() -> None:
    template = compile_template(
        "{% for name, s in securities | dictsort %}{{ loop.index }}/{{ loop.length }} "
        "{{ name }}={{ s.mv * 2 }}{{ ', ' if not loop.last }}{% endfor %}; "
        '{{ "%.2f" | format(buying_power) }} {{ "{:,}".format(buying_power) }} '
        '{{ (buying_power / 3) | round(2) }} {{ buying_power | int }} {{ "-" * 3 }} '
        '{{ account | replace("98", "x") }} {{ range(3) | join(",") }} {{ account ~ "!" }}',
        where=WHERE,
    )
    securities = {"MSFT": {"mv": Decimal("2")}, "AAPL": {"mv": Decimal("1.5")}}
    assert template.render(_context(securities=securities)) == (
        "1/2 AAPL=3.0, 2/2 MSFT=4; 24000.00 24,000.00 8000.00 24000 --- 1x16 0,1,2 19816!"
    )


def test_a_failure_past_a_bound_is_counted_and_logged_once() -> None:
    template = compile_template('{{ ("x" * 4000) * 4000 }}', where=WHERE)
    before = template_failures()
    with structlog.testing.capture_logs() as logs:
        first = template.render(_context())
        second = template.render(_context())
    assert first == second
    assert template_failures() == before + 2
    assert [log["event"] for log in logs] == ["template failed"]
    assert logs[0]["location"] == "rules/hostile.yaml:9:20"
