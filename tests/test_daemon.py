"""`riskmon run` end to end: a real Mosquitto, the simulator, the daemon in its own process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import MosquittoBroker, MqttCollector, _free_port
from polled_process import PolledProcess
from prometheus_client.parser import text_string_to_metric_families

from monitor.daemon import GC_YOUNG_THRESHOLD, settle_heap
from monitor.simulator import Simulator
from monitor.store import Store

RULES = """\
groups:
  - name: capital
    venues: [clearstreet]
    rules:
      - alert: BuyingPowerBelowFloor
        expr: buying_power < params.buying_power_floor
        severity: critical
        params: {buying_power_floor: 25000}
        annotations:
          summary: >-
            {{ account }} buying power {{ buying_power }} below {{ params.buying_power_floor }}
      - alert: MaintenanceMarginCall
        expr: margin_details.maintenance_margin_excess < 0
        severity: critical
"""

SCHEMA = json.loads(
    resources.files("monitor.publish").joinpath("alert-event.schema.json").read_text()
)
BREACH = "riskmon/events/critical/cs/19816/BuyingPowerBelowFloor"
RETAINED = "riskmon/alerts/cs/19816/BuyingPowerBelowFloor"


class RiskmonProcess(PolledProcess):
    """`riskmon run` as an operator starts it."""

    name = "riskmon"

    def __init__(self, folder: Path, config: Path, http_port: int) -> None:
        self.folder = folder
        self.config = config
        self.http_port = http_port
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self.runs += 1
        log = (self.folder / f"riskmon-{self.runs}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "-c", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RISKMON_LOG_LEVEL": "debug"},
        )

    def signal(self, sig: int) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self.process = None
        return code

    async def ready(self) -> None:
        async def check() -> bool:
            status, _ = await self.get("/readyz")
            return status == 200

        await self.until(check, "readiness")

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        _, text = await self.get("/metrics")
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def riskmon_process(
    tmp_path: Path,
    riskmon_config: Callable[..., tuple[Path, int]],
    *,
    instance: str = "test-1",
    rules: str = RULES,
) -> Iterator[RiskmonProcess]:
    """A `riskmon run` (started by the test) over `rules`, stale after 1.5 s; killed
    at the end."""
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "capital.yaml").write_text(rules)
    config, http_port = riskmon_config(
        instance=instance, rules="rules/*.yaml", stale_after="1500ms"
    )
    process = RiskmonProcess(tmp_path, config, http_port)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def riskmon(
    tmp_path: Path, riskmon_config: Callable[..., tuple[Path, int]]
) -> Iterator[RiskmonProcess]:
    with riskmon_process(tmp_path, riskmon_config) as process:
        yield process


def events(collector: MqttCollector, topic: str = "riskmon/events/#") -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in collector.on(topic) if m.payload]


@pytest.fixture
async def subscriber(
    mqtt_collector: Callable[..., MqttCollector],
) -> AsyncIterator[MqttCollector]:
    async with mqtt_collector(["riskmon/#"]) as collector:
        yield collector


async def test_a_breach_fires_and_resolves_end_to_end(
    riskmon: RiskmonProcess,
    simulator: Simulator,
    subscriber: MqttCollector,
    mqtt_collector: Callable[..., MqttCollector],
) -> None:
    riskmon.start()
    await riskmon.ready()
    await subscriber.wait_for(
        lambda _: any(
            json.loads(m.payload).get("status") == "online"
            for m in subscriber.on("riskmon/status/test-1")
        )
    )
    simulator.set_fields("clearstreet", "19816", {"buying_power": "20000.00"})
    await subscriber.wait_for(lambda _: bool(subscriber.on(BREACH)))
    [fired] = events(subscriber, BREACH)
    jsonschema.validate(fired, SCHEMA)
    assert fired["status"] == "firing"
    assert fired["values"] == {"buying_power": "20000.00"}
    assert fired["annotations"]["summary"] == "19816 buying power 20000.00 below 25000"
    assert fired["pagerduty"]["event_action"] == "trigger"
    assert fired["pagerduty"]["dedup_key"] == fired["fingerprint"]

    async with mqtt_collector([RETAINED]) as late:  # a consumer that connects later
        await late.wait_for(lambda messages: bool(messages))
        assert late.messages[0].retain
        assert json.loads(late.messages[0].payload)["event_id"] == fired["event_id"]

    _, body = await riskmon.get("/api/v1/alerts")
    [alert] = json.loads(body)["alerts"]
    assert (alert["alertname"], alert["state"], alert["account"]) == (
        "BuyingPowerBelowFloor",
        "firing",
        "19816",
    )
    metrics = await riskmon.metrics()
    labels = (
        ("account", "19816"),
        ("alertname", "BuyingPowerBelowFloor"),
        ("severity", "critical"),
        ("state", "firing"),
        ("venue", "cs"),
    )
    assert metrics[("riskmon_alert_active", labels)] == 1
    assert (
        metrics[
            (
                "riskmon_account_buying_power",
                (("account", "19816"), ("currency", "USD"), ("venue", "cs")),
            )
        ]
        == 20000
    )
    assert metrics[("riskmon_mqtt_connected", ())] == 1

    simulator.set_fields("clearstreet", "19816", {"buying_power": "90000.00"})
    await subscriber.wait_for(lambda _: len(subscriber.on(BREACH)) == 2)
    resolved = events(subscriber, BREACH)[1]
    jsonschema.validate(resolved, SCHEMA)
    assert resolved["status"] == "resolved"
    assert resolved["fingerprint"] == fired["fingerprint"]
    assert resolved["ends_at"] is not None
    await subscriber.wait_for(lambda _: any(not m.payload for m in subscriber.on(RETAINED)))
    _, body = await riskmon.get("/api/v1/alerts")
    assert json.loads(body)["alerts"] == []
    assert riskmon.signal(signal.SIGTERM) == 0
    await subscriber.wait_for(
        lambda _: any(
            json.loads(m.payload).get("status") == "offline"
            for m in subscriber.on("riskmon/status/test-1")
        )
    )


async def test_a_broker_outage_loses_nothing(
    riskmon: RiskmonProcess,
    simulator: Simulator,
    mosquitto: MosquittoBroker,
    mqtt_collector: Callable[..., MqttCollector],
) -> None:
    riskmon.start()
    await riskmon.ready()
    durable = {"client_id": "pager-bridge", "clean_session": False}
    async with mqtt_collector(["riskmon/events/#"], **durable):
        pass  # the persistent session now holds the subscription
    mosquitto.stop()

    async def pending(n: int) -> bool:
        metrics = await riskmon.metrics()
        return metrics.get(("riskmon_outbox_pending", ()), 0) >= n

    simulator.set_fields("clearstreet", "19816", {"buying_power": "1000.00"})
    simulator.set_fields(
        "clearstreet", "19818", {"margin_details.maintenance_margin_excess": "-5.00"}
    )
    await riskmon.until(lambda: pending(2), "two events in the outbox")
    simulator.set_fields("clearstreet", "19816", {"buying_power": "90000.00"})
    simulator.set_fields(
        "clearstreet", "19818", {"margin_details.maintenance_margin_excess": "5.00"}
    )
    await riskmon.until(lambda: pending(4), "four events in the outbox")

    mosquitto.start()
    async with mqtt_collector(["riskmon/events/#"], **durable) as pager:
        await pager.wait_for(lambda messages: len(messages) >= 4, timeout=30)
        received = events(pager)
    by_alert: dict[str, list[str]] = {}
    for event in received:
        by_alert.setdefault(event["fingerprint"], []).append(event["status"])
    assert sorted(by_alert.values()) == [["firing", "resolved"], ["firing", "resolved"]]
    assert len({e["event_id"] for e in received}) == len(received)
    await riskmon.until(lambda: _outbox_empty(riskmon), "an empty outbox")


async def _outbox_empty(riskmon: RiskmonProcess) -> bool:
    metrics = await riskmon.metrics()
    return metrics.get(("riskmon_outbox_pending", ()), 1) == 0


async def test_sigkill_loses_nothing_and_announces_nothing_twice(
    riskmon: RiskmonProcess,
    simulator: Simulator,
    subscriber: MqttCollector,
) -> None:
    riskmon.start()
    await riskmon.ready()
    simulator.set_fields("clearstreet", "19816", {"buying_power": "1000.00"})
    simulator.set_fields(
        "clearstreet", "19818", {"margin_details.maintenance_margin_excess": "-5.00"}
    )
    margin = "riskmon/events/critical/cs/19818/MaintenanceMarginCall"
    await subscriber.wait_for(lambda _: bool(subscriber.on(BREACH) and subscriber.on(margin)))

    assert riskmon.signal(signal.SIGKILL) == -signal.SIGKILL
    await subscriber.wait_for(
        lambda _: any(
            json.loads(m.payload).get("status") == "offline"
            for m in subscriber.on("riskmon/status/test-1")
        )
    )  # the broker delivered the last will
    simulator.set_fields(
        "clearstreet", "19818", {"margin_details.maintenance_margin_excess": "75000.00"}
    )

    riskmon.start()
    await riskmon.ready()
    await subscriber.wait_for(
        lambda _: any(e["status"] == "resolved" for e in events(subscriber, margin))
    )
    margin_events = {e["event_id"]: e["status"] for e in events(subscriber, margin)}
    assert sorted(margin_events.values()) == ["firing", "resolved"]

    async def polled_again() -> bool:
        _, body = await riskmon.get("/api/v1/accounts?account=19816")
        return json.loads(body)["accounts"][0]["polls"] >= 5

    await riskmon.until(polled_again, "five polls of 19816 after the restart")
    # At least once: a message whose PUBACK came just before the kill may come again, with
    # its event_id; what must not happen is a second, new announcement.
    announced = {(e["event_id"], e["status"]) for e in events(subscriber, BREACH)}
    assert [status for _, status in announced] == ["firing"]
    _, body = await riskmon.get("/api/v1/alerts?state=firing")
    assert [a["alertname"] for a in json.loads(body)["alerts"]] == ["BuyingPowerBelowFloor"]


async def test_a_failing_venue_goes_stale_and_recovers(
    riskmon: RiskmonProcess,
    simulator: Simulator,
    subscriber: MqttCollector,
) -> None:
    # VenueDown waits 30 s by default (tests/test_builtin_alerts.py); here, 1 s
    riskmon.config.write_text(
        riskmon.config.read_text() + "builtin_alerts:\n  VenueDown: {for: 1s}\n"
    )
    riskmon.start()
    await riskmon.ready()
    fault = simulator.add_fault(
        {"venue": "polymarket", "endpoint": "balances", "kind": "status", "status": 503}
    )
    stale = "riskmon/events/error/pmx/firms%2FACME%2Faccounts%2Fmain/AccountDataStale"
    stale_retained = "riskmon/alerts/pmx/firms%2FACME%2Faccounts%2Fmain/AccountDataStale"
    down = "riskmon/events/critical/pmx/*/VenueDown"
    await subscriber.wait_for(lambda _: bool(subscriber.on(stale_retained) and subscriber.on(down)))
    # the account is stale, inhibited by VenueDown: its retained message says so
    fired = json.loads(subscriber.on(stale_retained)[-1].payload)
    assert fired["account"] == "firms/ACME/accounts/main"
    assert "503" in fired["annotations"]["description"]
    (venue_down,) = events(subscriber, down)
    assert fired["suppressed_by"]["inhibited_by"] == [venue_down["fingerprint"]]
    metrics = await riskmon.metrics()
    assert metrics[("riskmon_venue_up", (("venue", "pmx"),))] == 0
    simulator.remove_fault(fault)
    await subscriber.wait_for(
        lambda _: (
            len(subscriber.on(down)) == 2
            and any(not m.payload for m in subscriber.on(stale_retained))
        )
    )
    assert events(subscriber, down)[1]["status"] == "resolved"
    assert events(subscriber, stale) == []  # inhibited while it lasted: never paged


async def test_reloads_keep_the_running_rules_when_the_new_ones_are_broken(
    riskmon: RiskmonProcess,
) -> None:
    riskmon.start()
    await riskmon.ready()
    rules = riskmon.folder / "rules" / "capital.yaml"

    async def reload_successful(value: float) -> bool:
        metrics = await riskmon.metrics()
        return metrics.get(("riskmon_config_last_reload_successful", ())) == value

    rules.write_text(RULES.replace("buying_power < params", "buying_power <<< params"))
    await riskmon.until(lambda: reload_successful(0), "a failed reload (file watch)")
    assert "capital.yaml:6:30: invalid expression" in riskmon.log()
    rules.write_text(RULES)
    await riskmon.until(lambda: reload_successful(1), "a good reload (file watch)")
    assert riskmon.process is not None
    riskmon.config.write_text(riskmon.config.read_text().replace("instance: test-1", "instanc: x"))
    riskmon.process.send_signal(signal.SIGHUP)
    await riskmon.until(lambda: reload_successful(0), "a failed reload (SIGHUP)")
    assert "unknown key 'instanc'" in riskmon.log()
    status, _ = await riskmon.get("/healthz")
    assert status == 200


async def _breach_19816(
    riskmon: RiskmonProcess, simulator: Simulator, subscriber: MqttCollector
) -> None:
    await riskmon.ready()
    simulator.set_fields("clearstreet", "19816", {"buying_power": "20000.00"})
    await subscriber.wait_for(lambda _: bool(subscriber.on(BREACH)))
    assert events(subscriber, BREACH)[0]["status"] == "firing"


def _without_19816(config: Path) -> None:
    text = config.read_text()
    assert '{"id": "19816"}, ' in text
    config.write_text(text.replace('{"id": "19816"}, ', ""))


async def _gone_resolved(riskmon: RiskmonProcess, subscriber: MqttCollector) -> None:
    """The breach resolves because its account is no longer monitored, and the account
    leaves the alerts and the metrics."""
    await subscriber.wait_for(lambda _: len(events(subscriber, BREACH)) == 2)
    resolved = events(subscriber, BREACH)[1]
    jsonschema.validate(resolved, SCHEMA)
    assert (resolved["status"], resolved["reason"]) == ("resolved", "account no longer monitored")
    assert resolved["pagerduty"]["event_action"] == "resolve"
    _, body = await riskmon.get("/api/v1/alerts")
    assert json.loads(body)["alerts"] == []
    metrics = await riskmon.metrics()
    assert not [key for key in metrics if ("account", "19816") in key[1]]
    assert metrics[("riskmon_venue_accounts", (("venue", "cs"),))] == 2


async def test_an_account_removed_by_a_reload_resolves_its_alerts_and_leaves_the_metrics(
    riskmon: RiskmonProcess, simulator: Simulator, subscriber: MqttCollector
) -> None:
    riskmon.start()
    await _breach_19816(riskmon, simulator, subscriber)
    _without_19816(riskmon.config)
    assert riskmon.process is not None
    riskmon.process.send_signal(signal.SIGHUP)
    await _gone_resolved(riskmon, subscriber)


async def test_an_account_removed_while_riskmon_was_down_resolves_at_start(
    riskmon: RiskmonProcess, simulator: Simulator, subscriber: MqttCollector
) -> None:
    riskmon.start()
    await _breach_19816(riskmon, simulator, subscriber)
    assert riskmon.signal(signal.SIGTERM) == 0
    _without_19816(riskmon.config)
    riskmon.start()
    await riskmon.ready()
    await _gone_resolved(riskmon, subscriber)


async def test_a_failing_rule_is_counted_from_zero_and_logged_once_as_a_warning(
    riskmon: RiskmonProcess,
) -> None:
    (riskmon.folder / "rules" / "broken.yaml").write_text(
        "groups:\n  - name: broken\n    rules:\n"
        "      - alert: Broken\n        expr: buying_power / (equity - equity) > 0\n"
    )
    riskmon.start()
    await riskmon.ready()
    failures = "riskmon_rule_evaluation_failures_total"

    async def failed_three_times() -> bool:
        metrics = await riskmon.metrics()
        assert metrics[(failures, (("alertname", "BuyingPowerBelowFloor"),))] == 0
        return metrics.get((failures, (("alertname", "Broken"),)), 0) >= 3

    await riskmon.until(failed_three_times, "three failures of the broken rule")
    warnings = [
        json.loads(line)
        for line in riskmon.log().splitlines()
        if "further failures are counted" in line
    ]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["alertname"] == "Broken"
    assert "division" in warnings[0]["error"].lower()


def test_settle_heap_freezes_what_start_up_built_and_keeps_the_older_thresholds() -> None:
    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        settle_heap()  # again, as after a reload: the same settings
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


# -- start-up errors: one line naming the setting, exit 1 (as for a bad config) ----------


def run_riskmon(config: Path) -> subprocess.CompletedProcess[str]:
    """`riskmon run` that is expected to fail at start-up (else killed after 30 s)."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_a_second_instance_on_the_same_state_dir_says_so(riskmon: RiskmonProcess) -> None:
    riskmon.start()
    await riskmon.ready()
    second = riskmon.folder / "second.yaml"
    second.write_text(
        riskmon.config.read_text().replace(f":{riskmon.http_port}", f":{_free_port()}")
    )
    result = await asyncio.to_thread(run_riskmon, second)
    db = riskmon.folder / "state" / "riskmon.db"
    assert result.returncode == 1
    assert result.stderr == (
        f"{second}:2:12: state_dir: {db}: in use by another riskmon process "
        "(or another Store in this one); one instance per state_dir\n"
    )
    status, _ = await riskmon.get("/readyz")  # the first one runs on
    assert status == 200


def test_a_port_in_use_names_http_listen(riskmon: RiskmonProcess) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", riskmon.http_port))
        taken.listen()
        result = run_riskmon(riskmon.config)
    assert result.returncode == 1
    assert result.stderr == (
        f"{riskmon.config}:3:16: http.listen 127.0.0.1:{riskmon.http_port}: "
        "address already in use\n"
    )
    # what it had opened is closed again: the state folder is free for the next start
    Store(riskmon.folder / "state" / "riskmon.db").close()


def test_an_unusable_state_dir_names_it(riskmon: RiskmonProcess) -> None:
    config = riskmon.config
    config.write_text(config.read_text().replace("state_dir: state", "state_dir: /proc/nope"))
    result = run_riskmon(config)
    assert result.returncode == 1
    assert result.stderr == (
        f"{config}:2:12: state_dir: /proc/nope/riskmon.db: cannot create its folder: "
        "No such file or directory\n"
    )


async def test_no_rules_is_a_warning_at_start_and_at_each_reload(
    tmp_path: Path, riskmon_config: Callable[..., tuple[Path, int]]
) -> None:
    """It still runs (a shard may have only the built-in alerts), but says so loudly."""
    config, http_port = riskmon_config(instance="t", rules="rulez/*.yaml", stale_after="5s")
    riskmon = RiskmonProcess(tmp_path, config, http_port)

    def warnings() -> list[dict[str, Any]]:
        lines = (json.loads(line) for line in riskmon.log().splitlines() if line.startswith("{"))
        return [
            line for line in lines if line["event"] == "no rules loaded: nothing is being evaluated"
        ]

    async def warned(times: int) -> bool:
        return len(warnings()) == times

    try:
        riskmon.start()
        await riskmon.ready()
        await riskmon.until(lambda: warned(1), "the warning at start")
        assert riskmon.process is not None
        riskmon.process.send_signal(signal.SIGHUP)
        await riskmon.until(lambda: warned(2), "the warning at the reload")
    finally:
        riskmon.stop()
    for warning in warnings():
        assert warning["level"] == "warning"
        assert warning["patterns"] == [str(tmp_path / "rulez" / "*.yaml")]
        assert warning["warnings"] == [
            f"{tmp_path / 'rulez' / '*.yaml'}:1:1: warning: no rule file matches "
            f"'{tmp_path / 'rulez' / '*.yaml'}'"
        ]
