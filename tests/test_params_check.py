"""Params checked against the rules that read them (issue 12, items 2 and 3): what each
rule reads, `riskmon check` on a config and its rules, `--strict`, `riskmon replay`'s
`-r` and `--set`, and `riskmon test` on a venue_kind no group is for."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from monitor import schema
from monitor.engine.expr import compile_expression, guarded_paths, param_uses
from monitor.engine.param_usage import params_read, rule_params
from monitor.engine.rulefile import load_rules
from monitor.recording import write_record
from monitor.snapshot import Snapshot

ROOT = Path(__file__).resolve().parent.parent
QUOTED_50K = '"50k"'
QUOTED_19817 = '"19817"'


def riskmon(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def place(path: Path, text: str, *, nth: int = 1) -> str:
    """`path:line:col` of the nth occurrence of `text` in the file."""
    content = path.read_text()
    at = -1
    for _ in range(nth):
        at = content.index(text, at + 1)
    line = content.count("\n", 0, at) + 1
    col = at - (content.rfind("\n", 0, at) + 1) + 1
    return f"{path.name}:{line}:{col}"


# -- what a rule reads ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "uses"),
    [
        ("buying_power < params.floor", {"floor": True}),
        ("params.a <= buying_power < params.a * params.ratio", {"a": True, "ratio": True}),
        ("daily_pnl < -params.max_loss", {"max_loss": True}),
        ("min(params.q, 1) > 0 and round(params.r) > 0", {"q": True, "r": True}),
        ("coalesce(params.x, 0) < 3", {"x": True}),
        ("(params.z if params.flag else 1) > 2", {"z": True, "flag": False}),
        ("params.n == 5", {"n": True}),
        ('params.n == "x"', {"n": False}),
        ("venue == params.v", {"v": False}),
        ("labels.tier < params.t", {"t": False}),
        ('params.s in "abc"', {"s": False}),
        ("present(params.y)", {"y": False}),
        ("params.enabled", {"enabled": False}),
    ],
)
def test_param_uses_says_which_params_are_used_as_numbers(expr: str, uses: dict[str, bool]) -> None:
    assert param_uses(compile_expression(expr)) == uses


def test_guarded_paths_are_those_tested_for_presence() -> None:
    expr = compile_expression("present(a.b) and coalesce(c, 0) > 0 and d > 0")
    assert guarded_paths(expr) == {"a.b", "c"}


def test_rule_params_include_templates_and_clear(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        """\
groups:
  - name: g
    rules:
      - alert: A
        expr: buying_power < params.floor
        clear: buying_power > params.floor + params.band
        params: {floor: 1, band: 2, shown: x}
        annotations: {summary: "{{ params.shown }}"}
"""
    )
    rules, _ = load_rules([path])
    reads = rule_params(rules.rules[0])
    assert {name: read.numeric for name, read in reads.items()} == {
        "band": True,
        "floor": True,
        "shown": False,
    }
    assert all(read.has_default for read in reads.values())
    assert set(params_read(rules.rules)) == {"band", "floor", "shown"}


@pytest.mark.parametrize(
    ("value", "numeric"),
    [
        (Decimal("25000"), True),
        (25000, True),
        ("25000.00", True),
        (" 1e5 ", True),
        ("50k", False),
        ("NaN", False),
        (True, False),
        (Decimal("Infinity"), False),
        (None, False),
    ],
)
def test_what_counts_as_a_number(value: object, numeric: bool) -> None:
    assert schema.is_number(value) is numeric


# -- riskmon check on a config and its rules ----------------------------------------------

RULES = """\
groups:
  - name: capital
    venues: [clearstreet]
    rules:
      - alert: BuyingPowerBelowFloor
        expr: buying_power < params.buying_power_floor
        params: {buying_power_floor: 25000}
        annotations: {summary: "{{ account }} below {{ params.buying_power_floor }}"}
  - name: polymarket
    venues: [polymarket]
    rules:
      - alert: ExcessCapitalLow
        expr: excess_capital < params.excess_capital_floor
        params: {excess_capital_floor: 1000}
"""


def config(folder: Path, accounts: str, rules: str = RULES) -> Path:
    (folder / "rules").mkdir(exist_ok=True)
    (folder / "rules" / "capital.yaml").write_text(rules)
    (folder / "cs.key").write_text("not-a-real-key")
    path = folder / "riskmon.yaml"
    path.write_text(
        f"""\
rules: ["rules/*.yaml"]
venues:
  - name: cs
    kind: clearstreet
    base_url: https://api.clearstreet.com
    api_key_file: cs.key
    accounts:
{accounts}"""
    )
    return path


def test_a_misspelt_account_param_is_an_error_with_a_did_you_mean(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        """\
      - id: "19816"
        params: {buying_power_flor: 50000}
      - id: "19817"
        params: {buying_power_floor: 40000}
""",
    )
    result = riskmon("check", "-c", "riskmon.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{place(path, 'buying_power_flor')}: params.buying_power_flor: no rule of venue 'cs' "
        "reads it; did you mean buying_power_floor?",
        "1 error, 0 warnings",
    ]


def test_a_param_only_another_venue_kinds_rules_read_says_so(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        """\
      - discover: true
        params: {excess_capital_floor: 5}
""",
    )
    result = riskmon("check", "-c", "riskmon.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == (
        f"{place(path, 'excess_capital_floor')}: params.excess_capital_floor: no rule of "
        "venue 'cs' reads it (ExcessCapitalLow reads it, but its group 'polymarket' is for "
        "venues [polymarket])"
    )


def test_a_param_that_is_not_a_number_where_a_rule_compares_it_is_an_error(
    tmp_path: Path,
) -> None:
    path = config(
        tmp_path,
        """\
      - id: "19816"
        params: {buying_power_floor: "50k"}
      - id: "19817"
        params: {buying_power_floor: "50000.00"}
""",
    )
    result = riskmon("check", "-c", "riskmon.yaml", cwd=tmp_path)
    assert result.returncode == 1
    rule = tmp_path / "rules" / "capital.yaml"
    assert result.stdout.splitlines() == [
        f"{place(path, QUOTED_50K)}: params.buying_power_floor: '50k' is not a number, but "
        f"BuyingPowerBelowFloor ({rule}:5:9) compares it with a number or computes with it",
        "1 error, 0 warnings",
    ]


def test_a_rule_default_that_is_not_a_number_is_an_error_at_the_default(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        """\
groups:
  - name: g
    rules:
      - alert: Floor
        expr: buying_power < params.floor
        params: {floor: 50k, desk: eq}
"""
    )
    result = riskmon("check", "r.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{place(path, '50k')}: params.floor: '50k' is not a number, but this rule compares "
        "it with a number or computes with it",
        "1 error, 0 warnings",
    ]


NO_DEFAULT = """\
groups:
  - name: capital
    venues: [clearstreet]
    rules:
      - alert: BuyingPowerDrop
        expr: sod.buying_power - buying_power > params.max_bp_dorp
        params: {max_bp_drop: 10000}
"""


def test_a_misspelt_param_in_a_rule_warns_with_a_did_you_mean(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(NO_DEFAULT)
    result = riskmon("check", "r.yaml", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"{place(path, 'params.max_bp_dorp')}: warning: params.max_bp_dorp has no default; "
        "did you mean params.max_bp_drop, a default of this rule? If not, accounts must set "
        "it (or add params: {max_bp_dorp: ...} to the rule)",
        "0 errors, 1 warning",
    ]
    strict = riskmon("check", "--strict", "r.yaml", cwd=tmp_path)
    assert (strict.returncode, strict.stdout) == (1, result.stdout)
    assert strict.stderr == "riskmon check: --strict: warnings count as errors\n"


def test_a_param_without_default_that_accounts_lack_is_an_error_naming_them(
    tmp_path: Path,
) -> None:
    path = config(
        tmp_path,
        """\
      - id: "19816"
        params: {max_bp_dorp: 5000}
      - id: "19817"
      - id: "19818"
      - discover: true
""",
        rules=NO_DEFAULT,
    )
    result = riskmon("check", "-c", "riskmon.yaml", cwd=tmp_path)
    assert result.returncode == 1
    rule = tmp_path / "rules" / "capital.yaml"
    assert result.stdout.splitlines() == [
        f"{place(path, QUOTED_19817)}: accounts '19817', '19818' and the discover entry of venue "
        f"'cs' do not set params.max_bp_dorp, which BuyingPowerDrop ({rule}:5:9) reads "
        "without a default; did the rule mean params.max_bp_drop, its default?",
        "venue cs: 3 configured accounts and those discovery finds (unknown until riskmon "
        "runs), 20 requests/s: 285 fit at max_poll_interval 15s",
        "1 error, 0 warnings",
    ]


def test_a_param_without_default_that_every_account_sets_is_fine(tmp_path: Path) -> None:
    config(
        tmp_path,
        """\
      - id: "19816"
        params: {max_bp_dorp: 5000}
""",
        rules=NO_DEFAULT,
    )
    result = riskmon("check", "--strict", "-c", "riskmon.yaml", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, "ok: 1 rule in 1 file\n"), result.stderr


def test_check_strict_fails_on_warnings_and_passes_clean_files(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(
        "groups:\n  - name: g\n    venues: [clearstreet]\n    rules:\n"
        "      - alert: A\n        expr: buying_powr < 0\n"
    )
    assert riskmon("check", "w.yaml", cwd=tmp_path).returncode == 0
    strict = riskmon("check", "--strict", "w.yaml", cwd=tmp_path)
    assert strict.returncode == 1
    assert "did you mean buying_power?" in strict.stdout


def test_the_shipped_rules_pass_check_strict() -> None:
    result = riskmon(
        "check", "--strict", *sorted(str(p) for p in (ROOT / "rules").glob("*.yaml")), cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: ")


def test_the_makefile_gates_on_check_strict() -> None:
    unit = (ROOT / "Makefile").read_text().split("\nunit:", 1)[1].split("\n\n", 1)[0]
    assert "riskmon check --strict rules/*.yaml" in unit


def test_a_deprecated_field_the_rule_tests_for_presence_is_no_warning(tmp_path: Path) -> None:
    path = tmp_path / "pdt.yaml"
    path.write_text(
        """\
groups:
  - name: pdt
    venues: [clearstreet]
    rules:
      - alert: Guarded
        expr: present(pattern_day_trader) and pattern_day_trader
        annotations: {summary: "{{ pattern_day_trader }}"}
      - alert: Unguarded
        expr: day_trade_count > 3
"""
    )
    result = riskmon("check", "pdt.yaml", cwd=tmp_path)
    lines = result.stdout.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{place(path, 'day_trade_count')}: warning: day_trade_count")


# -- riskmon replay ------------------------------------------------------------------------


@pytest.fixture
def recording(tmp_path: Path) -> Path:
    path = tmp_path / "snapshots.jsonl"
    with path.open("w") as out:
        for t, bp in enumerate([60000, 20000, 20000, 20000, 20000, 20000]):
            snapshot = Snapshot(
                venue="cs",
                venue_kind="clearstreet",
                account="19816",
                fields={"buying_power": Decimal(bp)},
                taken_at=t * 10.0,
            )
            write_record(snapshot, out)
    return path


@pytest.mark.parametrize(
    "order",
    [
        ["-r", "rules/capital.yaml", "{rec}"],
        ["{rec}", "-r", "rules/capital.yaml", "rules/margin.yaml"],
        ["-r", "rules/capital.yaml", "-r", "rules/margin.yaml", "{rec}"],
        ["-r", "rules/capital.yaml", "rules/margin.yaml", "{rec}", "{rec}"],
    ],
)
def test_replay_takes_rules_and_recordings_in_either_order(
    recording: Path, order: list[str]
) -> None:
    args = [a.replace("{rec}", str(recording)) for a in order]
    result = riskmon("replay", *args, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    snapshots = 6 * args.count(str(recording))
    assert f"{snapshots} snapshot(s)" in result.stdout.splitlines()[-1]
    assert "BuyingPowerBelowFloor" in result.stdout


def test_replay_without_a_recording_says_so(tmp_path: Path) -> None:
    result = riskmon("replay", "-r", str(ROOT / "rules" / "capital.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "riskmon replay: no recording given (FILE.jsonl)\n"


def test_replay_set_of_a_param_no_rule_reads_is_an_error(recording: Path) -> None:
    result = riskmon(
        "replay",
        str(recording),
        "-r",
        "rules/capital.yaml",
        "--set",
        "params.buying_power_flor=1",
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "riskmon replay: --set params.buying_power_flor: no rule of the rule files reads it; "
        "did you mean params.buying_power_floor?\n"
    )
    assert result.stdout == ""


def test_replay_set_of_a_non_number_where_a_rule_compares_it_is_an_error(
    recording: Path,
) -> None:
    result = riskmon(
        "replay",
        str(recording),
        "-r",
        "rules/capital.yaml",
        "--set",
        "params.buying_power_floor=50k",
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        "riskmon replay: --set params.buying_power_floor=50k: not a number, but "
        "BuyingPowerNearFloor (rules/capital.yaml:"
    )


# -- riskmon test ----------------------------------------------------------------------------


def test_a_rule_test_whose_venue_kind_matches_no_group_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "capital.yaml").write_text(RULES)
    test = tmp_path / "capital_test.yaml"
    test.write_text(
        """\
rule_files: [capital.yaml]
tests:
  - name: floor
    venue_kind: clearsteet
    account: {id: "19816"}
    series: {buying_power: "1"}
    expect:
      - at: 0s
        firing: []
"""
    )
    result = riskmon("test", "capital_test.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{place(test, 'clearsteet')}: venue_kind 'clearsteet' matches no group of the rule "
        "files (their groups are for venues: clearstreet, polymarket); did you mean "
        "'clearstreet'?",
        "0 passed, 1 failed",
    ]
