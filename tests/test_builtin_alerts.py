"""The built-in alerts: their `for`, `builtin_alerts` in the config, the runbook URL
template every alert shares, and AccountDataStale held back while VenueDown waits.

End to end (`riskmon run`, the simulator's 503s, Mosquitto) in the second half."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import MqttCollector
from test_daemon import RiskmonProcess, events, riskmon_process

from monitor.config.loader import parse_config
from monitor.config.model import BuiltinAlertsConfig, BuiltinAlertSettings
from monitor.engine.builtin import (
    AccountHealth,
    StaleHold,
    builtin_rules,
    evaluate_health,
    riskmon_snapshot,
)
from monitor.engine.check import lint_rules
from monitor.engine.evaluate import Evaluator
from monitor.engine.lifecycle import AlertBook, AlertEvent
from monitor.engine.rulefile import load_rules
from monitor.engine.runbook import runbook_template
from monitor.simulator import Simulator
from monitor.snapshot import Snapshot
from monitor.venue_fields import kind_fields_map
from monitor.yamlsource import SourceError

ROOT = Path(__file__).resolve().parent.parent

CS = """\
venues:
  - name: cs
    kind: clearstreet
    base_url: https://api.clearstreet.com
    api_key_file: cs.key
    accounts:
      - id: "19816"
"""


def parse(tmp_path: Path, text: str) -> BuiltinAlertsConfig:
    (tmp_path / "cs.key").write_text("cs-key-value\n")
    return parse_config(CS + text, "riskmon.yaml", base_dir=tmp_path, environ={}).builtin_alerts


def errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SourceError) as info:
        parse(tmp_path, text)
    return [str(p) for p in info.value.problems]


# -- the config ---------------------------------------------------------------------------


def test_builtin_alerts_are_read_from_the_config(tmp_path: Path) -> None:
    settings = parse(
        tmp_path,
        """\
builtin_alerts:
  runbook_url: https://runbooks.acme.internal/riskmon/{{ alertname }}
  VenueDown: {for: 1m, severity: error}
  AccountDataStale: {for: 0s, labels: {team: risk}}
""",
    )
    assert settings.runbook_url == "https://runbooks.acme.internal/riskmon/{{ alertname }}"
    assert settings.of("VenueDown") == BuiltinAlertSettings(for_=60.0, severity="error")
    assert settings.of("AccountDataStale") == BuiltinAlertSettings(
        for_=0.0, labels={"team": "risk"}
    )
    assert settings.of("VenueAuthFailed") == BuiltinAlertSettings()


def test_the_example_config_shows_builtin_alerts(tmp_path: Path) -> None:
    text = (ROOT / "examples" / "riskmon.yaml").read_text()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "clearstreet-api-key").write_text("demo-key\n")
    (tmp_path / "secrets" / "pmx-demo.pem").write_text(
        "-----BEGIN PRIVATE KEY-----\nMIIBdemo\n-----END PRIVATE KEY-----\n"
    )
    settings = parse_config(text, "riskmon.yaml", base_dir=tmp_path, environ={}).builtin_alerts
    assert settings.runbook_url == "https://runbooks.example.com/riskmon/{{ alertname }}"
    assert settings.of("VenueDown").for_ == 30.0
    assert settings.of("AccountDataStale").labels == {"team": "risk"}


def test_without_builtin_alerts_the_defaults_hold(tmp_path: Path) -> None:
    assert parse(tmp_path, "") == BuiltinAlertsConfig()
    rules = {rule.alert: rule for rule in builtin_rules().rules}
    assert {name: rule.for_ for name, rule in rules.items()} == {
        "AccountDataStale": 0.0,
        "VenueDown": 30.0,
        "VenueAuthFailed": 0.0,
        "EventsUndeliverable": 0.0,
    }
    assert rules["VenueDown"].severity == "critical"


def test_every_mistake_in_builtin_alerts_is_located(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """\
builtin_alerts:
  runbook_url: "https://runbooks.acme.internal/{{ alertname }"
  VenueDwn: {for: 30s}
  VenueDown: {for: 30, severity: critcal, lables: {}}
  AccountDataStale: {labels: {severity: low, team: risk}}
  VenueAuthFailed: {for: soon}
  EventsUndeliverable: 5m
""",
    )
    assert found == [
        "riskmon.yaml:9:17: invalid template: unexpected '}'",
        "riskmon.yaml:10:3: unknown key 'VenueDwn' in builtin_alerts; did you mean 'VenueDown'?",
        "riskmon.yaml:11:20: for: expected a duration such as 500ms, 2s or 1m30s, got 30 "
        "(add a unit)",
        "riskmon.yaml:11:34: severity: expected one of critical, error, warning, info, got "
        "'critcal'; did you mean 'critical'?",
        "riskmon.yaml:11:43: unknown key 'lables' in builtin_alerts VenueDown; did you mean "
        "'labels'?",
        "riskmon.yaml:12:31: label 'severity' is reserved: riskmon sets alertname, venue, "
        "account, severity and currency itself",
        "riskmon.yaml:13:26: for: invalid duration 'soon': expected a number and a unit "
        "(ms, s, m, h, d, w, y) such as 500ms, 2s or 1m30s",
        "riskmon.yaml:14:24: expected a mapping of builtin_alerts EventsUndeliverable "
        "settings, got '5m'",
    ]


def test_the_runbook_url_is_an_http_url_template(tmp_path: Path) -> None:
    assert errors(tmp_path, "builtin_alerts:\n  runbook_url: runbooks/{{ alertname }}\n") == [
        "riskmon.yaml:9:16: runbook_url: expected an http:// or https:// URL template such as "
        "https://runbooks.example.com/riskmon/{{ alertname }}, got 'runbooks/{{ alertname }}'"
    ]


# -- the rules ----------------------------------------------------------------------------


def health(
    account: str, age: float, failures: int = 0, *, polls: int = 0, venue: str = "cs"
) -> AccountHealth:
    return AccountHealth(
        venue,
        "clearstreet",
        account,
        age,
        10.0,
        failures,
        "503 Service Unavailable" if failures else None,
        polls=polls,
        labels=(("desk", "equities"),),
    )


class Health:
    """The built-in rules as the daemon's tick runs them."""

    def __init__(self, settings: BuiltinAlertsConfig | None = None) -> None:
        runbook = runbook_template((settings or BuiltinAlertsConfig()).runbook_url)
        self.evaluator = Evaluator(builtin_rules(settings), AlertBook(), runbook_url=runbook)
        self.hold = StaleHold()

    def tick(self, now: float, *accounts: AccountHealth) -> list[AlertEvent]:
        return evaluate_health(self.evaluator, accounts, now, hold=self.hold)

    def active(self) -> set[tuple[str, str, str]]:
        return {(a.alertname, a.account, a.phase.value) for a in self.evaluator.book.active()}


def names(events: list[AlertEvent]) -> list[tuple[str, str, str]]:
    return [(e.alertname, e.account, e.status) for e in events]


def test_venue_down_waits_for_its_for_and_stale_accounts_wait_with_it() -> None:
    health_ = Health()
    assert health_.tick(0, health("1", 0), health("2", 0)) == []
    # every account fails: VenueDown pending; 12 s later both accounts are stale
    for now in range(1, 31):  # one poll a second, each failing
        accounts = [health(a, now, now, polls=now) for a in ("1", "2")]
        assert health_.tick(now, *accounts) == [], now
    assert health_.active() == {("VenueDown", "*", "pending")}
    fired = health_.tick(31, *[health(a, 31, 31, polls=31) for a in ("1", "2")])
    # VenueDown first, then (with no inhibition yet) the accounts it held back
    assert names(fired) == [
        ("VenueDown", "*", "firing"),
        ("AccountDataStale", "1", "firing"),
        ("AccountDataStale", "2", "firing"),
    ]


def test_an_outage_shorter_than_the_for_pages_nothing_even_while_accounts_recover() -> None:
    health_ = Health()
    for now in range(1, 20):  # 19 s of 503s: stale after 10 s, VenueDown still pending
        assert health_.tick(now, health("1", now, now, polls=now), health("2", now, now)) == []
    # account 1 answers again: VenueDown's condition ends; account 2 is still stale
    # until its turn comes, and is held back until then
    assert health_.tick(20, health("1", 0, polls=20), health("2", 20, 19)) == []
    assert health_.tick(21, health("1", 0, polls=21), health("2", 21, 19)) == []
    assert health_.active() == set()
    assert health_.tick(22, health("1", 0, polls=22), health("2", 0, polls=1)) == []


def test_a_held_back_account_whose_next_poll_fails_goes_stale() -> None:
    health_ = Health()
    for now in range(1, 15):
        health_.tick(now, health("1", now, now, polls=now), health("2", now, now, polls=now))
    assert health_.tick(15, health("1", 0, polls=15), health("2", 15, 14, polls=14)) == []
    # account 2's next poll fails: no outage of the venue, just a stale account
    assert names(health_.tick(16, health("1", 0, polls=16), health("2", 16, 15, polls=15))) == [
        ("AccountDataStale", "2", "firing")
    ]


def test_a_firing_stale_alert_is_not_resolved_by_being_held_back() -> None:
    health_ = Health()
    # one account stale on its own: it pages
    assert names(health_.tick(11, health("1", 11, 11), health("2", 0))) == [
        ("AccountDataStale", "1", "firing")
    ]
    # then the whole venue fails: VenueDown pending; account 1's alert keeps firing
    assert health_.tick(12, health("1", 12, 12), health("2", 1, 1)) == []
    assert health_.active() == {
        ("AccountDataStale", "1", "firing"),
        ("VenueDown", "*", "pending"),
    }
    # fresh data resolves it
    assert names(health_.tick(13, health("1", 0), health("2", 0))) == [
        ("AccountDataStale", "1", "resolved")
    ]


def test_builtin_alerts_set_for_severity_labels_and_the_runbook_url() -> None:
    settings = BuiltinAlertsConfig(
        runbook_url="https://runbooks.acme.internal/riskmon/{{ alertname }}?venue={{ venue }}",
        alerts={
            "VenueDown": BuiltinAlertSettings(for_=5.0, severity="error"),
            "AccountDataStale": BuiltinAlertSettings(
                severity="warning", labels={"team": "risk", "desk": "all"}
            ),
            "EventsUndeliverable": BuiltinAlertSettings(labels={"page": "ops"}),
        },
    )
    health_ = Health(settings)
    assert health_.tick(1, health("1", 1, 1, polls=1), health("2", 6, 1, polls=1)) == []
    fired = health_.tick(6, health("1", 6, 6, polls=6), health("2", 11, 6, polls=6))
    assert names(fired) == [("VenueDown", "*", "firing"), ("AccountDataStale", "2", "firing")]
    down, stale = fired
    assert down.severity == "error"
    assert down.annotations["runbook_url"] == (
        "https://runbooks.acme.internal/riskmon/VenueDown?venue=cs"
    )
    assert stale.severity == "warning"
    assert stale.labels == {"desk": "all", "team": "risk"}  # merged over the account's
    assert stale.annotations["runbook_url"].endswith("/AccountDataStale?venue=cs")
    (undeliverable,) = health_.evaluator.evaluate(riskmon_snapshot(3, 7, instance="a"), 7)
    assert undeliverable.labels == {"instance": "a", "page": "ops"}


def test_the_shipped_rules_take_their_runbook_url_from_the_config() -> None:
    rules, _ = load_rules(sorted((ROOT / "rules").glob("*.yaml")))
    assert all(
        rule.annotations["runbook_url"].source == "{{ runbook_url }}" for rule in rules.rules
    )
    # `riskmon check` knows the names: no "field the venue does not send" warning
    problems = lint_rules(
        rules, [("cs", "clearstreet"), ("pmx", "polymarket")], kinds=kind_fields_map()
    )
    assert not [p for p in problems if "runbook_url" in p.message or "alertname" in p.message]
    runbook = runbook_template("https://wiki.acme.internal/risk/{{ alertname | lower }}")
    evaluator = Evaluator(rules, AlertBook(), runbook_url=runbook)
    snapshot = Snapshot(
        venue="cs",
        venue_kind="clearstreet",
        account="19816",
        fields={"buying_power": Decimal("1000")},
        taken_at=0,
        params={"buying_power_floor": Decimal("25000")},
    )
    evaluator.evaluate(snapshot, 0)
    (fired,) = evaluator.evaluate(snapshot, 30)
    assert fired.alertname == "BuyingPowerBelowFloor"
    assert fired.annotations["runbook_url"] == (
        "https://wiki.acme.internal/risk/buyingpowerbelowfloor"
    )


# -- end to end: riskmon run, the simulator's 503s, Mosquitto -------------------------------

TUNED = """\
builtin_alerts:
  runbook_url: https://runbooks.acme.internal/riskmon/{{ alertname }}
  VenueDown: {for: 8s, severity: error, labels: {team: platform}}
  AccountDataStale: {severity: warning, labels: {team: risk}}
"""
PMX_503 = {"venue": "polymarket", "endpoint": "balances", "kind": "status", "status": 503}
DOWN = "riskmon/events/error/pmx/*/VenueDown"
STALE_RETAINED = "riskmon/alerts/pmx/firms%2FACME%2Faccounts%2Fmain/AccountDataStale"


@pytest.fixture
async def subscriber(
    mqtt_collector: Callable[..., MqttCollector],
) -> AsyncIterator[MqttCollector]:
    async with mqtt_collector(["riskmon/events/#"]) as collector:
        yield collector


async def api(riskmon: RiskmonProcess, path: str) -> Any:
    status, body = await riskmon.get(path)
    assert status == 200, body
    return json.loads(body)


async def pmx_alerts(riskmon: RiskmonProcess) -> list[tuple[str, str]]:
    alerts = (await api(riskmon, "/api/v1/alerts?venue=pmx"))["alerts"]
    return sorted((alert["alertname"], alert["state"]) for alert in alerts)


async def pmx_accounts(riskmon: RiskmonProcess) -> list[dict[str, Any]]:
    accounts: list[dict[str, Any]] = (await api(riskmon, "/api/v1/accounts?venue=pmx"))["accounts"]
    assert len(accounts) == 2
    return accounts


async def test_a_503_burst_shorter_than_the_for_pages_nothing_a_longer_one_pages_venue_down_only(
    tmp_path: Path,
    riskmon_config: Callable[..., tuple[Path, int]],
    simulator: Simulator,
    subscriber: MqttCollector,
    mqtt_collector: Callable[..., MqttCollector],
) -> None:
    with riskmon_process(tmp_path, riskmon_config) as riskmon:  # stale after 1.5 s
        riskmon.config.write_text(riskmon.config.read_text() + TUNED)
        riskmon.start()
        await riskmon.ready()

        # A burst of 503s, shorter than VenueDown's 8 s: it goes pending, and the
        # accounts stay stale for more than a tick (1 s) past their stale_after, held
        # back; then the venue answers again.
        fault = simulator.add_fault(PMX_503)

        async def pending_and_stale_for_a_tick() -> bool:
            stale = all(
                a["age_seconds"] > a["stale_after_seconds"] + 1.2
                for a in await pmx_accounts(riskmon)
            )
            return stale and await pmx_alerts(riskmon) == [("VenueDown", "pending")]

        await riskmon.until(pending_and_stale_for_a_tick, "VenueDown pending, pmx stale")
        simulator.remove_fault(fault)

        async def recovered() -> bool:
            accounts = await pmx_accounts(riskmon)
            fresh = all(a["consecutive_failures"] == 0 and not a["stale"] for a in accounts)
            return fresh and await pmx_alerts(riskmon) == []

        await riskmon.until(recovered, "pmx answering again, VenueDown no longer pending")

        # A sustained outage: VenueDown pages once its `for` is over; the stale
        # accounts (held back until then) fire after it, inhibited by it: no event,
        # their retained messages say what inhibits them.
        simulator.add_fault(PMX_503)
        await subscriber.wait_for(lambda _: len(events(subscriber)) >= 1, timeout=30)

        async def stale_inhibited() -> list[dict[str, Any]]:
            alerts = await api(riskmon, "/api/v2/alerts")
            stale = [a for a in alerts if a["labels"]["alertname"] == "AccountDataStale"]
            return stale if len(stale) == 2 else []

        stale_alerts = await riskmon.until(stale_inhibited, "both pmx accounts stale")
        (down,) = events(subscriber, DOWN)
        assert [(e["alertname"], e["status"]) for e in events(subscriber)] == [
            ("VenueDown", "firing")
        ]
        for alert in stale_alerts:
            assert alert["status"]["state"] == "suppressed"
            assert alert["status"]["inhibitedBy"] == [down["fingerprint"]]

        # as builtin_alerts tunes them: severity (in the topic too), labels, runbook URL
        assert down["severity"] == "error"
        assert down["labels"] == {"team": "platform"}
        assert down["annotations"]["runbook_url"] == (
            "https://runbooks.acme.internal/riskmon/VenueDown"
        )
        async with mqtt_collector([STALE_RETAINED]) as late:
            await late.wait_for(lambda messages: bool(messages))
            stale = json.loads(late.messages[-1].payload)
        assert stale["suppressed_by"] == {"inhibited_by": [down["fingerprint"]], "silenced_by": []}
        assert stale["severity"] == "warning"
        assert stale["labels"]["team"] == "risk"
        assert stale["annotations"]["runbook_url"] == (
            "https://runbooks.acme.internal/riskmon/AccountDataStale"
        )
        assert stale["pagerduty"]["payload"]["severity"] == "warning"


async def test_builtin_alerts_are_reloaded_on_sighup(
    tmp_path: Path,
    riskmon_config: Callable[..., tuple[Path, int]],
    simulator: Simulator,
    subscriber: MqttCollector,
) -> None:
    with riskmon_process(tmp_path, riskmon_config) as riskmon:
        config = riskmon.config.read_text()
        riskmon.config.write_text(config + "builtin_alerts:\n  VenueDown: {for: 1h}\n")
        riskmon.start()
        await riskmon.ready()
        simulator.add_fault(PMX_503)

        async def down_pending() -> bool:
            return ("VenueDown", "pending") in await pmx_alerts(riskmon)

        await riskmon.until(down_pending, "VenueDown pending")
        alerts = (await api(riskmon, "/api/v1/alerts?venue=pmx"))["alerts"]
        assert alerts[0]["annotations"]["runbook_url"] == (
            "https://runbooks.example.com/riskmon/VenueDown"  # the placeholder default
        )
        riskmon.config.write_text(config + TUNED.replace("for: 8s", "for: 1s"))
        assert riskmon.process is not None
        riskmon.process.send_signal(signal.SIGHUP)
        # the pending alert fires under the new `for`, with the new runbook URL (its
        # severity and labels were fixed when it became pending: they apply from the
        # next outage on)
        down = "riskmon/events/critical/pmx/*/VenueDown"
        await subscriber.wait_for(lambda _: bool(subscriber.on(down)), timeout=15)
        (fired,) = events(subscriber, down)
        assert fired["annotations"]["runbook_url"] == (
            "https://runbooks.acme.internal/riskmon/VenueDown"
        )
