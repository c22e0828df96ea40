"""`riskmon check`: rule lints against venue kinds, and the command itself."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.check_cmd import run_check
from monitor.engine.check import lint_rules
from monitor.engine.rulefile import load_rules
from monitor.venue_fields import kind_fields, kind_fields_map
from monitor.yamlsource import Problem

ROOT = Path(__file__).resolve().parent.parent


def _lint(tmp_path: Path, text: str, venues: list[tuple[str, str]] | None = None) -> list[str]:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    rules, _warnings = load_rules([path])
    problems: list[Problem] = lint_rules(rules, venues, kinds=kind_fields_map())
    assert all(p.severity == "warning" for p in problems)
    return [str(p).replace(str(path), "r.yaml") for p in problems]


# ------------------------------------------------------------------------- what kinds send


def test_clearstreet_fields() -> None:
    cs = kind_fields("clearstreet")
    for path in (
        "buying_power",
        "margin_details",
        "margin_details.usage.used",
        "margin_details.top_contributors.3.market_value",
        "margin_details.intraday_details.buying_power",
        "sod.equity",
        "pattern_day_trader",  # normalized
        "margin_excess",  # normalized
        "venue",
        "currency",
        "labels.desk",
        "params.anything.at_all",
    ):
        assert cs.knows(path), path
    for path in ("excess_capital", "securities.AAPL.market_value", "margin_details.usage.free"):
        assert not cs.knows(path), path
    assert not cs.knows("daily_pnl_total")


def test_polymarket_fields() -> None:
    pmx = kind_fields("polymarket")
    for path in ("excess_capital", "securities", "securities.AAPL", "securities.X.haircut"):
        assert pmx.knows(path), path
    for path in ("equity", "margin_details.usage.used", "pattern_day_trader", "securities.X.y"):
        assert not pmx.knows(path), path
    assert pmx.knows("buying_power")
    assert pmx.knows("margin_excess")


def test_deprecations_include_normalized_fields_from_deprecated_ones() -> None:
    cs = kind_fields("clearstreet")
    assert cs.deprecation("pattern_day_trader") == "margin_details.pattern_day_trader"
    assert cs.deprecation("day_trade_count") == "margin_details.day_trade_count"
    assert cs.deprecation("margin_details.day_trade_count") == "margin_details.day_trade_count"
    assert cs.deprecation("daily_total_pnl") == "daily_total_pnl"
    assert cs.deprecation("daily_pnl") is None  # from daily_pnl first, which is current
    assert cs.deprecation("buying_power") is None
    assert kind_fields("polymarket").deprecation("buying_power") is None


def test_suggestions_fill_wildcards() -> None:
    assert kind_fields("clearstreet").suggest("buying_powr") == "buying_power"
    assert kind_fields("polymarket").suggest("securities.AAPL.market_valeu") == (
        "securities.AAPL.market_value"
    )
    assert kind_fields("clearstreet").suggest("zzzzzz") is None


# ------------------------------------------------------------------------- lints


def test_a_field_the_kind_never_sends_warns_with_a_suggestion(tmp_path: Path) -> None:
    text = """\
groups:
  - name: cs
    venues: [clearstreet]
    rules:
      - alert: Typo
        expr: equity < 0 or buying_powr < params.floor
        params: {floor: 1}
"""
    assert _lint(tmp_path, text) == [
        "r.yaml:6:29: warning: clearstreet never sends buying_powr; did you mean buying_power?"
    ]


def test_a_rule_for_every_venue_reading_one_kinds_field(tmp_path: Path) -> None:
    text = """\
groups:
  - name: all
    rules:
      - alert: Usage
        expr: equity < 0 and margin_details.usage.used > 0
"""
    assert _lint(tmp_path, text) == [
        "r.yaml:5:15: warning: polymarket never sends equity "
        "(clearstreet sends it: limit group 'all' with venues: [clearstreet])",
        "r.yaml:5:30: warning: polymarket never sends margin_details.usage.used "
        "(clearstreet sends it: limit group 'all' with venues: [clearstreet])",
        "r.yaml:4:9: warning: Usage can never fire on polymarket: polymarket sends none of "
        "the fields its expr needs (equity, margin_details.usage.used) and on_missing is keep",
    ]


def test_deprecated_pdt_fields_warn_and_explain(tmp_path: Path) -> None:
    text = """\
groups:
  - name: pdt
    venues: [clearstreet]
    rules:
      - alert: PatternDayTrader
        expr: pattern_day_trader
        on_missing: resolve
      - alert: DayTradesNearLimit
        expr: margin_details.day_trade_count >= 3
"""
    problems = _lint(tmp_path, text)
    assert len(problems) == 2
    first, second = problems
    assert first.startswith(
        "r.yaml:6:15: warning: pattern_day_trader (from margin_details.pattern_day_trader) "
        "is deprecated by clearstreet: the FINRA pattern-day-trader rule was replaced by "
        "intraday margin in 2026"
    )
    assert "the field is missing, so this rule's on_missing (resolve) decides" in first
    assert "margin_details.intraday_details.buying_power" in first
    assert second.startswith(
        "r.yaml:9:15: warning: margin_details.day_trade_count is deprecated by clearstreet"
    )
    assert "on_missing (keep) decides" in second


def test_a_rule_that_can_never_fire(tmp_path: Path) -> None:
    text = """\
groups:
  - name: cs
    venues: [clearstreet]
    rules:
      - alert: Never
        expr: excess_capital < 0
      - alert: FiresWhenMissing
        expr: excess_capital < 0
        on_missing: fire
      - alert: TestsPresence
        expr: not present(excess_capital)
      - alert: OnlyParams
        expr: params.x > 0
        params: {x: 1}
"""
    problems = _lint(tmp_path, text)
    assert problems == [
        "r.yaml:6:15: warning: clearstreet never sends excess_capital",
        "r.yaml:5:9: warning: Never can never fire on clearstreet: clearstreet sends none of "
        "the fields its expr needs (excess_capital) and on_missing is keep",
        "r.yaml:8:15: warning: clearstreet never sends excess_capital",
        "r.yaml:11:27: warning: clearstreet never sends excess_capital",
    ]


def test_clear_and_annotations_are_linted_at_their_place(tmp_path: Path) -> None:
    text = """\
groups:
  - name: cs
    venues: [clearstreet]
    rules:
      - alert: A
        expr: equity < 0
        clear: equity > 10 and equty > 0
        annotations:
          summary: "{{ account }}: {{ margin_details.usage.usd }}"
          more: |
            first line
            {{ sod.equity }} {{ sod.equityy }}
"""
    assert _lint(tmp_path, text) == [
        "r.yaml:7:32: warning: clearstreet never sends equty; did you mean equity?",
        "r.yaml:9:39: warning: clearstreet never sends margin_details.usage.usd; "
        "did you mean margin_details.usage.used?",
        "r.yaml:12:33: warning: clearstreet never sends sod.equityy; did you mean sod.equity?",
    ]


def test_with_config_venues_only_their_kinds_are_linted(tmp_path: Path) -> None:
    text = """\
groups:
  - name: cs
    venues: [clearstreet]
    rules:
      - alert: A
        expr: equity < 0
  - name: by-name
    venues: [cs-prod, cs-prd]
    rules:
      - alert: B
        expr: excess_capital < 0
"""
    # no Clear Street venue in the config: the clearstreet group is not linted
    assert _lint(tmp_path, text, [("pmx", "polymarket")]) == [
        "r.yaml:7:5: warning: venues: 'cs-prod' is neither a venue kind (clearstreet, "
        "polymarket) nor a venue of the config",
        "r.yaml:7:5: warning: venues: 'cs-prd' is neither a venue kind (clearstreet, "
        "polymarket) nor a venue of the config",
    ]
    problems = _lint(tmp_path, text, [("cs-prod", "clearstreet")])
    assert problems[0] == (
        "r.yaml:7:5: warning: venues: 'cs-prd' is neither a venue kind (clearstreet, "
        "polymarket) nor a venue of the config; did you mean 'cs-prod'?"
    )
    assert problems[1] == "r.yaml:11:15: warning: clearstreet never sends excess_capital"


def test_identity_labels_and_params_are_always_known(tmp_path: Path) -> None:
    text = """\
groups:
  - name: g
    rules:
      - alert: A
        expr: venue == "x" and labels.desk == "eq" and params.floor > 0 and currency == "USD"
        params: {floor: 1}
        annotations: {summary: "{{ venue_kind }} {{ account }} {{ labels.desk }}"}
"""
    assert _lint(tmp_path, text) == []


def test_annotations_may_read_resolved_and_firing_values(tmp_path: Path) -> None:
    text = """\
groups:
  - name: g
    venues: [clearstreet]
    rules:
      - alert: A
        expr: buying_power < 1
        annotations:
          summary: "{% if resolved %}back from {{ firing_values.buying_power }}{% endif %}"
"""
    assert _lint(tmp_path, text) == []


# ------------------------------------------------------------------------- the command

BROKEN = """\
groups:
  - name: capital
    rules:
      - alert: BuyingPowerBelowFloor
        expr: buying_power < params.floor and
        for: 30
        severity: critcal
      - alert: Margin
        expr: margin_details.maintenance_margin_excess + 1
        labels: {bp: "{{ buying_power }}"}
"""

CLEAN = """\
groups:
  - name: capital
    venues: [clearstreet]
    rules:
      - alert: BuyingPowerBelowFloor
        expr: buying_power < params.buying_power_floor
        params: {buying_power_floor: 25000}
        annotations:
          summary: "{{ account }} buying power {{ buying_power }}"
"""

WARNS = """\
groups:
  - name: floors
    venues: [clearstreet]
    rules:
      - alert: Floor
        expr: buying_power < params.floor
"""


def _riskmon(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_check_a_broken_file_prints_each_error_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(BROKEN)
    result = _riskmon("check", "broken.yaml", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        "broken.yaml:5:46: invalid expression: invalid syntax",  # after the dangling `and`
        "broken.yaml:6:14: for: expected a duration such as 500ms, 2s or 1m30s, got 30 "
        "(add a unit)",
        "broken.yaml:7:19: severity: 'critcal' is not one of critical, error, warning, info; "
        "did you mean 'critical'?",
        "broken.yaml:9:15: expr must be a condition (true/false), but this is a number; "
        "compare it, e.g. `margin_details.maintenance_margin_excess + 1 > 0`",
        "broken.yaml:10:26: label values must not change between evaluations; "
        "move {{ buying_power }} to an annotation",
        "5 errors, 0 warnings",
    ]


def test_check_places_a_syntax_error_at_the_end_of_an_expression(tmp_path: Path) -> None:
    # Python 3.11 reports an expression cut short at offset 0 unless a line break ends
    # it: the user must still see where the expression stops, in every scalar style
    (tmp_path / "cut.yaml").write_text(
        """\
groups:
  - name: capital
    rules:
      - alert: Plain
        expr: buying_power <
      - alert: Quoted
        expr: "equity * 2 + "
      - alert: Block
        expr: |
          equity > 0 and
"""
    )
    result = _riskmon("check", "cut.yaml", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "cut.yaml:5:29: invalid expression: invalid syntax",
        "cut.yaml:7:29: invalid expression: invalid syntax",
        "cut.yaml:10:25: invalid expression: invalid syntax",
        "3 errors, 0 warnings",
    ]


def test_check_a_clean_file_exits_0(tmp_path: Path) -> None:
    (tmp_path / "capital.yaml").write_text(CLEAN)
    result = _riskmon("check", "capital.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "ok: 1 rule in 1 file\n"


def test_check_with_warnings_only_exits_0(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(WARNS)
    (tmp_path / "capital.yaml").write_text(CLEAN)
    result = _riskmon("check", "w.yaml", "capital.yaml", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "w.yaml:6:30: warning: params.floor has no default; accounts must set it "
        "(or add params: {floor: ...} to the rule)",
        "0 errors, 1 warning",
    ]


def test_check_a_missing_file(tmp_path: Path) -> None:
    result = _riskmon("check", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "nope.yaml:1:1: cannot read: No such file or directory",
        "1 error, 0 warnings",
    ]


CONFIG = """\
rules: ["rules/*.yaml", "extra/*.yaml"]
venues:
  - name: cs-prod
    kind: clearstreet
    base_url: https://api.clearstreet.com
    api_key: not-a-real-key
    accounts:
      - id: "19816"
"""


def test_check_the_config_and_its_rules(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "capital.yaml").write_text(CLEAN)
    (tmp_path / "rules" / "pdt.yaml").write_text(
        "groups:\n  - name: pdt\n    rules:\n      - alert: Pdt\n        expr: pattern_day_trader\n"
    )
    (tmp_path / "riskmon.yaml").write_text(CONFIG)
    result = _riskmon("check", cwd=tmp_path)  # riskmon.yaml by default
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "riskmon.yaml:1:25: warning: no rule file matches " + repr(
        str(tmp_path / "extra/*.yaml")
    )
    # only the config's venue kinds: no polymarket lints for the pdt group
    assert lines[1].startswith(
        f"{tmp_path / 'rules' / 'pdt.yaml'}:5:15: warning: pattern_day_trader "
        "(from margin_details.pattern_day_trader) is deprecated by clearstreet"
    )
    assert lines[2:] == ["0 errors, 2 warnings"]
    assert "not-a-real-key" not in result.stdout + result.stderr


def test_check_a_broken_config(tmp_path: Path) -> None:
    (tmp_path / "riskmon.yaml").write_text(CONFIG.replace("kind: clearstreet", "kind: cs"))
    result = _riskmon("check", "-c", "riskmon.yaml", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("riskmon.yaml:4:11: ")
    assert lines[-1].startswith("1 error")


def test_check_rule_files_against_a_config(tmp_path: Path) -> None:
    (tmp_path / "riskmon.yaml").write_text(CONFIG)
    (tmp_path / "pmx.yaml").write_text(
        "groups:\n  - name: p\n    venues: [polymarket]\n    rules:\n"
        "      - alert: Excess\n        expr: excess_capital < 0\n"
    )
    # the config has no polymarket venue: nothing to lint against
    result = _riskmon("check", "-c", "riskmon.yaml", "pmx.yaml", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "ok: 1 rule in 1 file\n")


def test_check_without_config_or_files(tmp_path: Path) -> None:
    result = _riskmon("check", cwd=tmp_path)
    assert result.returncode == 1
    assert (
        result.stdout.splitlines()[0] == "riskmon.yaml:1:1: cannot read: No such file or directory"
    )
    assert "give a config with -c FILE or the rule files to check" in result.stderr


def test_run_check_in_process(tmp_path: Path) -> None:
    path = tmp_path / "capital.yaml"
    path.write_text(CLEAN)
    out, err = io.StringIO(), io.StringIO()
    assert run_check(None, [str(path)], out, err) == 0
    assert out.getvalue() == "ok: 1 rule in 1 file\n"
    assert err.getvalue() == ""


@pytest.mark.parametrize("pattern", ["*.yaml", "[c]apital.yaml"])
def test_run_check_expands_globs_given_as_arguments(tmp_path: Path, pattern: str) -> None:
    (tmp_path / "capital.yaml").write_text(CLEAN)
    out = io.StringIO()
    assert run_check(None, [str(tmp_path / pattern)], out, io.StringIO()) == 0
    assert out.getvalue() == "ok: 1 rule in 1 file\n"


def test_check_never_shows_the_password_of_a_malformed_mqtt_url(tmp_path: Path) -> None:
    (tmp_path / "cs.key").write_text("k")
    (tmp_path / "riskmon.yaml").write_text(
        'mqtt: {url: "mqtt:/ops:SECRETPW@127.0.0.1:1883"}\n'
        "rules: []\n"
        "venues:\n"
        "  - {name: cs, kind: clearstreet, base_url: 'http://127.0.0.1:1', "
        "api_key_file: cs.key, accounts: [{id: '1'}]}\n"
    )
    result = _riskmon("check", "-c", "riskmon.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "SECRETPW" not in result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == (
        "riskmon.yaml:1:13: url: no valid host in 'mqtt:/***@127.0.0.1:1883'; "
        "expected mqtt://HOST:PORT, mqtts://HOST:PORT or embedded"
    )
