"""Inhibition and silences in the engine: `monitor.engine.suppress` (Alertmanager's
meaning of inhibit rules) and `monitor.engine.announce` (which events reach the pager)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from monitor.engine.announce import SETTLE_POLLS, Announcer
from monitor.engine.evaluate import Evaluator
from monitor.engine.lifecycle import Alert, AlertBook, AlertEvent, AlertPhase
from monitor.engine.model import InhibitRule
from monitor.engine.rulefile import load_rules, load_rules_partial
from monitor.engine.suppress import (
    BUILTIN_INHIBIT_RULES,
    NOT_SUPPRESSED,
    Silence,
    suppression_of,
    suppressions,
)
from monitor.schema import parse_matcher
from monitor.snapshot import Snapshot


def firing(alertname: str, venue: str, account: str, **labels: str) -> Alert:
    return Alert(
        rule_key=f"g/{alertname}",
        alertname=alertname,
        severity=labels.pop("severity", "critical"),
        venue=venue,
        venue_kind="clearstreet",
        account=account,
        labels=dict(labels),
        fingerprint=f"{alertname}-{venue}-{account}",
        phase=AlertPhase.FIRING,
        active_at=0.0,
        fired_at=0.0,
    )


def rule(source: str, target: str, *equal: str) -> InhibitRule:
    return InhibitRule((parse_matcher(source),), (parse_matcher(target),), equal)


def silence(*matchers: str, starts_at: float = 0, ends_at: float = 100, sid: str = "s1") -> Silence:
    return Silence(
        id=sid,
        matchers=tuple(parse_matcher(m) for m in matchers),
        starts_at=starts_at,
        ends_at=ends_at,
        created_by="me",
        comment="test",
        updated_at=0,
    )


def test_the_builtin_storm_rules_inhibit_every_account_of_the_venue_only() -> None:
    down = firing("VenueDown", "cs", "*")
    stale = [firing("AccountDataStale", "cs", str(n)) for n in range(3)]
    other = firing("AccountDataStale", "pmx", "main")
    breach = firing("BuyingPowerBelowFloor", "cs", "0")
    found = suppressions([down, *stale, other, breach], BUILTIN_INHIBIT_RULES, (), 0)
    assert {fp: s.inhibited_by for fp, s in found.items()} == {
        alert.fingerprint: (down.fingerprint,) for alert in stale
    }


def test_auth_failure_inhibits_venue_down_and_stale_accounts() -> None:
    auth = firing("VenueAuthFailed", "cs", "*")
    down = firing("VenueDown", "cs", "*")
    stale = firing("AccountDataStale", "cs", "1")
    found = suppressions([auth, down, stale], BUILTIN_INHIBIT_RULES, (), 0)
    assert found[down.fingerprint].inhibited_by == (auth.fingerprint,)
    assert set(found[stale.fingerprint].inhibited_by) == {auth.fingerprint, down.fingerprint}
    assert auth.fingerprint not in found


def test_equal_labels_must_agree_and_a_label_both_lack_is_equal() -> None:
    below = firing("BuyingPowerBelowFloor", "cs", "1")
    near_same = firing("BuyingPowerNearFloor", "cs", "1")
    near_other = firing("BuyingPowerNearFloor", "cs", "2")
    inhibit = rule(
        'alertname="BuyingPowerBelowFloor"', 'alertname="BuyingPowerNearFloor"', "venue",
        "account", "desk",
    )  # fmt: skip
    found = suppressions([below, near_same, near_other], [inhibit], (), 0)
    assert list(found) == [near_same.fingerprint]


def test_pending_alerts_neither_inhibit_nor_are_inhibited() -> None:
    down = firing("VenueDown", "cs", "*")
    down.phase = AlertPhase.PENDING
    stale = firing("AccountDataStale", "cs", "1")
    assert suppressions([down, stale], BUILTIN_INHIBIT_RULES, (), 0) == {}


def test_an_alert_matching_both_sides_is_not_inhibited_by_its_peers() -> None:
    # Alertmanager's rule: two alerts of one band do not hold each other back
    a = firing("Band", "cs", "1", tier="x")
    b = firing("Band", "cs", "2", tier="x")
    assert suppressions([a, b], [rule('alertname="Band"', 'alertname="Band"', "tier")], (), 0) == {}


def test_silences_match_all_their_matchers_while_active() -> None:
    alert = firing("BuyingPowerBelowFloor", "cs", "19816", desk="eq")
    matching = silence('alertname="BuyingPowerBelowFloor"', 'desk=~"e.*"', sid="a")
    other = silence('alertname="BuyingPowerBelowFloor"', "account=1", sid="b")
    later = silence("venue=cs", starts_at=50, sid="c")
    assert suppressions([alert], (), [matching, other, later], 10)[
        alert.fingerprint
    ].silenced_by == ("a",)
    assert suppressions([alert], (), [matching, other, later], 60)[
        alert.fingerprint
    ].silenced_by == ("a", "c")
    assert suppressions([alert], (), [matching, other, later], 100) == {}  # ended


# -- the announcer -----------------------------------------------------------------------

RULES = """\
groups:
  - name: g
    rules:
      - alert: Low
        expr: x < 10
        severity: critical
      - alert: Band
        expr: x < 20
        severity: warning
inhibit_rules:
  - source_matchers: ['alertname="Low"']
    target_matchers: ['alertname="Band"']
    equal: [venue, account]
"""


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        (tmp_path / "r.yaml").write_text(RULES)
        self.rules, _ = load_rules([tmp_path / "r.yaml"])
        self.book = AlertBook()
        self.evaluator = Evaluator(self.rules, self.book)
        self.silences: list[Silence] = []
        self.polls = 0
        self.announcer = Announcer(
            lambda: self.rules.inhibit_rules, lambda: self.silences, lambda v, a: self.polls
        )

    def observe(self, x: int, now: float) -> list[AlertEvent]:
        snapshot = Snapshot(
            venue="cs", venue_kind="clearstreet", account="1", fields={"x": Decimal(x)},
            taken_at=now,
        )  # fmt: skip
        self.polls += 1
        events = self.evaluator.evaluate(snapshot, now)
        return self.announcer.filter(events, self.book, now)

    def refresh(self, now: float) -> list[AlertEvent]:
        return self.announcer.refresh(self.book, now).events


def said(events: list[AlertEvent]) -> list[tuple[str, str, bool]]:
    return [(e.alertname, e.status, e.announced) for e in events]


def test_a_silenced_firing_and_its_resolve_are_not_announced(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.silences = [silence("alertname=Low")]
    # a silenced source still inhibits (as in Alertmanager)
    assert said(h.observe(5, 1)) == [("Low", "firing", False), ("Band", "firing", False)]
    (low,) = [a for a in h.book.firing() if a.alertname == "Low"]
    assert (low.announced, low.silenced_by) == (False, ("s1",))
    assert h.refresh(2) == []
    assert said(h.observe(50, 3)) == [("Low", "resolved", False), ("Band", "resolved", False)]


def test_an_announced_firing_resolves_aloud_even_while_silenced(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    assert said(h.observe(5, 1))[0] == ("Low", "firing", True)
    h.silences = [silence("alertname=Low")]
    found = h.announcer.refresh(h.book, 2)
    assert found.events == []
    assert [a.alertname for a in found.retained] == ["Low"]  # its retained message changes
    (resolved, _) = h.observe(50, 3)
    assert (resolved.status, resolved.announced, resolved.silenced_by) == (
        "resolved",
        True,
        ("s1",),
    )


def test_the_end_of_a_silence_announces_a_still_firing_alert_once(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.silences = [silence("alertname=Low", ends_at=10)]
    h.observe(5, 1)
    assert h.refresh(5) == []
    (late,) = h.refresh(10)
    assert (late.alertname, late.status, late.announced, late.starts_at, late.at) == (
        "Low",
        "firing",
        True,
        1,
        10,
    )
    assert h.refresh(11) == []
    assert said(h.observe(50, 12))[0] == ("Low", "resolved", True)


def test_an_inhibited_alert_is_announced_after_its_account_is_polled_again(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    assert said(h.observe(5, 1)) == [("Low", "firing", True), ("Band", "firing", False)]
    (band,) = [a for a in h.book.firing() if a.alertname == "Band"]
    (low,) = [a for a in h.book.firing() if a.alertname == "Low"]
    assert band.inhibited_by == (low.fingerprint,)
    assert said(h.observe(15, 2)) == [("Low", "resolved", True)]
    assert h.refresh(3) == []  # the inhibition ended: the account's polls count from here
    for n in range(SETTLE_POLLS - 1):
        h.observe(15, 4 + n)
        assert h.refresh(4.5 + n) == []
    h.observe(15, 10)
    assert said(h.refresh(11)) == [("Band", "firing", True)]


def test_an_inhibited_alert_that_resolves_while_it_settles_says_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.observe(5, 1)
    h.observe(15, 2)  # Low resolves; Band no longer inhibited, waits for polls
    assert h.refresh(3) == []
    assert said(h.observe(50, 4)) == [("Band", "resolved", False)]
    assert h.refresh(5) == []


def test_state_saved_before_suppression_existed_counts_as_announced() -> None:
    alert = firing("Low", "cs", "1")
    saved = alert.to_dict()
    for key in ("announced", "inhibited_by", "silenced_by"):
        del saved[key]
    restored = Alert.from_dict(saved)
    assert (restored.announced, restored.inhibited_by) == (True, ())
    alert.announced, alert.silenced_by = False, ("s1",)
    again = Alert.from_dict(alert.to_dict())
    assert (again.announced, again.silenced_by) == (False, ("s1",))


# -- inhibit_rules in rule files ---------------------------------------------------------


def test_inhibit_rules_are_read_with_alertmanagers_matchers(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RULES)
    rules, _ = load_rules([tmp_path / "r.yaml"])
    (inhibit,) = rules.inhibit_rules
    assert [str(m) for m in inhibit.source] == ['alertname="Low"']
    assert [str(m) for m in inhibit.target] == ['alertname="Band"']
    assert inhibit.equal == ("venue", "account")
    assert str(inhibit.location) == f"{tmp_path / 'r.yaml'}:11:5"


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (
            "inhibit_rules:\n  - source_matchers: ['alertname=~\"(\"']\n"
            "    target_matchers: [alertname=B]\n",
            ["2:35: source_matchers[0]: invalid regular expression '(': missing ), "
             "unterminated subpattern"],
        ),
        (
            "inhibit_rules:\n  - source_matchers: [alertname=A]\n"
            "    target_matchers: ['alertname B']\n    equal: [venue, 2x]\n",
            ["3:24: target_matchers[0]: expected a label matcher such as "
             'severity="critical", team=~"risk|ops" or env!="test"',
             "4:20: equal: '2x' is not a label name (letters, digits and _, not starting "
             "with a digit)"],
        ),
        (
            "inhibit_rules:\n  - source_matchers: alertname=A\n    equal: venue\n",
            ["2:5: missing required key 'target_matchers' in inhibit rule 1",
             "2:22: source_matchers: expected a list of label matchers such as "
             "['alertname=\"VenueDown\"'], got 'alertname=A'",
             "3:12: equal: expected a list of label names, got 'venue'"],
        ),
        (
            "inhibit_rules:\n  - source_matchers: [alertname=A]\n"
            "    target_matchers: [alertname=B]\n    equals: [venue]\n",
            ["4:5: unknown key 'equals' in inhibit rule 1; did you mean 'equal'?"],
        ),
    ],
)  # fmt: skip
def test_mistakes_in_inhibit_rules_are_placed(
    tmp_path: Path, text: str, problems: list[str]
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    loaded = load_rules_partial([path])
    assert [str(p).removeprefix(f"{path}:") for p in loaded.errors] == problems


def test_one_alerts_suppression_agrees_with_the_whole_books() -> None:
    alerts = [
        firing("VenueAuthFailed", "cs", "*"),
        firing("VenueDown", "cs", "*"),
        firing("AccountDataStale", "cs", "1"),
        firing("AccountDataStale", "pmx", "2"),
        firing("Band", "cs", "1", tier="x"),
        firing("Band", "cs", "2", tier="x"),
        firing("BuyingPowerBelowFloor", "cs", "1"),
        firing("BuyingPowerNearFloor", "cs", "1"),
    ]
    rules = [
        *BUILTIN_INHIBIT_RULES,
        rule('alertname="Band"', 'alertname="Band"', "tier"),
        rule('alertname=~"Buying.*Below.*"', 'severity="critical"', "venue", "account"),
    ]
    silences = [silence("venue=pmx")]
    whole = suppressions(alerts, rules, silences, 10)
    for alert in alerts:
        assert suppression_of(alert, alerts, rules, silences, 10) == whole.get(
            alert.fingerprint, NOT_SUPPRESSED
        ), alert.alertname
    assert whole  # the scenario suppresses something


def test_an_inhibit_rule_naming_no_known_alert_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        RULES
        + "  - source_matchers: ['alertname=\"Lwo\"']\n"
        + "    target_matchers: [alertname=AccountDataStale]\n"  # a built-in one: known
    )
    loaded = load_rules_partial([path])
    assert loaded.errors == []
    assert [str(p).removeprefix(f"{path}:") for p in loaded.warnings] == [
        "14:5: warning: inhibit rule: source alertname 'Lwo' is no alert of these rule files "
        "nor a built-in one; did you mean 'Low'?"
    ]
