"""Label and annotation templates: fields read, rendering, fallbacks, the sandbox."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import structlog

from monitor.engine.model import Template
from monitor.engine.templates import (
    MAX_OUTPUT_CHARS,
    CompiledTemplate,
    compile_template,
    render_context,
)
from monitor.snapshot import Snapshot
from monitor.yamlsource import Location, SourceError

WHERE = Location("rules/capital.yaml", 12, 20)


def _snapshot(**fields: Any) -> Snapshot:
    base: dict[str, Any] = {
        "buying_power": Decimal("24000.00"),
        "tiny": Decimal("1E-7"),
        "pattern_day_trader": False,
        "margin_details": {
            "maintenance_margin_excess": Decimal("-150.5"),
            "usage": {"used": Decimal("600"), "total": Decimal("1000")},
        },
        "margin_details.maintenance_margin_excess": Decimal("-150.5"),
        "margin_details.usage": {"used": Decimal("600"), "total": Decimal("1000")},
        "margin_details.usage.used": Decimal("600"),
        "margin_details.usage.total": Decimal("1000"),
        "securities": {"AAPL": {"market_value": Decimal("10.25")}},
    }
    base.update(fields)
    return Snapshot(
        venue="cs-prod",
        venue_kind="clearstreet",
        account="19816",
        fields=base,
        taken_at=0.0,
        currency="USD",
        labels={"desk": "equities"},
    )


def _render(source: str, **fields: Any) -> str:
    params = {"buying_power_floor": Decimal("25000"), "ratio": Decimal("0.10")}
    return compile_template(source, where=WHERE).render(render_context(_snapshot(**fields), params))


def test_compiled_template_is_a_model_template() -> None:
    template: Template = compile_template("{{ account }}", where=WHERE)
    assert isinstance(template, CompiledTemplate)
    assert template.source == "{{ account }}"
    assert template.where == WHERE


@pytest.mark.parametrize(
    ("source", "fields"),
    [
        ("plain text", set()),
        ("{{ buying_power }}", {"buying_power"}),
        ("{{ params.buying_power_floor }}", {"params.buying_power_floor"}),
        ("{{ params['buying_power_floor'] }}", {"params.buying_power_floor"}),
        ("{{ labels.desk }} {{ account }}", {"labels.desk", "account"}),
        (
            "{{ margin_details.maintenance_margin_excess | round(2) }}",
            {"margin_details.maintenance_margin_excess"},
        ),
        ("{{ margin_details['usage'].used }}", {"margin_details.usage.used"}),
        ("{{ securities[sym].market_value }}", {"securities", "sym"}),
        (
            "{% for s, v in securities.items() %}{{ s }}={{ v.market_value }}{% endfor %}",
            {"securities"},
        ),
        ("{% set x = buying_power * 2 %}{{ x }}", {"buying_power"}),
        ("{% for i in range(3) %}{{ loop.index }}{% endfor %}", set()),
        ("{{ '%.2f' | format(equity) }}", {"equity"}),
        (
            "{{ buying_power if pattern_day_trader else equity }}",
            {"buying_power", "equity", "pattern_day_trader"},
        ),
    ],
)
def test_fields_are_every_dotted_path_read(source: str, fields: set[str]) -> None:
    assert compile_template(source, where=WHERE).fields == frozenset(fields)


def test_renders_the_spec_summary() -> None:
    text = _render(
        "{{ account }} buying power {{ buying_power }} below {{ params.buying_power_floor }}"
    )
    assert text == "19816 buying power 24000.00 below 25000"


def test_identity_labels_params_and_nested_fields() -> None:
    text = _render(
        "{{ venue }}/{{ venue_kind }}/{{ currency }} {{ labels.desk }} "
        "{{ margin_details.maintenance_margin_excess }} {{ margin_details.usage.used }} "
        "{{ securities.AAPL.market_value }} {{ params.ratio }}"
    )
    assert text == "cs-prod/clearstreet/USD equities -150.5 600 10.25 0.10"


def test_decimals_print_exact_text_and_booleans_lowercase() -> None:
    assert _render("{{ tiny }} {{ pattern_day_trader }}") == "0.0000001 false"
    assert _render("{{ buying_power * 2 }}") == "48000.00"
    assert _render("{{ '%.1f' | format(buying_power) }}") == "24000.0"


def test_a_missing_field_renders_readably() -> None:
    assert _render("{{ equity }}") == "<missing: equity>"
    assert _render("{{ nope.a.b }}") == "<missing: nope.a.b>"
    assert _render("{{ margin_details.usage.free }}") == "<missing: free>"
    assert _render("{{ labels.team }}") == "<missing: team>"


def test_currency_falls_back_to_the_venue_field() -> None:
    snap = Snapshot("pmx", "polymarket", "a", {"currency": "EUR"}, 0.0)
    assert compile_template("{{ currency }}", where=WHERE).render(render_context(snap, {})) == (
        "EUR"
    )


def test_plain_text_is_returned_as_is() -> None:
    template = compile_template("https://runbooks.example.com/bp", where=WHERE)
    assert template.render({}) == "https://runbooks.example.com/bp"


def test_a_failing_template_renders_a_fallback_and_logs_once() -> None:
    template = compile_template("{{ equity - 1 }} left", where=WHERE)
    context = render_context(_snapshot(), {})
    with structlog.testing.capture_logs() as logs:
        first = template.render(context)
        second = template.render(context)
    assert first == second == "<template error: equity is missing> {{ equity - 1 }} left"
    assert len(logs) == 1
    assert logs[0]["event"] == "template failed"
    assert logs[0]["location"] == "rules/capital.yaml:12:20"
    assert logs[0]["log_level"] == "warning"


def test_a_type_error_renders_a_fallback() -> None:
    text = _render("{{ account + 1 }}")
    assert text.startswith("<template error: ")
    assert text.endswith("> {{ account + 1 }}")


@pytest.mark.parametrize(
    "source",
    [
        "{{ buying_power.__class__.__mro__ }}",
        "{{ labels.update({'x': '1'}) }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_the_sandbox_refuses_internals_and_mutation(source: str) -> None:
    text = _render(source)
    assert "<template error" in text or "<missing" in text
    assert len(text) <= MAX_OUTPUT_CHARS


def test_output_is_capped() -> None:
    text = _render("{% for i in range(1000) %}0123456789{% endfor %}")
    assert len(text) == MAX_OUTPUT_CHARS
    assert text.endswith("...")


def test_a_syntax_error_is_a_source_error_at_the_template() -> None:
    with pytest.raises(SourceError) as exc:
        compile_template("{{ account ", where=WHERE)
    (problem,) = exc.value.problems
    assert problem.location == WHERE
    assert problem.message.startswith("invalid template: unexpected end of template")


def test_a_syntax_error_on_a_later_line_names_that_line() -> None:
    with pytest.raises(SourceError) as exc:
        compile_template("ok\n{% if %}", where=WHERE)
    assert exc.value.problems[0].location == Location("rules/capital.yaml", 13, 1)


def test_an_unknown_filter_is_refused_at_load() -> None:
    with pytest.raises(SourceError, match="No filter named 'nofilter'"):
        compile_template("{{ account | nofilter }}", where=WHERE)


def test_render_context_holds_what_templates_see() -> None:
    context = render_context(_snapshot(), {"floor": Decimal(1)})
    assert context["venue"] == "cs-prod"
    assert context["venue_kind"] == "clearstreet"
    assert context["account"] == "19816"
    assert context["currency"] == "USD"
    assert context["labels"] == {"desk": "equities"}
    assert context["params"] == {"floor": Decimal(1)}
    assert context["buying_power"] == Decimal("24000.00")
