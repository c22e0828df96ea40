"""Start-up: from `riskmon run` to `/readyz` 200, with 1,000 accounts.

Run: `.venv/bin/python -m bench.startup [--accounts 1000] [--runs 3]`.

A Mosquitto and the simulator (1,000 Clear Street accounts) are already running, as in
production; each run starts `riskmon run -c riskmon.yaml` as a new process with a fresh
state folder and times it from just before the process is created to the first 200 of
`/readyz` (asked every 5 ms). Ready means: config and 20 rules per account loaded, HTTP
serving, MQTT connected, and the first poll cycle done: every account polled once.

The config is the one production would use for 1,000 accounts: `poll_interval: 1s`,
`max_requests_per_second: 2000`, `max_concurrency: 32`. riskmon spreads an interval's
polls over the interval (each account at its own phase), but catches up the first polls
at the venue's rate limit (monitor/poller.py): the first cycle takes about 1,000 / 2,000
requests a second = 0.5 s, so the start-up figure is about 0.5 s of polling plus the
process's own start (imports, config, rules, connections).

Target: at most 2 s (the slowest run counts).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import (
    running_broker,
    scenario,
    stop_process,
    verdict,
    wait_ready,
    write_config,
)
from monitor.broker import free_port
from monitor.simulator.process import simulator_process

TARGET_SECONDS = 2.0
ACCOUNTS = 1_000
RUNS = 3


async def _start_once(base: str, broker: str, folder: Path, accounts: int) -> float:
    http_port = free_port()
    config = write_config(
        folder,
        base_url=base,
        accounts=accounts,
        poll_interval="1s",
        mqtt_url=broker,
        http_listen=f"127.0.0.1:{http_port}",
        max_concurrency=32,
        max_requests_per_second=2_000,
        timeout="2s",
    )
    log = (folder / "riskmon.log").open("wb")
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "monitor", "run", "-c", str(config)),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "RISKMON_LOG_LEVEL": "warning"},
        )
        try:
            ready = await wait_ready(session, f"http://127.0.0.1:{http_port}", 30)
            elapsed = time.perf_counter() - started
        finally:
            await stop_process(process)
            log.close()
    if not ready:
        text = (folder / "riskmon.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"riskmon did not become ready in 30 s:\n{text}")
    return elapsed


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args(argv)

    async def runs(base: str, folder: Path) -> list[float]:
        async with running_broker() as broker:
            return [
                await _start_once(base, broker, folder / f"run-{i}", args.accounts)
                for i in range(args.runs)
            ]

    with (
        tempfile.TemporaryDirectory(prefix="riskmon-bench-startup-") as folder,
        simulator_process(scenario(args.accounts)) as (base, _pid),
    ):
        seconds = asyncio.run(runs(base, Path(folder)))
    worst = max(seconds)
    result: dict[str, Any] = {
        "accounts": args.accounts,
        "poll_interval_s": 1.0,
        "runs_s": [round(s, 3) for s in seconds],
        "median_s": round(statistics.median(seconds), 3),
        "max_s": round(worst, 3),
        "target_s": TARGET_SECONDS,
        "target_holds": worst <= TARGET_SECONDS,
    }
    print(
        f"`riskmon run` with {args.accounts} accounts (poll_interval 1s) to /readyz 200: "
        + ", ".join(f"{s:.2f} s" for s in seconds)
    )
    print(f"target <= {TARGET_SECONDS:.0f} s (slowest run): {verdict(result['target_holds'])}")
    return result


if __name__ == "__main__":
    main()
