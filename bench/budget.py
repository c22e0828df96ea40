"""The request budget spent where the risk is: breach-to-MQTT latency, uniform vs risk-aware.

Run: `.venv/bin/python -m bench.budget [--seconds 75] [--seed 13]`.

Real sockets and real processes: the simulator (its own process: in this one, its
answers waited for this process's work and came in bursts) serves 1,000 Clear Street
accounts; `riskmon run` (its own process)
polls them with a budget of 50 requests/s (`max_requests_per_second: 50`; every account
every 1,000 / (50 x 0.95) = 21 s when spread alike), `poll_interval: 1s`,
`max_poll_interval: 60s`, one rule `buying_power < params.buying_power_floor` (50,000),
and publishes to a Mosquitto that this process subscribes to.

980 accounts' buying power walks randomly (+/-100 every second, within 60,000-120,000:
never near the floor); 20 drift down by 100 a second and cross the floor at moments drawn
at random (from the seed) between `--seconds` x 0.6 and `--seconds` after the start.
The same scenario runs twice: with `RISKMON_SCHEDULE=uniform` (the budget spread alike)
and with the risk-aware schedule (`monitor/schedule.py`). For each run: latency from the
moment a drifting account's value crossed its floor (computed from the scenario and the
simulator's clock) to the firing event's arrival on MQTT, p50/p99/max, and the requests
the simulator received in all and in its busiest second (the budget is 50). Both runs
last as long (25 s after the last crossing), so their requests compare.

Targets: risk-aware p99 <= 3 s and at least 5x sooner than uniform's p99, with no more
requests in all, and no second above the budget in either run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt

from bench.harness import (
    API_KEY,
    account_ids,
    percentile,
    running_broker,
    stop_process,
    verdict,
    wait_ready,
)
from monitor.broker import free_port
from monitor.simulator.process import simulator_process

ACCOUNTS = 1000
DRIFTING = 20
BUDGET = 50
FLOOR = 50_000
DRIFT_PER_SECOND = 100
TARGET_P99 = 3.0
LINGER = 25.0  # seconds each run goes on after the last crossing: uniform's cycle is 21
TARGET_RATIO = 5.0

RULES = f"""\
groups:
  - name: capital
    venues: [clearstreet]
    rules:
      - alert: BuyingPowerBelowFloor
        expr: buying_power < params.buying_power_floor
        params: {{buying_power_floor: {FLOOR}}}
        severity: critical
        annotations: {{summary: "buying power under its floor"}}
"""


def plan(seed: int, seconds: float) -> tuple[dict[str, Any], dict[str, float]]:
    """The simulator's scenario and each drifting account's crossing time (simulator
    seconds)."""
    rng = random.Random(seed)
    ids = account_ids(ACCOUNTS)
    drifting = rng.sample(ids, DRIFTING)
    crossing = {a: rng.uniform(0.6 * seconds, seconds) for a in drifting}
    timeline: list[dict[str, Any]] = []
    for account in ids:
        if account in crossing:
            over = crossing[account] + 60
            start = FLOOR + DRIFT_PER_SECOND * crossing[account]
            end = start - DRIFT_PER_SECOND * over
            ramp = {"field": "buying_power", "from": f"{start:.2f}", "to": f"{end:.2f}"}
            timeline.append(
                {
                    "at": "0s",
                    "venue": "clearstreet",
                    "account": account,
                    "ramp": ramp | {"over": f"{over:.3f}s"},
                }
            )
        else:
            walk = {
                "field": "buying_power",
                "step": "100",
                "every": "1s",
                "min": "60000",
                "max": "120000",
            }
            timeline.append({"at": "0s", "venue": "clearstreet", "account": account, "walk": walk})
    scenario = {
        "seed": seed,
        "clearstreet": {
            "api_keys": [API_KEY],
            "accounts": [
                {"generate": {"count": ACCOUNTS, "first_id": int(ids[0]), "template": "margin"}}
            ],
        },
        "timeline": timeline,
    }
    return scenario, crossing


def write_config(folder: Path, base_url: str, broker: str, http_port: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yaml").write_text(RULES)
    (folder / "key").write_text(API_KEY + "\n")
    lines = [
        "instance: bench-budget",
        "state_dir: state",
        f'http: {{listen: "127.0.0.1:{http_port}"}}',
        f'mqtt: {{url: "{broker}", topic_prefix: riskmon}}',
        'rules: ["rules.yaml"]',
        "stale_after: 130s",
        "venues:",
        "  - name: cs",
        "    kind: clearstreet",
        f"    base_url: {base_url}/clearstreet",
        "    api_key_file: key",
        "    poll_interval: 1s",
        "    max_poll_interval: 60s",
        f"    max_requests_per_second: {BUDGET}",
        "    timeout: 5s",
        "    accounts:",
        *(f'      - id: "{a}"' for a in account_ids(ACCOUNTS)),
    ]
    path = folder / "riskmon.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def _firings(
    broker: str, arrived: dict[str, float], ready: asyncio.Event, done: asyncio.Event
) -> None:
    host, _, port = broker.removeprefix("mqtt://").partition(":")
    async with aiomqtt.Client(host, int(port)) as client:
        await client.subscribe("riskmon/events/#", qos=1)
        ready.set()
        async for message in client.messages:
            at = time.time()
            payload = message.payload
            if not isinstance(payload, bytes | bytearray) or not payload:
                continue
            event = json.loads(payload)
            if event.get("status") == "firing":
                arrived.setdefault(event["account"], at)
                if len(arrived) >= DRIFTING:
                    done.set()


async def _simulator_start(session: aiohttp.ClientSession, base: str) -> float:
    """The wall time of the simulator's 0 s (its timeline runs from there)."""
    before = time.time()
    async with session.get(base + "/_sim/clock") as response:
        elapsed = (await response.json())["elapsed"]
    return (before + time.time()) / 2 - float(elapsed)


async def run_once(schedule: str, seed: int, seconds: float, broker: str) -> dict[str, Any]:
    scenario, crossing = plan(seed, seconds)
    with simulator_process(scenario) as (base_url, _pid):
        async with aiohttp.ClientSession() as session:
            started = await _simulator_start(session, base_url)
            arrived = await _run_daemon(schedule, crossing, started, base_url, broker)
            async with session.get(base_url + "/_sim/requests?venue=clearstreet") as response:
                requests = await response.json()
    end = started + max(crossing.values()) + LINGER
    latencies = [arrived[a] - (started + t) for a, t in crossing.items() if a in arrived]
    requests = [r for r in requests if r["t"] < end]
    per_second = Counter(int(r["t"] - started) for r in requests)
    return {
        "schedule": schedule,
        "breaches": DRIFTING,
        "detected": len(latencies),
        "p50_s": round(percentile(latencies, 50), 3),
        "p99_s": round(percentile(latencies, 99), 3),
        "max_s": round(max(latencies, default=math.nan), 3),
        "requests": len(requests),
        "seconds": round(end - started, 1),
        "busiest_second": max(per_second.values(), default=0),
    }


async def _run_daemon(
    schedule: str, crossing: dict[str, float], started: float, base_url: str, broker: str
) -> dict[str, float]:
    """Run riskmon until `LINGER` after the last crossing; when each firing arrived."""
    arrived: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="riskmon-bench-budget-") as name:
        folder = Path(name)
        http_port = free_port()
        config = write_config(folder, base_url, broker, http_port)
        env = {**os.environ, "RISKMON_LOG_LEVEL": "warning", "RISKMON_SCHEDULE": schedule}
        log = (folder / "riskmon.log").open("wb")
        ready, done = asyncio.Event(), asyncio.Event()
        subscriber = asyncio.create_task(_firings(broker, arrived, ready, done))
        await asyncio.wait_for(ready.wait(), 10)
        daemon = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "monitor", "run", "-c", str(config)),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=folder,
        )
        try:
            async with aiohttp.ClientSession() as session:
                if not await wait_ready(session, f"http://127.0.0.1:{http_port}", 30):
                    raise RuntimeError("riskmon did not become ready")
            # Both runs last as long (uniform's cycle after the last crossing, and some),
            # so that their requests compare.
            end = started + max(crossing.values()) + LINGER
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), end - time.time())
            await asyncio.sleep(max(0.0, end - time.time()))
        finally:
            await stop_process(daemon)
            log.close()
            subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await subscriber
    return arrived


async def _run(seed: int, seconds: float) -> dict[str, Any]:
    async with running_broker() as broker:
        uniform = await run_once("uniform", seed, seconds, broker)
        risk = await run_once("risk", seed, seconds, broker)
    ratio = uniform["p99_s"] / risk["p99_s"] if risk["p99_s"] > 0 else math.inf
    result: dict[str, Any] = {
        "accounts": ACCOUNTS,
        "budget_requests_per_second": BUDGET,
        "seed": seed,
        "uniform": uniform,
        "risk_aware": risk,
        "p99_ratio": round(ratio, 1),
        "target_p99_s": TARGET_P99,
        "target_ratio": TARGET_RATIO,
    }
    result["within_budget"] = max(uniform["busiest_second"], risk["busiest_second"]) <= BUDGET
    result["target_holds"] = (
        risk["detected"] == DRIFTING
        and uniform["detected"] == DRIFTING
        and risk["p99_s"] <= TARGET_P99
        and ratio >= TARGET_RATIO
        and risk["requests"] <= uniform["requests"]
        and result["within_budget"]
    )
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.budget", description=__doc__)
    parser.add_argument("--seconds", type=float, default=75.0, help="the last crossing")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    result = asyncio.run(_run(args.seed, args.seconds))
    print(f"{'schedule':<12} {'p50':>8} {'p99':>8} {'max':>8} {'requests':>9} {'busiest s':>10}")
    for run in (result["uniform"], result["risk_aware"]):
        print(
            f"{run['schedule']:<12} {run['p50_s']:>7.2f}s {run['p99_s']:>7.2f}s "
            f"{run['max_s']:>7.2f}s {run['requests']:>9} {run['busiest_second']:>10}"
        )
    print(
        f"risk-aware p99 {result['p99_ratio']}x sooner (target >= {TARGET_RATIO:g}x, "
        f"p99 <= {TARGET_P99:g} s, no more requests, <= {BUDGET}/s): "
        f"{verdict(result['target_holds'])}"
    )
    return result


if __name__ == "__main__":
    main()
