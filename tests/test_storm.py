"""An outage is one page: a venue of 500 accounts down gives VenueDown's firing and its
resolution, and nothing else (SPEC "Alert lifecycle": the built-in storm inhibitions).

The real daemon, the simulator and Mosquitto. The outage lasts until all 500 accounts
are stale (their AccountDataStale firing, inhibited by VenueDown), and at least
RISKMON_STORM_SECONDS (0 unless set: `RISKMON_STORM_SECONDS=120` is the 2-minute
measurement of issue 14).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import MqttCollector
from test_daemon import RULES, RiskmonProcess, events

from monitor.simulator import Simulator

ACCOUNTS = 500
CS_503 = {"venue": "clearstreet", "endpoint": "balances", "kind": "status", "status": 503}


@pytest.fixture
async def subscriber(
    mqtt_collector: Callable[..., MqttCollector],
) -> AsyncIterator[MqttCollector]:
    async with mqtt_collector(["riskmon/events/#"]) as collector:
        yield collector


async def test_a_venue_of_500_accounts_down_is_one_page_and_its_resolution(
    tmp_path: Path,
    riskmon_config: Callable[..., tuple[Path, int]],
    simulator: Simulator,
    subscriber: MqttCollector,
) -> None:
    ids = [str(200_000 + n) for n in range(ACCOUNTS)]
    for account in ids:
        simulator.add_account("clearstreet", account)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "capital.yaml").write_text(RULES)
    config, http_port = riskmon_config(
        instance="storm",
        rules="rules/*.yaml",
        stale_after="10s",
        cs_accounts=[{"id": account} for account in ids],
    )
    text = config.read_text().replace(
        "poll_interval: 200ms", "poll_interval: 2s\n    max_requests_per_second: 1000", 1
    )
    config.write_text(text + "builtin_alerts:\n  VenueDown: {for: 2s}\n")
    riskmon = RiskmonProcess(tmp_path, config, http_port)
    try:
        riskmon.start()
        await riskmon.ready()

        async def cs_alerts() -> list[dict[str, Any]]:
            status, body = await riskmon.get("/api/v2/alerts")
            assert status == 200, body
            alerts: list[dict[str, Any]] = json.loads(body)
            return [a for a in alerts if a["labels"]["venue"] == "cs"]

        began = time.monotonic()
        simulator.add_fault(CS_503)

        async def all_stale_and_inhibited() -> bool:
            stale = [a for a in await cs_alerts() if a["labels"]["alertname"] == "AccountDataStale"]
            return len(stale) == ACCOUNTS and all(a["status"]["inhibitedBy"] for a in stale)

        await riskmon.until(all_stale_and_inhibited, "500 stale accounts, inhibited", timeout=60)
        minimum = float(os.environ.get("RISKMON_STORM_SECONDS", "0"))
        while time.monotonic() - began < minimum:  # the measurement's outage, not a wait
            await riskmon.until(all_stale_and_inhibited, "the outage going on", timeout=60)
        simulator.clear_faults()

        async def recovered() -> bool:
            return not await cs_alerts()

        await riskmon.until(recovered, "every cs alert resolved", timeout=60)
        seen = [
            (e["alertname"], e["account"], e["status"])
            for e in events(subscriber)
            if e["venue"] == "cs"
        ]
        summary = [(a, s) for a, _, s in seen]
        assert seen == [("VenueDown", "*", "firing"), ("VenueDown", "*", "resolved")], (
            sorted(set(summary), key=summary.index),
            len(seen),
        )
        metrics = await riskmon.metrics()
        assert metrics[("riskmon_events_published_total", ())] >= 2
    finally:
        riskmon.stop()
