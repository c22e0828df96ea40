"""Sizing: what one replica needs for 1,000 accounts every 2 s (the Kubernetes requests).

Run: `.venv/bin/python -m bench.sizing [--seconds 90]`. Not part of `make bench` (it
takes two minutes and has no target); `deploy/kubernetes/statefulset.yaml` quotes it.

`riskmon run` in its own process, as in production, polls 800 Clear Street `margin`
accounts and 200 Polymarket accounts on the simulator every 2 s (about 500 polls a
second) with the shipped rules only (`rules/*.yaml`), publishes to a Mosquitto and is
scraped every 5 s as Prometheus would. After a warm-up, the CPU time (user + system) and
the resident set of the process are read from /proc every 5 s. Printed: CPU in cores per
5 s window (average and busiest), CPU per 100 polls a second, RSS (steady and peak) and
the CPU-seconds that start-up took, then the requests they suggest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.harness import (
    API_KEY,
    FIRST_ID,
    REPO,
    cpu_seconds,
    rss_bytes,
    running_broker,
    stop_process,
    wait_ready,
)
from monitor.broker import free_port
from monitor.simulator.keys import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, ensure_demo_credentials
from monitor.simulator.process import simulator_process

CS_ACCOUNTS = 800
PM_ACCOUNTS = 200
POLL_INTERVAL = 2.0  # seconds
SCRAPE_INTERVAL = 5.0  # seconds: Prometheus' scrape_interval in deploy/prometheus
WARMUP = 10.0  # seconds after /readyz before the first reading
PM_CLIENT = "riskmon-sizing"
PM_PARTICIPANT = "firms/ACME/users/riskbot"
PM_PREFIX = "firms/ACME/accounts/sizing-"


def _scenario(keys: Path, cs: int, pm: int) -> dict[str, Any]:
    return {
        "clearstreet": {
            "api_keys": [API_KEY],
            "accounts": [{"generate": {"count": cs, "first_id": FIRST_ID, "template": "margin"}}],
        },
        "polymarket": {
            "clients": [
                {
                    "client_id": PM_CLIENT,
                    "public_key_file": str(keys / PUBLIC_KEY_FILE),
                    "participant_id": PM_PARTICIPANT,
                }
            ],
            "accounts": [{"generate": {"count": pm, "prefix": PM_PREFIX}}],
        },
    }


def _config(
    folder: Path, keys: Path, base: str, broker: str, http_port: int, cs: int, pm: int
) -> Path:
    """A riskmon.yaml as an operator would write it for this replica."""
    interval = f"{POLL_INTERVAL:g}s"
    (folder / "clearstreet-api-key").write_text(API_KEY + "\n")
    config = {
        "instance": "sizing",
        "state_dir": "state",
        "http": {"listen": f"127.0.0.1:{http_port}"},
        "mqtt": {"url": broker, "topic_prefix": "riskmon"},
        "rules": [str(REPO / "rules" / "*.yaml")],
        "stale_after": "30s",
        "venues": [
            {
                "name": "cs",
                "kind": "clearstreet",
                "base_url": f"{base}/clearstreet",
                "api_key_file": "clearstreet-api-key",
                "poll_interval": interval,
                "timeout": "2s",
                "max_concurrency": 32,
                "max_requests_per_second": 2 * math.ceil(cs / POLL_INTERVAL),
                "accounts": [{"id": str(FIRST_ID + i)} for i in range(cs)],
            },
            {
                "name": "pmx",
                "kind": "polymarket",
                "base_url": f"{base}/polymarket",
                "poll_interval": interval,
                "timeout": "2s",
                "max_concurrency": 16,
                "max_requests_per_second": 2 * math.ceil(pm / POLL_INTERVAL),
                "auth": {
                    "token_url": f"{base}/polymarket/oauth/token",
                    "client_id": PM_CLIENT,
                    "private_key_file": str(keys / PRIVATE_KEY_FILE),
                    "participant_id": PM_PARTICIPANT,
                },
                "accounts": [{"id": f"{PM_PREFIX}{i}"} for i in range(1, pm + 1)],
            },
        ],
    }
    path = folder / "riskmon.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def polls_total(metrics: str) -> float:
    """riskmon_polls_total summed over venues and outcomes."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("riskmon_polls_total{")
    )


@contextlib.contextmanager
def simulated_venues(cs: int, pm: int) -> Iterator[tuple[str, Path, Path]]:
    """The simulator serving `cs` Clear Street and `pm` Polymarket accounts, and a
    folder for the replica; yields (simulator URL, folder, folder of the credentials)."""
    with tempfile.TemporaryDirectory(prefix="riskmon-bench-sizing-") as name:
        folder = Path(name)
        keys = folder / "secrets"
        ensure_demo_credentials(keys)
        with simulator_process(_scenario(keys, cs, pm)) as (base, _pid):
            yield base, folder, keys


@contextlib.asynccontextmanager
async def running_replica(
    base: str,
    folder: Path,
    keys: Path,
    cs: int,
    pm: int,
    *,
    command: Sequence[str] = ("-m", "monitor"),
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, aiohttp.ClientSession]]:
    """`riskmon run` as one replica of the sizing (a Mosquitto, this config), ready;
    yields (its process, its HTTP URL, a session); stopped (SIGTERM) at exit.
    `command`: the Python arguments that start riskmon (`bench.soak --probe` runs it
    under `bench.memprobe`); `env`: more environment for it."""
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    async with running_broker() as broker:
        config = _config(folder, keys, base, broker, http_port, cs, pm)
        log = (folder / "riskmon.log").open("wb")
        daemon = await asyncio.create_subprocess_exec(
            *(sys.executable, *command, "run", "-c", str(config)),
            cwd=folder,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "RISKMON_LOG_LEVEL": "warning", **(env or {})},
        )
        try:
            async with aiohttp.ClientSession() as session:
                if not await wait_ready(session, url, 60):
                    tail = (folder / "riskmon.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"riskmon did not become ready:\n{tail}")
                yield daemon, url, session
        finally:
            await stop_process(daemon)
            log.close()


async def scrape(session: aiohttp.ClientSession, url: str) -> str:
    """The /metrics text, as Prometheus scrapes it."""
    async with session.get(url + "/metrics") as response:
        return await response.text()


async def _measure(
    base: str, folder: Path, keys: Path, cs: int, pm: int, seconds: float
) -> dict[str, Any]:
    windows: list[float] = []
    rss: list[int] = []
    async with running_replica(base, folder, keys, cs, pm) as (daemon, url, session):
        startup_cpu = cpu_seconds(daemon.pid)
        await asyncio.sleep(WARMUP)
        polls0 = polls_total(await scrape(session, url))
        cpu0 = last = cpu_seconds(daemon.pid)
        wall0 = time.monotonic()
        for _ in range(max(1, round(seconds / SCRAPE_INTERVAL))):
            await asyncio.sleep(SCRAPE_INTERVAL)
            metrics = await scrape(session, url)
            now = cpu_seconds(daemon.pid)
            windows.append((now - last) / SCRAPE_INTERVAL)
            rss.append(rss_bytes(daemon.pid))
            last = now
        wall = time.monotonic() - wall0
        polls = polls_total(metrics) - polls0
        peak = rss_bytes(daemon.pid, peak=True)
    polls_per_second = polls / wall
    cores = (last - cpu0) / wall
    return {
        "clearstreet_accounts": cs,
        "polymarket_accounts": pm,
        "poll_interval_s": POLL_INTERVAL,
        "seconds": round(wall, 1),
        "polls_per_second": round(polls_per_second, 1),
        "cpu_cores_mean": round(cores, 3),
        "cpu_cores_busiest_window": round(max(windows), 3),
        "cpu_cores_quietest_window": round(min(windows), 3),
        "cpu_cores_per_100_polls_per_second": round(100 * cores / polls_per_second, 4),
        "startup_cpu_seconds": round(startup_cpu, 2),
        "rss_mib_steady": round(statistics.median(rss) / 2**20, 1),
        "rss_mib_peak": round(peak / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.sizing", description=__doc__)
    parser.add_argument("--clearstreet", type=int, default=CS_ACCOUNTS)
    parser.add_argument("--polymarket", type=int, default=PM_ACCOUNTS)
    parser.add_argument("--seconds", type=float, default=90.0, help="measured after warm-up")
    args = parser.parse_args(argv)
    with simulated_venues(args.clearstreet, args.polymarket) as (base, folder, keys):
        result = asyncio.run(
            _measure(base, folder, keys, args.clearstreet, args.polymarket, args.seconds)
        )
    print(
        f"{result['clearstreet_accounts']} Clear Street + {result['polymarket_accounts']} "
        f"Polymarket accounts every {POLL_INTERVAL:g} s, shipped rules, scraped every "
        f"{SCRAPE_INTERVAL:g} s; {result['seconds']:g} s after a {WARMUP:g} s warm-up:"
    )
    print(f"  polls: {result['polls_per_second']:,.0f} a second")
    print(
        f"  CPU: {result['cpu_cores_mean']:.3f} cores on average, "
        f"{result['cpu_cores_quietest_window']:.3f}-{result['cpu_cores_busiest_window']:.3f} "
        f"per {SCRAPE_INTERVAL:g} s window; {result['cpu_cores_per_100_polls_per_second']:.4f} "
        "cores per 100 polls a second"
    )
    print(f"  start-up (to /readyz 200): {result['startup_cpu_seconds']:.2f} CPU-seconds")
    print(
        f"  RSS: {result['rss_mib_steady']:.1f} MiB steady, {result['rss_mib_peak']:.1f} MiB peak"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
