"""Resolved events tell the truth (issue 12 item 5), end to end: `riskmon run` against the
simulator and a real Mosquitto. A resolved event renders its annotations with the values
that resolved it, carries them in `values` and the ones it fired with in `firing_values`
(across a restart too), its PagerDuty resolve body shows the recovery, and an alert that
ends without an evaluation says so."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import MqttCollector
from test_daemon import BREACH, RETAINED, SCHEMA, RiskmonProcess, events, riskmon_process

from monitor.simulator import Simulator

# The shipped rule's shape: hysteresis, and a summary that reads true in both states.
RULES = """\
groups:
  - name: capital
    venues: [clearstreet]
    rules:
      - alert: BuyingPowerBelowFloor
        expr: buying_power < params.buying_power_floor
        clear: buying_power >= params.buying_power_floor * 1.05
        severity: critical
        params: {buying_power_floor: 30000}
        annotations:
          summary: >-
            {{ account }} buying power {{ buying_power }}
            {% if resolved %}back above floor {{ params.buying_power_floor }}
            (fired at {{ firing_values.buying_power }}){% else %}below floor
            {{ params.buying_power_floor }}{% endif %}
"""
FIRED = "19816 buying power 20000.00 below floor 30000"
RECOVERED = "19816 buying power 44000.00 back above floor 30000 (fired at 20000.00)"


@pytest.fixture
def riskmon(
    tmp_path: Path, riskmon_config: Callable[..., tuple[Path, int]]
) -> Iterator[RiskmonProcess]:
    with riskmon_process(tmp_path, riskmon_config, rules=RULES) as process:
        yield process


@pytest.fixture
async def subscriber(
    mqtt_collector: Callable[..., MqttCollector],
) -> AsyncIterator[MqttCollector]:
    async with mqtt_collector(["riskmon/#"]) as collector:
        yield collector


async def _fired(riskmon: RiskmonProcess, simulator: Simulator, sub: MqttCollector) -> Any:
    await riskmon.ready()
    simulator.set_fields("clearstreet", "19816", {"buying_power": "20000.00"})
    await sub.wait_for(lambda _: bool(sub.on(BREACH)))
    [fired] = events(sub, BREACH)
    jsonschema.validate(fired, SCHEMA)
    assert fired["status"] == "firing"
    assert fired["annotations"]["summary"] == FIRED
    assert fired["values"] == {"buying_power": "20000.00"}
    assert "firing_values" not in fired  # a firing payload is as it always was
    return fired


def _check_recovered(resolved: dict[str, Any], fired: dict[str, Any]) -> None:
    jsonschema.validate(resolved, SCHEMA)
    assert resolved["status"] == "resolved"
    assert resolved["fingerprint"] == fired["fingerprint"]
    assert resolved["annotations"]["summary"] == RECOVERED
    assert resolved["values"] == {"buying_power": "44000.00"}
    assert resolved["firing_values"] == {"buying_power": "20000.00"}
    pagerduty = resolved["pagerduty"]
    assert pagerduty["event_action"] == "resolve"
    assert pagerduty["dedup_key"] == fired["pagerduty"]["dedup_key"]
    assert pagerduty["payload"]["summary"] == RECOVERED
    details = pagerduty["payload"]["custom_details"]
    assert (details["values"], details["firing_values"]) == (
        {"buying_power": "44000.00"},
        {"buying_power": "20000.00"},
    )


async def test_a_resolved_event_shows_the_recovery(
    riskmon: RiskmonProcess, simulator: Simulator, subscriber: MqttCollector
) -> None:
    riskmon.start()
    fired = await _fired(riskmon, simulator, subscriber)
    simulator.set_fields("clearstreet", "19816", {"buying_power": "44000.00"})
    await subscriber.wait_for(lambda _: len(events(subscriber, BREACH)) == 2)
    _check_recovered(events(subscriber, BREACH)[1], fired)
    # the retained alert is cleared on resolve, as before
    await subscriber.wait_for(lambda _: any(not m.payload for m in subscriber.on(RETAINED)))


async def test_firing_values_survive_a_restart(
    riskmon: RiskmonProcess, simulator: Simulator, subscriber: MqttCollector
) -> None:
    riskmon.start()
    fired = await _fired(riskmon, simulator, subscriber)
    # still firing, at another value: the last values are not the ones it fired with
    simulator.set_fields("clearstreet", "19816", {"buying_power": "21000.00"})

    async def firing_at_21000() -> bool:
        _, body = await riskmon.get("/api/v1/alerts?state=firing")
        alerts = json.loads(body)["alerts"]
        return bool(alerts) and alerts[0]["values"] == {"buying_power": "21000.00"}

    await riskmon.until(firing_at_21000, "the firing alert at 21000.00")
    _, body = await riskmon.get("/api/v1/alerts?state=firing")
    [alert] = json.loads(body)["alerts"]
    assert alert["firing_values"] == {"buying_power": "20000.00"}
    assert riskmon.signal(signal.SIGTERM) == 0

    simulator.set_fields("clearstreet", "19816", {"buying_power": "44000.00"})
    riskmon.start()
    await subscriber.wait_for(lambda _: len(events(subscriber, BREACH)) == 2)
    _check_recovered(events(subscriber, BREACH)[1], fired)


async def test_an_alert_ended_without_an_evaluation_says_so(
    riskmon: RiskmonProcess, simulator: Simulator, subscriber: MqttCollector
) -> None:
    riskmon.start()
    await _fired(riskmon, simulator, subscriber)
    rules = riskmon.folder / "rules" / "capital.yaml"
    rules.write_text(RULES.replace("BuyingPowerBelowFloor", "BuyingPowerUnderFloor"))
    await subscriber.wait_for(lambda _: len(events(subscriber, BREACH)) == 2)
    resolved = events(subscriber, BREACH)[1]
    jsonschema.validate(resolved, SCHEMA)
    assert (resolved["status"], resolved["reason"]) == ("resolved", "rule removed")
    assert resolved["values"] == {}  # nothing was evaluated
    assert resolved["firing_values"] == {"buying_power": "20000.00"}
    summary = "cs/19816 BuyingPowerBelowFloor ended without a new evaluation: rule removed"
    assert resolved["annotations"]["summary"] == f"{summary}; no current values"
    assert resolved["pagerduty"]["payload"]["summary"] == f"{summary}; no current values"
    assert "below floor" not in json.dumps(resolved["annotations"])


async def test_a_stale_account_reads_fresh_again_when_it_resolves(
    riskmon: RiskmonProcess, simulator: Simulator, subscriber: MqttCollector
) -> None:
    riskmon.start()
    await riskmon.ready()
    fault = simulator.add_fault(
        {
            "venue": "polymarket",
            "endpoint": "balances",
            "account": "firms/ACME/accounts/main",  # the other account keeps VenueDown away
            "kind": "status",
            "status": 503,
        }
    )
    stale = "riskmon/events/error/pmx/firms%2FACME%2Faccounts%2Fmain/AccountDataStale"
    await subscriber.wait_for(lambda _: bool(subscriber.on(stale)))
    fired = events(subscriber, stale)[0]
    assert fired["annotations"]["summary"].startswith("pmx/firms/ACME/accounts/main: no good data")
    simulator.remove_fault(fault)
    await subscriber.wait_for(lambda _: len(subscriber.on(stale)) == 2)
    resolved = events(subscriber, stale)[1]
    jsonschema.validate(resolved, SCHEMA)
    age = resolved["values"]["data_age_seconds"]
    fired_age = resolved["firing_values"]["data_age_seconds"]
    assert fired_age == fired["values"]["data_age_seconds"]
    assert float(age) < float(resolved["values"]["stale_after_seconds"]) <= float(fired_age)
    assert resolved["annotations"]["summary"] == (
        f"pmx/firms/ACME/accounts/main: data fresh again, last good poll {age}s ago "
        f"(stale at {fired_age}s)"
    )
    assert "503" not in resolved["annotations"]["description"]
