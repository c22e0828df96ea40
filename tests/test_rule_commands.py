"""The evaluator, built-in alerts, `riskmon test` and `riskmon replay`."""

from __future__ import annotations

import dataclasses
import decimal
import io
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from monitor.config.model import BuiltinAlertsConfig, BuiltinAlertSettings
from monitor.engine.builtin import (
    AccountHealth,
    builtin_rules,
    could_be_stale,
    health_snapshots,
)
from monitor.engine.evaluate import Evaluator
from monitor.engine.lifecycle import AlertBook, AlertPhase
from monitor.engine.replay import parse_overrides, run_replay
from monitor.engine.rulefile import load_rules
from monitor.engine.testing import parse_series
from monitor.recording import read_records, snapshot_from_record, snapshot_record, write_record
from monitor.snapshot import Snapshot
from monitor.venue_fields import decimal_fields_map
from monitor.venues.clearstreet import ClearStreetAdapter

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
D = Decimal


def snap(
    account: str = "19816", t: float = 0.0, params: dict[str, Any] | None = None, **fields: Any
) -> Snapshot:
    return Snapshot(
        venue="cs",
        venue_kind="clearstreet",
        account=account,
        taken_at=t,
        fields={k.replace("__", "."): v for k, v in fields.items()},
        params=params or {},
    )


@pytest.fixture(scope="module")
def shipped() -> Any:
    rules, _warnings = load_rules(sorted(RULES.glob("*.yaml")))
    return rules


# -- series notation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("1 2 3", [D(1), D(2), D(3)]),
        ("5x2", [D(5)] * 3),
        ("1+2x3", [D(1), D(3), D(5), D(7)]),
        ("10-1.5x2", [D(10), D("8.5"), D(7)]),
        ("true false", [True, False]),
    ],
)
def test_series_notation(text: str, values: list[Any]) -> None:
    assert parse_series(text) == values


def test_series_missing_values() -> None:
    values = parse_series("1 _x1 2")
    assert values[0] == 1
    assert values[3] == 2
    assert len(values) == 4
    assert values[1] is values[2]  # the missing marker


@pytest.mark.parametrize("text", ["1 x", "abc", "true+1x2", "1x9999999"])
def test_bad_series_terms_say_which(text: str) -> None:
    with pytest.raises(ValueError, match="series term"):
        parse_series(text)


# -- the evaluator ------------------------------------------------------------------------


def test_account_params_override_rule_defaults(shipped: Any) -> None:
    evaluator = Evaluator(shipped)
    low = {"buying_power_floor": D(50000)}
    assert evaluator.evaluate(snap(buying_power=D(40000), params=low), 0) == []
    events = evaluator.evaluate(snap(buying_power=D(40000), params=low), 30)
    assert [(e.alertname, e.status) for e in events] == [("BuyingPowerBelowFloor", "firing")]
    assert events[0].values == {"buying_power": "40000"}
    # the default floor (25000) is not breached by another account at 40000
    assert evaluator.evaluate(snap("2", buying_power=D(40000)), 60) == []


def test_an_active_alert_resolves_when_every_condition_turns_false(shipped: Any) -> None:
    """Accounts with nothing active skip the per-rule work; one with an alert does not."""
    evaluator = Evaluator(shipped)
    [fired] = evaluator.evaluate(snap(margin_details__maintenance_margin_excess=D(-1)), 0)
    assert (fired.alertname, fired.status) == ("MaintenanceMarginCall", "firing")
    assert evaluator.book.holds_any("cs", "19816")
    assert not evaluator.book.holds_any("cs", "other")
    [resolved] = evaluator.evaluate(snap(margin_details__maintenance_margin_excess=D(1)), 10)
    assert (resolved.alertname, resolved.status) == ("MaintenanceMarginCall", "resolved")
    assert not evaluator.book.holds_any("cs", "19816")
    assert evaluator.evaluate(snap(margin_details__maintenance_margin_excess=D(1)), 20) == []


def test_real_clear_street_answer_through_the_shipped_rules(shipped: Any) -> None:
    import json

    data = json.loads(
        (ROOT / "tests/data/cs_balances_margin.json").read_text(), parse_float=Decimal
    )["data"]
    data["margin_details"]["maintenance_margin_excess"] = "-1500.00"
    fields = ClearStreetAdapter.parse_balances(data, "19816")
    evaluator = Evaluator(shipped)
    events = evaluator.evaluate(
        snap(**{})
        if False
        else Snapshot(
            venue="cs",
            venue_kind="clearstreet",
            account="19816",
            fields=fields,
            taken_at=0.0,
        ),
        0.0,
    )
    assert {e.alertname for e in events} == {"MaintenanceMarginCall"}
    assert events[0].annotations["summary"] == (
        "cs/19816 maintenance margin excess -1500.00: margin call"
    )
    assert events[0].labels == {"team": "risk", "page": "true"}


def test_evaluation_errors_are_counted_and_never_raise(shipped: Any) -> None:
    failures: list[str] = []
    evaluator = Evaluator(shipped, on_eval_failure=lambda rule, s, e: failures.append(rule.alert))
    zero_total = snap(margin_details__usage__used=D(5), margin_details__usage__total=D(0))
    assert evaluator.evaluate(zero_total, 0) == []
    assert "MarginUtilisationHigh" in failures
    assert evaluator.evaluation_failures == len(failures)
    assert evaluator.evaluate(snap(buying_power="lots"), 1) == []


def test_rules_apply_only_to_the_venues_their_group_selects(shipped: Any) -> None:
    evaluator = Evaluator(shipped)
    pmx = Snapshot(
        venue="pmx",
        venue_kind="polymarket",
        account="a",
        taken_at=0,
        fields={"buying_power": D(-5), "excess_capital": D(5000)},
    )
    events = evaluator.evaluate(pmx, 0)
    assert {e.alertname for e in events} == set()  # BuyingPowerExhausted waits 30s
    assert {a.alertname for a in evaluator.book.active()} == {"BuyingPowerExhausted"}


def test_a_reload_keeps_state_of_rules_that_stay_and_resolves_removed_ones(
    shipped: Any, tmp_path: Path
) -> None:
    evaluator = Evaluator(shipped)
    evaluator.evaluate(snap(margin_details__maintenance_margin_excess=D(-1)), 0)
    evaluator.evaluate(snap(buying_power=D(1)), 0)
    assert {a.alertname for a in evaluator.book.active()} == {
        "MaintenanceMarginCall",
        "BuyingPowerBelowFloor",
    }
    fewer, _ = load_rules([RULES / "margin.yaml"])
    events = evaluator.replace_rules(fewer, 10)
    assert [a.alertname for a in evaluator.book.active()] == ["MaintenanceMarginCall"]
    assert events == []  # the removed one was only pending


# -- built-in data-quality alerts -------------------------------------------------------------


def health(account: str, age: float, failures: int = 0, auth: bool = False) -> AccountHealth:
    return AccountHealth(
        "cs", "clearstreet", account, age, 30.0, failures, "boom" if failures else None, auth
    )


def test_stale_accounts_and_venue_wide_alerts() -> None:
    at_once = BuiltinAlertsConfig(alerts={"VenueDown": BuiltinAlertSettings(for_=0.0)})
    evaluator = Evaluator(builtin_rules(at_once), AlertBook())

    def run(now: float, *accounts: AccountHealth) -> set[tuple[str, str, str]]:
        events = []
        for snapshot in health_snapshots(accounts, now):
            events += evaluator.evaluate(snapshot, now)
        return {(e.alertname, e.account, e.status) for e in events}

    assert run(0, health("1", 5), health("2", 5)) == set()
    assert run(1, health("1", 31, failures=3), health("2", 5)) == {
        ("AccountDataStale", "1", "firing")
    }
    assert run(2, health("1", 40, failures=4), health("2", 40, failures=1)) == {
        ("AccountDataStale", "2", "firing"),
        ("VenueDown", "*", "firing"),
    }
    assert run(3, health("1", 0), health("2", 0, failures=1, auth=True)) == {
        ("AccountDataStale", "1", "resolved"),
        ("AccountDataStale", "2", "resolved"),
        ("VenueDown", "*", "resolved"),
        ("VenueAuthFailed", "*", "firing"),
    }
    stale = evaluator.book.active()
    assert [a.alertname for a in stale] == ["VenueAuthFailed"]
    assert stale[0].phase is AlertPhase.FIRING


@pytest.mark.parametrize(
    ("age", "stale_after", "could"),
    [
        (5.0, 30.0, False),
        (29.85, 30.0, False),  # read as 29.8 or 29.9: fresh either way
        (29.95, 30.0, True),  # read as 30.0: not above 30, but too close to tell cheaply
        (30.04, 30.0, True),
        (31.0, 30.0, True),
        (1234560.5, 1234564.9, True),  # stale_after is read as 1.23456e+06
    ],
)
def test_could_be_stale_is_false_only_when_the_rule_surely_is(
    age: float, stale_after: float, could: bool
) -> None:
    account = AccountHealth("cs", "clearstreet", "1", age, stale_after, 0)
    assert could_be_stale(account) is could
    if not could:  # then the rule cannot fire: skipping the account changes nothing
        evaluator = Evaluator(builtin_rules(), AlertBook())
        for snapshot in health_snapshots([account], 0.0):
            assert evaluator.evaluate(snapshot, 0.0) == []


def test_skipped_accounts_still_count_in_their_venue() -> None:
    accounts = [health("1", 5, failures=2), health("2", 40, failures=1)]
    snapshots = health_snapshots(accounts, 0.0, skip=lambda h: h.account == "1")
    assert [s.account for s in snapshots] == ["2", "*"]
    venue = snapshots[-1].fields
    assert (venue["accounts"], venue["failing_accounts"]) == (D(2), D(2))


# -- riskmon test -------------------------------------------------------------------------------


def riskmon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_shipped_rule_tests_pass() -> None:
    result = riskmon("test", *sorted(str(p) for p in (RULES / "tests").glob("*.yaml")))
    assert result.returncode == 0, result.stdout
    assert " 0 failed" in result.stdout.splitlines()[-1]


def test_a_failing_rule_test_prints_a_diff_and_exits_1(tmp_path: Path) -> None:
    test = tmp_path / "t.yaml"
    test.write_text(
        f"rule_files: [{RULES / 'capital.yaml'}]\n"
        "tests:\n"
        "  - name: wrong on purpose\n"
        "    venue_kind: clearstreet\n"
        "    account: {venue: cs, id: '1'}\n"
        "    interval: 10s\n"
        "    series: {buying_power: '1000x5'}\n"
        "    expect:\n"
        "      - at: 10s\n"
        "        firing: [BuyingPowerBelowFloor]\n"
    )
    result = riskmon("test", str(test))
    assert result.returncode == 1
    assert "FAIL" in result.stdout
    assert "expected [BuyingPowerBelowFloor]\n      got      []" in result.stdout
    assert "0 passed, 1 failed" in result.stdout


def test_a_broken_test_file_names_the_place(tmp_path: Path) -> None:
    test = tmp_path / "t.yaml"
    test.write_text(
        f"rule_files: [{RULES / 'capital.yaml'}]\ntests:\n  - name: x\n"
        "    venue_kind: clearstreet\n    serie: {}\n"
    )
    result = riskmon("test", str(test))
    assert result.returncode == 1
    assert f"{test}:5:5: unknown key 'serie'" in result.stdout


# -- recording and replay -------------------------------------------------------------------


def test_records_round_trip_exactly() -> None:
    fields = ClearStreetAdapter.parse_balances(
        {"account_id": 1, "buying_power": "10.50", "margin_details": {"usage": {"used": "1"}}},
        "1",
    )
    original = Snapshot(
        venue="cs",
        venue_kind="clearstreet",
        account="1",
        fields=fields,
        taken_at=12.5,
        labels={"desk": "eq"},
        params={"floor": D("2.5")},
    )
    copy = snapshot_from_record(snapshot_record(original))
    assert copy == original


def test_replay_prints_transitions_and_answers_what_ifs(tmp_path: Path) -> None:
    recording = tmp_path / "snapshots.jsonl"
    with recording.open("w") as out:
        for t, bp in enumerate([60000, 45000, 45000, 45000, 45000, 30000, 30000, 30000, 60000]):
            write_record(snap("19816", t * 10.0, buying_power=D(bp)), out)
    assert len(list(read_records(recording))) == 9
    rules, _ = load_rules([RULES / "capital.yaml"])

    def transitions(**overrides: str) -> list[str]:
        out = io.StringIO()
        run_replay(
            [str(recording)],
            rules,
            parse_overrides([f"params.{k}={v}" for k, v in overrides.items()]),
            out,
        )
        return out.getvalue().splitlines()

    default = transitions()
    assert default[-1].startswith("9 snapshot(s), 0 transition(s)")
    what_if = transitions(buying_power_floor="50000")
    assert any(
        "firing    critical  BuyingPowerBelowFloor  cs/19816  buying_power=45000" in line
        for line in what_if
    )
    assert any("resolved" in line and "BuyingPowerBelowFloor" in line for line in what_if)


def test_replay_refuses_a_bad_override() -> None:
    with pytest.raises(ValueError, match=r"params\.NAME=VALUE"):
        parse_overrides(["floor=1"])


def test_replay_of_a_missing_recording_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    result = riskmon("replay", str(missing), "-r", "rules/capital.yaml")
    assert result.returncode == 1
    assert result.stderr == f"{missing}:1:1: cannot read: No such file or directory\n"
    assert result.stdout == ""


def test_replay_of_a_recording_that_is_not_text_names_the_line(tmp_path: Path) -> None:
    recording = tmp_path / "snapshots.jsonl"
    with recording.open("w") as out:
        write_record(snap("19816", 0.0, buying_power=D(60000)), out)
    with recording.open("ab") as out:
        out.write(b"\xff\xfe\n")
    result = riskmon("replay", str(recording), "-r", "rules/capital.yaml")
    assert result.returncode == 1
    assert result.stderr == f"{recording}:2:1: not UTF-8 text: invalid start byte\n"


def test_replay_with_rules_that_match_no_file_names_the_pattern(tmp_path: Path) -> None:
    """A typo in -r must not read as "0 transitions", all clear."""
    recording = tmp_path / "snapshots.jsonl"
    with recording.open("w") as out:
        write_record(snap("19816", 0.0, buying_power=D(1)), out)
    result = riskmon("replay", str(recording), "-r", "rules/capital.yaml", "rules/nope*.yaml")
    assert result.returncode == 1
    assert result.stderr == "riskmon replay: -r: no rule file matches 'rules/nope*.yaml'\n"
    assert result.stdout == ""


@pytest.mark.parametrize("template", ["margin", "cash", "legacy_pdt"])
def test_the_shipped_rules_take_the_fast_path_on_a_current_clear_street_answer(
    shipped: Any, template: str
) -> None:
    """The generated fast block serves a current margin account's answer (deprecated PDT
    fields absent) without falling back to the per-rule slow function. The results are
    the same either way, but a fall back pays for the failed attempt too: when it fell
    back on every snapshot, the shipped and benchmark rules cost 5.3 us a snapshot
    instead of 4.0. Other shapes may fall back; their results still agree."""
    import json

    from monitor.engine.expr import CONTEXT
    from monitor.simulator.templates import CS_TEMPLATES

    data = json.loads(CS_TEMPLATES[template].json_body, parse_float=Decimal)
    snapshot = Snapshot(
        venue="cs",
        venue_kind="clearstreet",
        account="19816",
        fields=ClearStreetAdapter.parse_balances(data, "19816"),
        taken_at=0.0,
        decimal_fields=ClearStreetAdapter.schema.decimal_paths,  # as the adapter's
    )
    program = Evaluator(shipped, decimal_fields=decimal_fields_map())._program("cs", "clearstreet")
    run = program.compiled.run
    namespace = run.__globals__  # the generated module's: `_slow` is one of its functions
    slow = namespace["_slow"]
    slow_calls: list[Snapshot] = []

    def spy(s: Snapshot, pp: Any) -> list[Any]:
        slow_calls.append(s)
        return list(slow(s, pp))

    namespace["_slow"] = spy
    try:
        with decimal.localcontext(CONTEXT):
            results = run(snapshot, program.defaults)
            expected = slow(snapshot, program.defaults[1])
    finally:
        namespace["_slow"] = slow
    assert results == expected
    if template == "margin":
        assert slow_calls == []
        # the parser vouched for the numbers' types: the fast block checks fewer of them
        # than in an equal snapshot built elsewhere, for the same results
        checked: list[Any] = []
        namespace["_type"] = lambda value: checked.append(value) or type(value)
        try:
            with decimal.localcontext(CONTEXT):
                assert run(snapshot, program.defaults) == expected
                vouched = len(checked)
                elsewhere = dataclasses.replace(snapshot, decimal_fields=frozenset())
                assert run(elsewhere, program.defaults) == expected
        finally:
            namespace["_type"] = type
        assert vouched < len(checked) - vouched
