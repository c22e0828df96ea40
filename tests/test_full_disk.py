"""A full `state_dir` (a small tmpfs, filled up) with the broker down: riskmon keeps its
alerts, says it cannot deliver (/healthz 503 naming the outbox), holds the events in
memory, and delivers them in order once the disk has room again.

Needs root (or CAP_SYS_ADMIN) to mount a tmpfs: skipped, saying why, where that is not
allowed.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import MosquittoBroker, MqttCollector
from test_daemon import BREACH, RiskmonProcess, events, riskmon_process
from test_refused import problems_in

from monitor.health import HealthProblems
from monitor.outbox_writer import OutboxWriter
from monitor.simulator import Simulator
from monitor.store import OutboxEntry, Store

STATE_SIZE = "2m"  # the tmpfs: room for the database, not much more


def entry(n: int) -> OutboxEntry:
    return OutboxEntry(
        event_id=f"event-{n}",
        alert_key=f"fp-{n}",
        event_topic=f"riskmon/events/critical/cs/{n}/BuyingPowerBelowFloor",
        event_payload=b"{}",
        alert_topic=f"riskmon/alerts/cs/{n}/BuyingPowerBelowFloor",
        alert_payload=b"{}",
    )


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """`tmp_path/state` on a tmpfs of its own, unmounted afterwards."""
    folder = tmp_path / "state"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={STATE_SIZE},mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for state_dir here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    """Write a filler file until the filesystem is full (ENOSPC); the filler."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 512, 1):  # down to the last bytes
            block = b"\0" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def riskmon(
    tmp_path: Path, state_dir: Path, riskmon_config: Callable[..., tuple[Path, int]]
) -> Iterator[RiskmonProcess]:
    with riskmon_process(tmp_path, riskmon_config) as process:
        yield process


async def test_a_full_disk_keeps_the_alerts_says_so_and_delivers_once_it_has_room(
    riskmon: RiskmonProcess,
    simulator: Simulator,
    mosquitto: MosquittoBroker,
    mqtt_collector: Callable[..., MqttCollector],
    state_dir: Path,
) -> None:
    riskmon.start()
    await riskmon.ready()
    durable = {"client_id": "pager-bridge", "clean_session": False}
    async with mqtt_collector(["riskmon/events/#"], **durable):
        pass  # the persistent session now holds the subscription
    mosquitto.stop()
    filler = fill(state_dir)

    async def unhealthy() -> str | None:
        status, body = await riskmon.get("/healthz")
        return body if status == 503 else None

    async def healthy() -> bool:
        status, _ = await riskmon.get("/healthz")
        return status == 200

    async def firing() -> bool:
        _, body = await riskmon.get("/api/v1/alerts")
        return [(a["alertname"], a["state"]) for a in json.loads(body)["alerts"]] == [
            ("BuyingPowerBelowFloor", "firing")
        ]

    simulator.set_fields("clearstreet", "19816", {"buying_power": "20000.00"})
    reason = await riskmon.until(unhealthy, "/healthz 503")
    assert "outbox: writes to the outbox fail" in reason
    assert "full" in reason
    await riskmon.until(firing, "the alert in the API")
    for _ in range(3):  # ticks pass, failures repeat: the alert stays, /healthz stays 503
        await riskmon.until(firing, "the alert in the API")
    metrics = await riskmon.metrics()
    assert metrics[("riskmon_store_write_failures_total", (("operation", "append"),))] >= 1
    assert metrics[("riskmon_outbox_held_in_memory", ())] == 1
    assert metrics[("riskmon_events_dropped_total", ())] == 0
    assert metrics[("riskmon_healthy", ())] == 0
    assert metrics[("riskmon_health_problem", (("component", "outbox"),))] == 1
    assert await unhealthy()
    # a restart cures no full disk and would lose the held event: liveness holds
    assert await riskmon.get("/livez") == (200, "ok\n")

    filler.unlink()
    await riskmon.until(healthy, "/healthz 200 once the disk has room")
    metrics = await riskmon.metrics()
    assert metrics[("riskmon_outbox_held_in_memory", ())] == 0
    assert metrics[("riskmon_outbox_pending", ())] == 1
    assert metrics[("riskmon_healthy", ())] == 1
    assert not any(name == "riskmon_health_problem" for name, _ in metrics)
    mosquitto.start()
    async with mqtt_collector(["riskmon/events/#"], **durable) as pager:
        await pager.wait_for(lambda _: bool(pager.on(BREACH)), timeout=30)
        assert [e["status"] for e in events(pager, BREACH)] == ["firing"]
    log = riskmon.log()
    assert problems_in(log) == []
    bursts = [line for line in log.splitlines() if "the disk refuses writes;" in line]
    assert len(bursts) == 1  # once per burst, not once per failure
    assert "outbox: writes work again" in log


def test_held_events_are_bounded_and_written_in_order_when_the_disk_has_room(
    state_dir: Path,
) -> None:
    problems = HealthProblems()
    notified: list[bool] = []
    with Store(state_dir / "riskmon.db") as store:
        writer = OutboxWriter(store, problems, notify=lambda: notified.append(True), capacity=2)
        writer.append([entry(1)], [{"n": 1}], now=1.0)
        filler = fill(state_dir)
        writer.append([entry(2)], [{"n": 2}], now=2.0)
        writer.append([entry(3), entry(4)], [{"n": 4}], now=3.0)  # 4: over the bound
        writer.save_alerts([{"n": 5}], now=4.0)
        writer.retry(now=5.0)
        assert (writer.held, writer.dropped) == (2, 1)
        assert writer.failures["append"] >= 2
        assert problems.reasons()["outbox"].startswith("writes to the outbox fail (append)")
        assert store.load_alerts() == [{"n": 1}]
        assert not notified

        filler.unlink()
        writer.retry(now=6.0)
        assert [r.event_id for r in store.pending()] == ["event-1", "event-2", "event-3"]
        assert store.load_alerts() == [{"n": 5}]  # the latest alert state, with them
        assert (writer.held, notified) == (0, [True])
        assert not problems
