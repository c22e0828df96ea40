"""Alertmanager as a destination, end to end: `riskmon run` posting to a real
Alertmanager process (tests/alertmanager_support.py), which routes by severity to a
webhook receiver of the test."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from alertmanager_support import AlertmanagerProcess, Webhook, alertmanager, webhook
from conftest import MqttCollector
from test_daemon import RULES, RiskmonProcess, events, riskmon_process, subscriber

from monitor.simulator import Simulator

__all__ = ["alertmanager", "subscriber", "webhook"]  # fixtures, used by name

WARNING_RULE = """\
      - alert: BuyingPowerNearFloor
        expr: buying_power < 30000
        severity: warning
        labels: {team: risk}
        annotations:
          summary: "{{ account }} buying power {{ buying_power }} near its floor"
"""
BREACH = "riskmon/events/critical/cs/19816/BuyingPowerBelowFloor"


@pytest.fixture
def riskmon_am(
    tmp_path: Path,
    riskmon_config: Callable[..., tuple[Path, int]],
    alertmanager: AlertmanagerProcess,
) -> Iterator[RiskmonProcess]:
    """`riskmon run` that also sends to `alertmanager` (bearer token file, resent every
    second so that a test need not wait a minute)."""
    with riskmon_process(tmp_path, riskmon_config, rules=RULES + WARNING_RULE) as process:
        (tmp_path / "am-token").write_text("am-token-1\n")
        with process.config.open("a") as config:
            config.write(
                "alertmanagers:\n"
                f"  - url: {alertmanager.url}\n"
                "    bearer_token_file: am-token\n"
                "    timeout: 2s\n"
                "    resend_interval: 1s\n"
            )
        yield process


def _active(alerts: list[dict[str, Any]], alertname: str) -> dict[str, Any] | None:
    for alert in alerts:
        if alert["labels"].get("alertname") == alertname and alert["status"]["state"] == "active":
            return alert
    return None


async def _metric(riskmon: RiskmonProcess, name: str, alertmanager: AlertmanagerProcess) -> float:
    metrics = await riskmon.metrics()
    return metrics.get((name, (("alertmanager", alertmanager.url),)), -1.0)


async def test_a_breach_reaches_alertmanager_routed_by_severity_and_resolves(
    riskmon_am: RiskmonProcess,
    alertmanager: AlertmanagerProcess,
    webhook: Webhook,
    simulator: Simulator,
) -> None:
    riskmon = riskmon_am
    await alertmanager.ready()
    riskmon.start()
    await riskmon.ready()
    simulator.set_fields("clearstreet", "19816", {"buying_power": "20000.00"})

    async def both_firing() -> tuple[dict[str, Any], dict[str, Any]] | None:
        alerts = await alertmanager.alerts()
        critical = _active(alerts, "BuyingPowerBelowFloor")
        warning = _active(alerts, "BuyingPowerNearFloor")
        return (critical, warning) if critical and warning else None

    critical, warning = await alertmanager.until(both_firing, "both alerts in Alertmanager")
    assert critical["labels"] == {
        "alertname": "BuyingPowerBelowFloor",
        "venue": "cs",
        "account": "19816",
        "severity": "critical",
    }
    assert warning["labels"]["team"] == "risk"  # the rule's static labels
    assert warning["labels"]["severity"] == "warning"
    assert critical["annotations"]["summary"] == "19816 buying power 20000.00 below 25000"
    ends_at = datetime.fromisoformat(critical["endsAt"].replace("Z", "+00:00")).timestamp()
    assert ends_at > time.time() + 2  # resent before it lapses: lookahead is 4 resends
    # generatorURL leads back to riskmon's API, to this very alert
    assert critical["generatorURL"] == f"{riskmon.url}/api/v1/alerts?venue=cs&account=19816"
    async with aiohttp.ClientSession() as session, session.get(critical["generatorURL"]) as resp:
        listed = (await resp.json())["alerts"]
    assert "BuyingPowerBelowFloor" in {alert["alertname"] for alert in listed}

    # routed by severity: critical pages, warning makes a ticket
    await webhook.wait_for(
        lambda: bool(webhook.alerts("/pager")) and bool(webhook.alerts("/tickets")),
        "notifications of both receivers",
    )
    assert {a["labels"]["alertname"] for _s, a in webhook.alerts("/pager")} == {
        "BuyingPowerBelowFloor"
    }
    assert {a["labels"]["alertname"] for _s, a in webhook.alerts("/tickets")} == {
        "BuyingPowerNearFloor"
    }

    simulator.set_fields("clearstreet", "19816", {"buying_power": "90000.00"})
    await webhook.wait_for(
        lambda: any(status == "resolved" for status, _a in webhook.alerts("/pager")),
        "the resolution at the pager receiver",
    )
    [(_status, resolved)] = [(s, a) for s, a in webhook.alerts("/pager") if s == "resolved"]
    assert resolved["labels"]["alertname"] == "BuyingPowerBelowFloor"

    async def none_active() -> bool:
        return _active(await alertmanager.alerts(), "BuyingPowerBelowFloor") is None

    await alertmanager.until(none_active, "the alert resolved in Alertmanager")
    assert await _metric(riskmon, "riskmon_alertmanager_pending", alertmanager) == 0
    assert await _metric(riskmon, "riskmon_alertmanager_alerts_sent_total", alertmanager) >= 4
    assert "am-token-1" not in riskmon.log()


async def test_an_alertmanager_outage_during_a_breach_and_its_resolution_loses_nothing(
    riskmon_am: RiskmonProcess,
    alertmanager: AlertmanagerProcess,
    simulator: Simulator,
    subscriber: MqttCollector,
) -> None:
    riskmon = riskmon_am
    await alertmanager.ready()
    riskmon.start()
    await riskmon.ready()
    alertmanager.stop()

    simulator.set_fields("clearstreet", "19816", {"buying_power": "20000.00"})
    await subscriber.wait_for(lambda _: len(subscriber.on(BREACH)) == 1)
    simulator.set_fields("clearstreet", "19816", {"buying_power": "90000.00"})
    await subscriber.wait_for(lambda _: len(subscriber.on(BREACH)) == 2)  # MQTT is not held up
    assert [e["status"] for e in events(subscriber, BREACH)] == ["firing", "resolved"]

    async def queued() -> bool:
        # 4 events: both alerts fired and resolved; and attempts failed meanwhile
        pending = await _metric(riskmon, "riskmon_alertmanager_pending", alertmanager)
        failed = await _metric(riskmon, "riskmon_alertmanager_alerts_failed_total", alertmanager)
        return pending >= 4 and failed > 0

    await riskmon.until(queued, "the events queued for the Alertmanager that is down")

    alertmanager.start()
    await alertmanager.ready()

    async def both_arrived() -> bool:
        return await alertmanager.received("firing") >= 2 and (
            await alertmanager.received("resolved") >= 2
        )

    await alertmanager.until(both_arrived, "the firing and the resolved alerts", timeout=60)
    assert _active(await alertmanager.alerts(), "BuyingPowerBelowFloor") is None

    async def delivered() -> bool:
        return await _metric(riskmon, "riskmon_alertmanager_pending", alertmanager) == 0

    await riskmon.until(delivered, "an empty queue")


async def test_alerts_still_firing_are_resent_to_an_alertmanager_that_restarted(
    riskmon_am: RiskmonProcess,
    alertmanager: AlertmanagerProcess,
    simulator: Simulator,
) -> None:
    riskmon = riskmon_am
    await alertmanager.ready()
    riskmon.start()
    await riskmon.ready()
    simulator.set_fields("clearstreet", "19816", {"buying_power": "20000.00"})

    async def firing() -> bool:
        return _active(await alertmanager.alerts(), "BuyingPowerBelowFloor") is not None

    await alertmanager.until(firing, "the alert in Alertmanager")
    alertmanager.stop(signal.SIGKILL)  # alerts live in its memory only: forgotten
    alertmanager.start()
    await alertmanager.ready()
    assert not await alertmanager.alerts()
    await alertmanager.until(firing, "the alert sent again to the new Alertmanager")
