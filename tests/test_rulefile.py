"""Rule files: the SPEC format, and every kind of mistake at its line and column."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from monitor.engine.model import RuleSet
from monitor.engine.rulefile import (
    expand_rule_globs,
    load_rules,
    load_rules_partial,
    parse_rules,
)
from monitor.engine.templates import render_context
from monitor.snapshot import Snapshot
from monitor.yamlsource import Location, Problem, SourceError

SPEC_EXAMPLE = """\
groups:
  - name: capital
    venues: [clearstreet]            # optional: venue kinds or names
    labels: {team: risk}
    rules:
      - alert: BuyingPowerBelowFloor
        expr: buying_power < params.buying_power_floor
        clear: buying_power >= params.buying_power_floor * 1.05   # optional hysteresis
        for: 30s
        keep_firing_for: 0s
        severity: critical           # critical | error | warning | info
        params: {buying_power_floor: 25000}
        on_missing: keep             # keep | resolve | fire
        labels: {page: "true"}
        annotations:
          summary: "SUMMARY"
          runbook_url: https://runbooks.example.com/buying-power
""".replace(
    "SUMMARY", "{{ account }} buying power {{ buying_power }} below {{ params.buying_power_floor }}"
)


def _rules(body: str) -> str:
    """A rule file with one group `g` whose rules are `body` (indented for you)."""
    return "groups:\n  - name: g\n    rules:\n" + textwrap.indent(textwrap.dedent(body), "      ")


def _problems(text: str) -> list[str]:
    """Every error of a rule file's text, as `check` prints them."""
    with pytest.raises(SourceError) as exc:
        parse_rules(text, "r.yaml")
    return [str(p) for p in exc.value.problems]


def _warnings(text: str) -> list[str]:
    warnings: list[Problem] = []
    parse_rules(text, "r.yaml", warnings=warnings)
    return [str(p) for p in warnings]


# ------------------------------------------------------------------------- the format


def test_the_spec_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "capital.yaml"
    path.write_text(SPEC_EXAMPLE)
    rules, warnings = load_rules([path])
    assert warnings == []
    assert isinstance(rules, RuleSet)
    assert rules.files == (str(path),)
    (group,) = rules.groups
    assert (group.name, group.venues, dict(group.labels)) == (
        "capital",
        ("clearstreet",),
        {"team": "risk"},
    )
    assert group.location == Location(str(path), 2, 5)
    (rule,) = group.rules
    assert rule.alert == "BuyingPowerBelowFloor"
    assert rule.key == "capital/BuyingPowerBelowFloor"
    assert rule.location == Location(str(path), 6, 9)
    assert rule.expr.source == "buying_power < params.buying_power_floor"
    assert rule.expr.where == Location(str(path), 7, 15)
    assert rule.clear is not None
    assert rule.clear.fields == {"buying_power", "params.buying_power_floor"}
    assert (rule.for_, rule.keep_firing_for) == (30.0, 0.0)
    assert (rule.severity, rule.on_missing) == ("critical", "keep")
    assert rule.params == {"buying_power_floor": Decimal(25000)}
    assert rule.venues == ("clearstreet",)
    assert rule.applies_to("cs-prod", "clearstreet")
    assert not rule.applies_to("pmx", "polymarket")
    assert set(rule.labels) == {"team", "page"}
    snapshot = Snapshot(
        "cs-prod", "clearstreet", "19816", {"buying_power": Decimal("24000.00")}, 0.0
    )
    context = render_context(snapshot, rule.params)
    assert rule.labels["page"].render(context) == "true"
    assert rule.annotations["summary"].render(context) == (
        "19816 buying power 24000.00 below 25000"
    )
    assert rule.annotations["runbook_url"].render(context) == (
        "https://runbooks.example.com/buying-power"
    )


def test_defaults() -> None:
    (group,) = parse_rules(_rules("- alert: A\n  expr: equity < 0\n"), "r.yaml")
    (rule,) = group.rules
    assert (rule.for_, rule.keep_firing_for, rule.severity, rule.on_missing) == (
        0.0,
        0.0,
        "warning",
        "keep",
    )
    assert rule.clear is None
    assert (rule.params, rule.labels, rule.annotations, rule.venues) == ({}, {}, {}, ())


def test_rule_labels_win_over_group_labels() -> None:
    text = """\
groups:
  - name: g
    labels: {team: risk, desk: "{{ labels.desk }}"}
    rules:
      - alert: A
        expr: equity < 0
        labels: {team: ops}
"""
    (group,) = parse_rules(text, "r.yaml")
    labels = group.rules[0].labels
    assert {name: t.source for name, t in labels.items()} == {
        "team": "ops",
        "desk": "{{ labels.desk }}",
    }
    assert dict(group.labels) == {"team": "risk", "desk": "{{ labels.desk }}"}


def test_params_are_exact_decimals_as_written() -> None:
    text = _rules(
        """\
        - alert: A
          expr: equity < params.a
          params:
            a: 0.1
            b: 25000
            c: 1.10
            d: 1e5
            e: 2_500.50
            f: "0.1"
            g: true
            h: -3.
            i: "desk 7"
        """
    )
    params = parse_rules(text, "r.yaml")[0].rules[0].params
    assert params == {
        "a": Decimal("0.1"),
        "b": Decimal(25000),
        "c": Decimal("1.10"),
        "d": Decimal("1e5"),
        "e": Decimal("2500.50"),
        "f": Decimal("0.1"),  # decimal text is a number wherever it is written
        "g": True,
        "h": Decimal("-3"),
        "i": "desk 7",
    }
    assert str(params["a"]) == "0.1"
    assert str(params["c"]) == "1.10"


def test_multi_line_expressions() -> None:
    text = _rules(
        """\
        - alert: Literal
          expr: |
            buying_power < params.floor  # the floor
              and equity > 0
          params: {floor: 1}
        - alert: Folded
          expr: >
            buying_power < params.floor
            and equity > 0
          params: {floor: 1}
        """
    )
    literal, folded = parse_rules(text, "r.yaml")[0].rules
    assert literal.expr.fields == {"buying_power", "params.floor", "equity"}
    assert literal.expr.source.startswith("buying_power < params.floor  # the floor\n")
    assert literal.expr.where == Location("r.yaml", 6, 11)
    assert folded.expr.fields == {"buying_power", "params.floor", "equity"}


# ------------------------------------------------------------------------- mistakes


def test_unknown_keys_with_suggestions() -> None:
    text = """\
groups:
  - name: g
    rule:
      - alert: A
    rules:
      - alert: A
        expresion: equity < 0
        expr: equity < 0
        sevirity: critical
        zzz: 1
grups: []
"""
    assert _problems(text) == [
        "r.yaml:3:5: unknown key 'rule' in group 'g'; did you mean 'rules'?",
        "r.yaml:7:9: unknown key 'expresion' in rule 'A'; did you mean 'expr'?",
        "r.yaml:9:9: unknown key 'sevirity' in rule 'A'; did you mean 'severity'?",
        "r.yaml:10:9: unknown key 'zzz' in rule 'A' (known keys: alert, expr, clear, for, "
        "keep_firing_for, severity, params, on_missing, labels, annotations)",
        "r.yaml:11:1: unknown key 'grups' in the rule file; did you mean 'groups'?",
    ]


def test_missing_required_keys() -> None:
    text = """\
groups:
  - rules:
      - expr: equity < 0
      - alert: NoExpr
  - name: empty
"""
    assert _problems(text) == [
        "r.yaml:2:5: missing required key 'name' in group 1",
        "r.yaml:3:9: missing required key 'alert' in rule 1",
        "r.yaml:4:9: missing required key 'expr' in rule 'NoExpr'",
        "r.yaml:5:5: missing required key 'rules' in group 'empty'",
    ]
    assert _problems("other: 1\n") == [
        "r.yaml:1:1: unknown key 'other' in the rule file (known keys: groups, inhibit_rules)",
        "r.yaml:1:1: missing required key 'groups' in the rule file",
    ]


def test_alert_names() -> None:
    text = _rules(
        """\
        - alert: Bad Name
          expr: equity < 0
        - alert: 9Lives
          expr: equity < 0
        - alert: ok_Name_2
          expr: equity < 0
        """
    )
    hint = ": use letters, digits and _, not starting with a digit (e.g. BuyingPowerBelowFloor)"
    assert _problems(text) == [
        f"r.yaml:4:16: alert: invalid alert name 'Bad Name'{hint}",
        f"r.yaml:6:16: alert: invalid alert name '9Lives'{hint}",
    ]


def test_duplicate_alert_names_are_an_error_at_the_second() -> None:
    text = _rules(
        """\
        - alert: A
          expr: equity < 0
        - alert: B
          expr: equity < 0
        - alert: A
          expr: equity < 1
        """
    )
    assert _problems(text) == [
        "r.yaml:8:16: duplicate alert name 'A' in this group (first at line 4)"
    ]


def test_the_same_alert_name_in_two_groups_is_fine() -> None:
    text = """\
groups:
  - {name: a, rules: [{alert: A, expr: equity < 0}]}
  - {name: b, rules: [{alert: A, expr: equity < 0}]}
"""
    assert [g.rules[0].key for g in parse_rules(text, "r.yaml")] == ["a/A", "b/A"]


def test_duplicate_group_names_in_a_file_and_across_files(tmp_path: Path) -> None:
    one = tmp_path / "one.yaml"
    two = tmp_path / "two.yaml"
    one.write_text("groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n")
    two.write_text("groups:\n  - name: h\n    rules: []\n  - name: g\n    rules: []\n")
    with pytest.raises(SourceError) as exc:
        load_rules([one, two])
    assert [str(p) for p in exc.value.problems] == [
        f"{one}:4:5: duplicate group name 'g' (first at line 2)",
        f"{two}:4:5: duplicate group name 'g' (first at {one}:2:5)",
    ]


def test_bad_durations() -> None:
    text = _rules(
        """\
        - alert: A
          expr: equity < 0
          for: 30x
          keep_firing_for: 5
        - alert: B
          expr: equity < 0
          for: 0
          keep_firing_for: 1m30s
        """
    )
    assert _problems(text) == [
        "r.yaml:6:14: for: invalid duration '30x': expected a number and a unit "
        "(ms, s, m, h, d, w, y) such as 500ms, 2s or 1m30s",
        "r.yaml:7:26: keep_firing_for: expected a duration such as 500ms, 2s or 1m30s, got 5 "
        "(add a unit)",
    ]


def test_bad_severity_and_on_missing_with_suggestions() -> None:
    text = _rules(
        """\
        - alert: A
          expr: equity < 0
          severity: Critical
          on_missing: resolved
        - alert: B
          expr: equity < 0
          severity: 3
          on_missing: nothing
        """
    )
    assert _problems(text) == [
        "r.yaml:6:19: severity: 'Critical' is not one of critical, error, warning, info; "
        "did you mean 'critical'?",
        "r.yaml:7:21: on_missing: 'resolved' is not one of keep, resolve, fire; "
        "did you mean 'resolve'?",
        "r.yaml:10:19: severity: 3 is not one of critical, error, warning, info",
        "r.yaml:11:21: on_missing: 'nothing' is not one of keep, resolve, fire",
    ]


def test_expression_errors_point_into_the_expression() -> None:
    text = _rules(
        """\
        - alert: Plain
          expr: equity < 0 and __import__("os")
        - alert: Quoted
          expr: "equity < 0 and x.__class__"
        - alert: Single
          expr: 'equity.x() < 0'
        - alert: Syntax
          expr: equity <
        - alert: Literal
          expr: |
            equity < 0
              and lambda: 1
        - alert: PlainMultiLine
          expr: equity < 0 and
            x.__y
        """
    )
    problems = _problems(text)
    assert problems[0] == (
        "r.yaml:5:30: `__import__`: names with double underscores are not allowed"
    )
    assert problems[1] == (
        "r.yaml:7:31: `__class__`: names with double underscores are not allowed"
    )
    assert problems[2].startswith("r.yaml:9:16: ")
    assert problems[3] == "r.yaml:11:23: invalid expression: invalid syntax"  # at the end
    assert problems[4] == "r.yaml:15:17: invalid expression: invalid syntax"
    assert problems[5] == "r.yaml:18:11: `__y`: names with double underscores are not allowed"
    assert len(problems) == 6


def test_expr_and_clear_must_be_conditions() -> None:
    text = _rules(
        """\
        - alert: A
          expr: buying_power + 1
        - alert: B
          expr: equity < 0
          clear: '"text"'
        - alert: C
          expr: coalesce(pattern_day_trader, False)
          clear: equity
        """
    )
    assert _problems(text) == [
        "r.yaml:5:15: expr must be a condition (true/false), but this is a number; "
        "compare it, e.g. `buying_power + 1 > 0`",
        "r.yaml:8:17: clear must be a condition (true/false), but this is text",
    ]


def test_expr_must_be_text() -> None:
    text = _rules("- alert: A\n  expr: true\n- alert: B\n  expr:\n")
    assert _problems(text) == [
        'r.yaml:5:15: expr: expected an expression, got true (write it as text, e.g. "True")',
        "r.yaml:7:14: expr: expected an expression, got an empty value",
    ]


def test_a_comment_that_folding_hides_is_an_error() -> None:
    text = _rules(
        """\
        - alert: A
          expr: >
            equity < 0  # only when negative
            and buying_power < 0
        """
    )
    assert _problems(text) == [
        "r.yaml:6:23: this # comment hides the rest of the expression: YAML joins the lines "
        "of a folded (>) or plain multi-line value into one line; use a literal block (expr: |)"
    ]


def test_params_mistakes() -> None:
    text = _rules(
        """\
        - alert: A
          expr: equity < 0
          params: {1x: 1, ok: [1, 2], inf: .inf, none: null}
        - alert: B
          expr: equity < 0
          params: 5
        """
    )
    assert _problems(text) == [
        "r.yaml:6:18: invalid parameter name '1x': use letters, digits and _, "
        "not starting with a digit",
        "r.yaml:6:29: params.ok: expected a number, text or true/false, got a list",
        "r.yaml:6:42: params.inf: expected a finite number, got inf",
        "r.yaml:6:54: params.none: expected a number, text or true/false, got an empty value",
        "r.yaml:9:17: params: expected a mapping of name: value such as "
        "{buying_power_floor: 25000}, got 5",
    ]


def test_label_mistakes() -> None:
    text = _rules(
        """\
        - alert: A
          expr: equity < 0
          labels:
            alertname: x
            severity: page
            bad-name: x
            page: true
            bp: "bp {{ buying_power }}"
            ok: "{{ venue }} {{ venue_kind }} {{ account }} {{ currency }}"
            ok2: "{{ labels.desk }}-{{ params.floor }}"
          params: {floor: 1}
        """
    )
    assert _problems(text) == [
        "r.yaml:7:11: label 'alertname' is reserved: riskmon sets alertname, venue, account "
        "and severity itself",
        "r.yaml:8:11: label 'severity' is reserved: riskmon sets alertname, venue, account "
        "and severity itself",
        "r.yaml:9:11: invalid label name 'bad-name': use letters, digits and _, not starting "
        "with a digit or __",
        "r.yaml:10:17: label page: expected text, got true; put it in quotes",
        "r.yaml:11:22: label values must not change between evaluations; move "
        "{{ buying_power }} to an annotation",
    ]


def test_group_mistakes() -> None:
    text = """\
groups:
  - name: ""
    rules: []
  - name: v
    venues: clearstreet
    labels: {venue: x}
    rules: {}
  - name: w
    venues: [clearstreet, 5]
    rules: []
  - just text
groups2: 1
"""
    assert _problems(text) == [
        "r.yaml:2:11: name: expected the group's name as text, got ''",
        "r.yaml:5:13: venues: expected a list of venue kinds or names such as [clearstreet], "
        "got 'clearstreet'",
        "r.yaml:6:14: label 'venue' is reserved: riskmon sets alertname, venue, account "
        "and severity itself",
        "r.yaml:7:12: rules: expected a list of rules (- alert: ...), got a mapping",
        "r.yaml:9:27: venues[1]: expected a venue kind or name, got 5",
        "r.yaml:11:5: group 4: expected a mapping, got 'just text'",
        "r.yaml:12:1: unknown key 'groups2' in the rule file; did you mean 'groups'?",
    ]


def test_template_syntax_errors() -> None:
    text = _rules(
        """\
        - alert: A
          expr: equity < 0
          annotations:
            summary: "{{ account "
            description: |
              line one
              {% if %}
            runbook: "{{ x | nofilter }}"
        """
    )
    problems = _problems(text)
    assert problems[0].startswith("r.yaml:7:21: invalid template: unexpected end of template")
    assert problems[1] == (
        "r.yaml:10:13: invalid template: Expected an expression, got 'end of statement block'"
    )
    assert problems[2] == "r.yaml:11:21: invalid template: No filter named 'nofilter'."


def test_invalid_yaml_and_unreadable_files(tmp_path: Path) -> None:
    assert _problems("groups: [\n") == [
        "r.yaml:2:1: invalid YAML: did not find expected node content"
    ]
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SourceError) as exc:
        load_rules([missing])
    assert [str(p) for p in exc.value.problems] == [
        f"{missing}:1:1: cannot read: No such file or directory"
    ]


def test_a_broken_file_reports_every_error_at_its_place(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(
        """\
groups:
  - name: capital
    venues: [clearstreet]
    rules:
      - alert: BuyingPowerBelowFloor
        expr: buying_power < params.buying_power_floor and
        for: 30
        severity: critcal
      - alert: MarginExcess
        expr: margin_details.maintenance_margin_excess < 0
        on_missing: maybe
        annotations:
          summary: "{{ account }} {{ margin_details.maintenance_margin_excess "
      - alert: BuyingPowerBelowFloor
        expr: buying_power + 1
        labels: {bp: "{{ buying_power }}"}
"""
    )
    with pytest.raises(SourceError) as exc:
        load_rules([path])
    places = [(p.location.line, p.location.col) for p in exc.value.problems]
    messages = [p.message for p in exc.value.problems]
    assert places == [(6, 59), (7, 14), (8, 19), (11, 21), (13, 21), (14, 16), (15, 15), (16, 26)]
    assert messages[0] == "invalid expression: invalid syntax"
    assert messages[1] == (
        "for: expected a duration such as 500ms, 2s or 1m30s, got 30 (add a unit)"
    )
    assert messages[2].endswith("did you mean 'critical'?")
    assert messages[3] == "on_missing: 'maybe' is not one of keep, resolve, fire"
    assert messages[4].startswith("invalid template")
    assert (
        messages[5]
        == "duplicate alert name 'BuyingPowerBelowFloor' in this group (first at line 5)"
    )
    assert messages[6].startswith("expr must be a condition (true/false)")
    assert messages[7].startswith("label values must not change between evaluations")


# ------------------------------------------------------------------------- warnings


def test_params_without_default_warn() -> None:
    text = _rules(
        """\
        - alert: A
          expr: buying_power < params.floor and equity > params.min_equity
          params: {min_equity: 1}
          annotations:
            summary: "{{ params.note }} {{ params.floor }}"
        """
    )
    assert _warnings(text) == [
        "r.yaml:5:30: warning: params.floor has no default; accounts must set it "
        "(or add params: {floor: ...} to the rule)",
        "r.yaml:8:24: warning: params.note has no default; accounts must set it "
        "(or add params: {note: ...} to the rule)",
    ]


def test_an_empty_file_warns() -> None:
    assert _warnings("") == ["r.yaml:1:1: warning: empty rule file: no groups"]
    assert _warnings("groups: []\n") == []


def test_expand_rule_globs(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("groups: []\n")
    (tmp_path / "a.yaml").write_text("groups: []\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("groups: []\n")
    warnings: list[Problem] = []
    where = Location("riskmon.yaml", 4, 9)
    paths = expand_rule_globs(
        [
            str(tmp_path / "*.yaml"),
            str(tmp_path / "a.yaml"),
            str(tmp_path / "none/*.yaml"),
            str(tmp_path / "**" / "*.yaml"),
        ],
        locations=[where, where, Location("riskmon.yaml", 5, 9), where],
        warnings=warnings,
    )
    assert paths == [tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "sub" / "c.yaml"]
    assert [str(w) for w in warnings] == [
        f"riskmon.yaml:5:9: warning: no rule file matches '{tmp_path / 'none/*.yaml'}'"
    ]
    assert expand_rule_globs([str(tmp_path / "x*.yaml")]) == []


def test_load_rules_reads_a_file_once_and_keeps_valid_rules_when_partial(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(_rules("- alert: A\n  expr: equity < 0\n- alert: B\n  expr: equity +\n"))
    loaded = load_rules_partial([path, str(path)])
    assert [r.alert for r in loaded.rules.rules] == ["A"]
    assert len(loaded.errors) == 1
    assert loaded.rules.files == (str(path),)
