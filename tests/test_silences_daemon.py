"""Silences end to end: the real amtool (Debian's prometheus-alertmanager) and
`riskmon silence` against `riskmon run`, with the simulator and a real Mosquitto."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from typing import Any

import jsonschema
import pytest
from conftest import MqttCollector
from test_daemon import (
    BREACH,
    RETAINED,
    SCHEMA,
    RiskmonProcess,
    events,
    riskmon,
    subscriber,
)

from monitor.simulator import Simulator

__all__ = ["riskmon", "subscriber"]  # the fixtures of test_daemon, used here as they are

AMTOOL = shutil.which("amtool")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool not installed (make tools installs prometheus-alertmanager)"
)


def amtool(riskmon: RiskmonProcess, *args: str) -> str:
    assert AMTOOL is not None
    done = subprocess.run(
        [AMTOOL, f"--alertmanager.url={riskmon.url}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"amtool {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def riskmon_silence(riskmon: RiskmonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", "silence", "--url", riskmon.url, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def api(riskmon: RiskmonProcess, path: str) -> Any:
    status, body = await riskmon.get(path)
    assert status == 200, body
    return json.loads(body)


@needs_amtool
async def test_amtool_silences_a_breach_which_is_announced_when_the_silence_is_expired(
    riskmon: RiskmonProcess, simulator: Simulator, subscriber: MqttCollector
) -> None:
    riskmon.start()
    await riskmon.ready()
    amtool(riskmon, "config", "show")  # /api/v2/status, which amtool reads as Alertmanager's
    out = amtool(
        riskmon,
        "silence",
        "add",
        "alertname=BuyingPowerBelowFloor",
        "account=19816",
        "--duration=1h",
        "--comment=deposit on its way (ticket 4711)",
        "--author=oncall",
    )
    silence_id = out.strip()
    assert silence_id
    assert amtool(riskmon, "silence", "query", "-q").split() == [silence_id]

    # silences survive a restart (state_dir)
    assert riskmon.signal(signal.SIGTERM) == 0
    riskmon.start()
    await riskmon.ready()
    [listed] = json.loads(amtool(riskmon, "silence", "query", "-o", "json"))
    assert listed["id"] == silence_id
    assert listed["createdBy"] == "oncall"
    assert listed["status"]["state"] == "active"
    assert {(m["name"], m["value"]) for m in listed["matchers"]} == {
        ("alertname", "BuyingPowerBelowFloor"),
        ("account", "19816"),
    }

    # a silenced breach fires, is shown as suppressed, and publishes no event
    simulator.set_fields("clearstreet", "19816", {"buying_power": "20000.00"})

    async def suppressed() -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = await api(riskmon, "/api/v2/alerts")
        return [a for a in alerts if a["labels"]["alertname"] == "BuyingPowerBelowFloor"]

    [alert] = await riskmon.until(suppressed, "the breach firing, silenced")
    assert alert["status"] == {"state": "suppressed", "silencedBy": [silence_id], "inhibitedBy": []}
    assert alert["labels"]["account"] == "19816"
    assert alert["receivers"] == [{"name": "riskmon"}]
    [v1] = (await api(riskmon, "/api/v1/alerts?account=19816"))["alerts"]
    assert v1["suppressed_by"] == {"inhibited_by": [], "silenced_by": [silence_id]}
    await subscriber.wait_for(lambda _: bool(subscriber.on(RETAINED)))
    retained = json.loads(subscriber.on(RETAINED)[-1].payload)
    assert retained["suppressed_by"] == {"inhibited_by": [], "silenced_by": [silence_id]}
    jsonschema.validate(retained, SCHEMA)
    metrics = await riskmon.metrics()
    labels = (
        ("account", "19816"),
        ("alertname", "BuyingPowerBelowFloor"),
        ("severity", "critical"),
        ("state", "suppressed"),
        ("venue", "cs"),
    )
    assert metrics[("riskmon_alert_active", labels)] == 1

    # amtool's alert query: hidden by default (only active ones), shown with --silenced
    assert "BuyingPowerBelowFloor" not in amtool(riskmon, "alert", "query")
    shown = json.loads(amtool(riskmon, "alert", "query", "--silenced", "-o", "json"))
    assert [a["fingerprint"] for a in shown] == [alert["fingerprint"]]
    assert events(subscriber, BREACH) == []

    # expired while the breach still holds: announced now
    amtool(riskmon, "silence", "expire", silence_id)
    await subscriber.wait_for(lambda _: bool(subscriber.on(BREACH)))
    [fired] = events(subscriber, BREACH)
    jsonschema.validate(fired, SCHEMA)
    assert (fired["status"], fired["values"]) == ("firing", {"buying_power": "20000.00"})
    assert "suppressed_by" not in fired
    assert "BuyingPowerBelowFloor" in amtool(riskmon, "alert", "query")
    assert amtool(riskmon, "silence", "query", "-q").split() == []
    assert amtool(riskmon, "silence", "query", "--expired", "-q").split() == [silence_id]


async def test_riskmon_silence_commands_and_a_resolve_that_was_announced(
    riskmon: RiskmonProcess, simulator: Simulator, subscriber: MqttCollector
) -> None:
    riskmon.start()
    await riskmon.ready()
    simulator.set_fields("clearstreet", "19816", {"buying_power": "20000.00"})
    await subscriber.wait_for(lambda _: bool(subscriber.on(BREACH)))

    # silenced after its firing was announced: the resolve must still reach the pager
    added = riskmon_silence(
        riskmon, "add", 'alertname="BuyingPowerBelowFloor"', "venue=cs", "--duration", "30m",
        "--comment", "known", "--author", "me",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.strip()
    listed = riskmon_silence(riskmon, "list")
    assert listed.returncode == 0, listed.stderr
    assert silence_id in listed.stdout
    assert 'alertname="BuyingPowerBelowFloor" venue="cs"' in listed.stdout
    # a reload keeps the silences (they live in state_dir, not in the config)
    assert riskmon.process is not None
    riskmon.process.send_signal(signal.SIGHUP)

    async def reloaded() -> bool:
        return '"event": "reloaded"' in riskmon.log()

    await riskmon.until(reloaded, "the reload")
    assert silence_id in riskmon_silence(riskmon, "list").stdout

    async def silenced() -> bool:
        alerts = await api(riskmon, "/api/v2/alerts")
        return any(a["status"]["silencedBy"] == [silence_id] for a in alerts)

    await riskmon.until(silenced, "the firing breach silenced")
    simulator.set_fields("clearstreet", "19816", {"buying_power": "90000.00"})
    await subscriber.wait_for(lambda _: len(subscriber.on(BREACH)) == 2)
    resolved = events(subscriber, BREACH)[1]
    assert resolved["status"] == "resolved"
    assert resolved["suppressed_by"] == {"inhibited_by": [], "silenced_by": [silence_id]}

    expired = riskmon_silence(riskmon, "expire", silence_id)
    assert expired.returncode == 0, expired.stderr
    assert silence_id not in riskmon_silence(riskmon, "list").stdout
    again = riskmon_silence(riskmon, "expire", silence_id)
    assert again.returncode == 1
    assert "already expired" in again.stderr
    bad = riskmon_silence(riskmon, "add", "alertname", "--duration", "1h", "--comment", "x")
    assert bad.returncode == 1
    assert "matcher 'alertname'" in bad.stderr
