"""Detection latency: from a balance change at the venue to the alert event on MQTT.

Run: `.venv/bin/python -m bench.latency [--changes 200] [--accounts 1000]`.

`riskmon run` (its own process, as an operator starts it) polls 1,000 simulated Clear
Street accounts every second (20 rules each) and publishes to a Mosquitto; this process
subscribes to `riskmon/events/#`. Every 100 ms it sets another account's `daily_pnl`
past the loss limit through the simulator's control API, recording the time just
before the request (so the figure includes the request's own way to the simulator):
`DailyLossOverLimit` (for: 0s) fires. When the firing event arrives, it puts the value
back at a recorded time: the alert resolves. Each arrival minus its recorded change is
one detection latency sample (firing and resolved alike). A firing change comes at a
random moment of its account's interval (waits half an interval on average); a
resolving one comes just after the poll that fired (waits almost a whole interval: the
worst case), so half the samples sit near the ceiling and the p50 of all is near 1 s.

- end to end, p99 at most poll interval + 50 ms: a change waits for its account's next
  poll (up to one interval: the accounts are spread over it), then goes venue ->
  riskmon -> Mosquitto -> subscriber;
- riskmon's own part, from the venue answer received (`Snapshot.taken_at`) to the
  broker's PUBACK, p99 at most 10 ms: read from the daemon's
  `riskmon_event_delivery_seconds` histogram on /metrics (its buckets are 1, 2, 3, 5,
  7.5, 10 ms ...; percentiles are interpolated within a bucket as Prometheus'
  `histogram_quantile` does; the target is read exactly at the 10 ms bucket).

Also printed: the daemon's CPU use while it polls 1,000 accounts a second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt

from bench.harness import (
    RULES_PER_SNAPSHOT,
    account_ids,
    cpu_seconds,
    percentile,
    running_broker,
    scenario,
    stop_process,
    verdict,
    wait_ready,
    write_config,
)
from monitor.broker import free_port
from monitor.simulator.process import simulator_process

ACCOUNTS = 1_000
CHANGES = 200
SPACING = 0.1  # seconds between two changes
POLL_INTERVAL = 1.0
TARGET_SLACK = 0.050  # end to end: p99 <= poll interval + 50 ms
TARGET_INTERNAL = 0.010  # venue answer received -> PUBACK: p99 <= 10 ms
LOSS = "-60000.00"  # daily_pnl past DailyLossOverLimit's default -50,000
NORMAL = "1250.00"  # the template's daily_pnl
ALERT = "DailyLossOverLimit"


class Changes:
    """The changes made and the events that answered them."""

    def __init__(self) -> None:
        self.changed_at: dict[tuple[str, str], float] = {}  # (account, status) -> time
        self.samples: dict[str, list[float]] = {"firing": [], "resolved": []}
        self.unexpected = 0
        self.finished = asyncio.Event()
        self.expected = 0

    def arrived(self, account: str, status: str, at: float) -> bool:
        """Record an event's arrival; True when it answered a change."""
        changed = self.changed_at.pop((account, status), None)
        if changed is None:
            self.unexpected += 1
            return False
        self.samples[status].append(at - changed)
        if sum(len(s) for s in self.samples.values()) >= self.expected:
            self.finished.set()
        return True


async def _set(session: aiohttp.ClientSession, base: str, account: str, value: str) -> None:
    body = {"venue": "clearstreet", "account": account, "set": {"daily_pnl": value}}
    async with session.post(f"{base}/_sim/set", json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"simulator control API: {response.status} {await response.text()}")


async def _subscribe(
    broker: str, changes: Changes, session: aiohttp.ClientSession, base: str, ready: asyncio.Event
) -> None:
    host, port = broker.removeprefix("mqtt://").rsplit(":", 1)
    async with aiomqtt.Client(host, int(port), identifier="riskmon-bench-latency") as client:
        await client.subscribe("riskmon/events/#", qos=1)
        ready.set()
        async for message in client.messages:
            at = time.time()
            payload = message.payload
            if not isinstance(payload, bytes | bytearray) or not payload:
                continue
            event = json.loads(payload)
            if event.get("alertname") != ALERT:
                continue
            account, status = event["account"], event["status"]
            if changes.arrived(account, status, at) and status == "firing":
                changes.changed_at[(account, "resolved")] = time.time()
                await _set(session, base, account, NORMAL)  # the alert resolves


async def _measure(
    base: str, broker: str, folder: Path, accounts: int, count: int
) -> dict[str, Any]:
    http_port = free_port()
    config = write_config(
        folder,
        base_url=base,
        accounts=accounts,
        poll_interval=f"{POLL_INTERVAL:g}s",
        mqtt_url=broker,
        http_listen=f"127.0.0.1:{http_port}",
        max_concurrency=32,
        max_requests_per_second=max(2 * accounts, 100),
        timeout="2s",
    )
    log = (folder / "riskmon.log").open("wb")
    daemon = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "monitor", "run", "-c", str(config)),
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "RISKMON_LOG_LEVEL": "warning"},
    )
    url = f"http://127.0.0.1:{http_port}"
    changes = Changes()
    changes.expected = 2 * count
    ids = account_ids(accounts)
    step = max(1, accounts // count)
    chosen = [ids[(i * step) % accounts] for i in range(count)]
    try:
        async with aiohttp.ClientSession() as session:
            if not await wait_ready(session, url, 30):
                raise RuntimeError(f"riskmon did not become ready:\n{_tail(folder)}")
            subscribed = asyncio.Event()
            subscriber = asyncio.create_task(_subscribe(broker, changes, session, base, subscribed))
            await asyncio.wait_for(subscribed.wait(), 10)
            await asyncio.sleep(1.0)  # a full cycle of steady polling first
            cpu0, wall0 = cpu_seconds(daemon.pid), time.perf_counter()
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i, account in enumerate(chosen):
                await asyncio.sleep(max(0.0, start + i * SPACING - loop.time()))
                changes.changed_at[(account, "firing")] = time.time()
                await _set(session, base, account, LOSS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changes.finished.wait(), 3 * POLL_INTERVAL + 2)
            cpu, wall = cpu_seconds(daemon.pid) - cpu0, time.perf_counter() - wall0
            subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await subscriber
            async with session.get(url + "/metrics") as response:
                metrics = await response.text()
    finally:
        await stop_process(daemon)
        log.close()
    samples = changes.samples["firing"] + changes.samples["resolved"]
    buckets = _histogram(metrics, "riskmon_event_delivery_seconds")
    internal_count = buckets[-1][1] if buckets else 0
    within_10ms = next((n for le, n in buckets if le == TARGET_INTERNAL), 0)
    result: dict[str, Any] = {
        "accounts": accounts,
        "rules_per_snapshot": RULES_PER_SNAPSHOT,
        "poll_interval_s": POLL_INTERVAL,
        "changes": count,
        "samples": len(samples),
        "missing_events": 2 * count - len(samples),
        "unexpected_events": changes.unexpected,
        "end_to_end_p50_ms": _ms(percentile(samples, 50)),
        "end_to_end_p99_ms": _ms(percentile(samples, 99)),
        "end_to_end_max_ms": _ms(max(samples, default=math.nan)),
        "firing_p50_ms": _ms(percentile(changes.samples["firing"], 50)),
        "firing_p99_ms": _ms(percentile(changes.samples["firing"], 99)),
        "resolved_p50_ms": _ms(percentile(changes.samples["resolved"], 50)),
        "resolved_p99_ms": _ms(percentile(changes.samples["resolved"], 99)),
        "internal_events": internal_count,
        "internal_p50_ms": _ms(_quantile(0.5, buckets)),
        "internal_p99_ms": _ms(_quantile(0.99, buckets)),
        "internal_share_within_10ms": round(within_10ms / internal_count, 4)
        if internal_count
        else None,
        "riskmon_cpu_share": round(cpu / wall, 3),
        "target_end_to_end_p99_ms": (POLL_INTERVAL + TARGET_SLACK) * 1000,
        "target_internal_p99_ms": TARGET_INTERNAL * 1000,
    }
    result["end_to_end_target_holds"] = (
        len(samples) == 2 * count and percentile(samples, 99) <= POLL_INTERVAL + TARGET_SLACK
    )
    result["internal_target_holds"] = bool(internal_count) and within_10ms >= 0.99 * internal_count
    result["target_holds"] = result["end_to_end_target_holds"] and result["internal_target_holds"]
    return result


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2) if not math.isnan(seconds) else math.nan


def _histogram(text: str, name: str) -> list[tuple[float, int]]:
    """(le, cumulative count) of a histogram without labels in a /metrics text."""
    buckets = []
    prefix = f'{name}_bucket{{le="'
    for line in text.splitlines():
        if line.startswith(prefix):
            le, value = line[len(prefix) :].split('"} ')
            buckets.append((math.inf if le == "+Inf" else float(le), int(float(value))))
    return sorted(buckets)


def _quantile(q: float, buckets: Sequence[tuple[float, int]]) -> float:
    """Prometheus' histogram_quantile: linear within the bucket holding the rank."""
    if not buckets or buckets[-1][1] == 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * ((rank - below) / (count - below))
        lower, below = le, count
    return lower


def _tail(folder: Path) -> str:
    path = folder / "riskmon.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--changes", type=int, default=CHANGES)
    parser.add_argument(
        "--broker-nagle",
        action="store_true",
        help="leave Mosquitto's set_tcp_nodelay at its default (false)",
    )
    args = parser.parse_args(argv)

    async def run(base: str, folder: Path) -> dict[str, Any]:
        async with running_broker(tcp_nodelay=not args.broker_nagle) as broker:
            return await _measure(base, broker, folder, args.accounts, args.changes)

    with (
        tempfile.TemporaryDirectory(prefix="riskmon-bench-latency-") as folder,
        simulator_process(scenario(args.accounts)) as (base, _pid),
    ):
        result = asyncio.run(run(base, Path(folder)))
    interval_ms = POLL_INTERVAL * 1000
    print(
        f"{args.accounts} accounts every {POLL_INTERVAL:g} s, {RULES_PER_SNAPSHOT} rules each; "
        f"{args.changes} balance changes, each fired and resolved: {result['samples']} events "
        f"({result['missing_events']} missing)"
    )
    print(
        f"  end to end (change -> MQTT subscriber): p50 {result['end_to_end_p50_ms']:.1f} ms, "
        f"p99 {result['end_to_end_p99_ms']:.1f} ms, max {result['end_to_end_max_ms']:.1f} ms"
    )
    print(
        f"    firing (changes at random moments of the interval): "
        f"p50 {result['firing_p50_ms']:.1f} ms, p99 {result['firing_p99_ms']:.1f} ms; "
        f"resolved (changed just after a poll, the worst case): "
        f"p50 {result['resolved_p50_ms']:.1f} ms, p99 {result['resolved_p99_ms']:.1f} ms"
    )
    print(
        f"  riskmon's part (venue answer -> PUBACK), {result['internal_events']} events: "
        f"p50 {result['internal_p50_ms']:.2f} ms, p99 {result['internal_p99_ms']:.2f} ms; "
        f"{result['internal_share_within_10ms']:.1%} within 10 ms"
    )
    print(f"  riskmon used {result['riskmon_cpu_share']:.1%} of a core meanwhile")
    print(
        f"target end to end p99 <= {interval_ms + TARGET_SLACK * 1000:.0f} ms: "
        f"{verdict(result['end_to_end_target_holds'])}"
    )
    print(
        f"target riskmon's part p99 <= {TARGET_INTERNAL * 1000:.0f} ms: "
        f"{verdict(result['internal_target_holds'])}"
    )
    return result


if __name__ == "__main__":
    main()
