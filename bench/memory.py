"""Memory: RSS per monitored account at 10,000 accounts, metrics included.

Run: `.venv/bin/python -m bench.memory [--accounts 10000]`.

Two fresh processes (so that no other benchmark's garbage counts) each run the daemon
(`monitor.daemon.Daemon`, everything imported, HTTP API, MQTT publisher on a Mosquitto)
against the simulator (its own process), with the same config but for the accounts:

- the baseline: one account (riskmon refuses a venue without accounts);
- the measured: 10,000 accounts, after one full poll cycle: every account has its
  snapshot, its metric series, its evaluator caches and its poller state.

Each waits for its first poll cycle and one second more, collects garbage and reads its
resident set size from /proc. (RSS of the measured - RSS of the baseline) / (accounts - 1)
is the cost of one monitored account; the measured process runs three times and the
median counts. Target: at most 10 KB (10,240 bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    CountingDaemon,
    rss_bytes,
    running_broker,
    scenario,
    verdict,
    write_config,
)
from monitor import eventloop
from monitor.config import load_config
from monitor.logs import configure_logging
from monitor.simulator.process import simulator_process

TARGET_BYTES = 10 * 1024
ACCOUNTS = 10_000
POLL_INTERVAL = "5s"  # 10,000 accounts in one cycle: 2,000 polls a second
# The measured process's RSS moved by 1 MiB between identical runs (where the allocator
# placed the first cycle's short-lived objects): 100 bytes an account. Its median of 3.
MEASURED_RUNS = 3


async def _child(config: Path) -> dict[str, Any]:
    """In the child process: run the daemon until its first cycle is done; its RSS."""
    started = time.perf_counter()
    daemon = CountingDaemon(load_config(config))
    run = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.serving.wait(), 30)
        for poller in daemon.pollers.values():
            await asyncio.wait_for(poller.first_cycle_done.wait(), 60)
        cycle = time.perf_counter() - started
        await asyncio.sleep(1.0)
        gc.collect()
        rss = rss_bytes()
        accounts = sum(len(p.accounts) for p in daemon.pollers.values())
        with_snapshot = sum(
            1 for p in daemon.pollers.values() for s in p.accounts.values() if s.last_snapshot
        )
        series = daemon.metrics.render().count(b"\n")
    finally:
        daemon.stop()
        await asyncio.wait_for(run, 30)
    return {
        "accounts": accounts,
        "accounts_with_snapshot": with_snapshot,
        "failed_polls": daemon.failures,
        "metrics_lines": series,
        "rss_bytes": rss,
        "seconds_to_first_cycle": round(cycle, 2),
    }


def _measure(base: str, broker: str, folder: Path, accounts: int) -> dict[str, Any]:
    config = write_config(
        folder / str(accounts),
        base_url=base,
        accounts=accounts,
        poll_interval=POLL_INTERVAL,
        mqtt_url=broker,
        max_requests_per_second=5_000,
        max_concurrency=64,
        timeout="10s",
        stale_after="1m",
    )
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--child", str(config)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the measuring process failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # a measuring process
    args = parser.parse_args(argv)
    if args.child is not None:
        configure_logging("warning")
        print(json.dumps(eventloop.run(_child(args.child))))
        return {}

    async def both(base: str, folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with running_broker() as broker:
            baseline = await asyncio.to_thread(_measure, base, broker, folder, 1)
            loaded = [
                await asyncio.to_thread(_measure, base, broker, folder, args.accounts)
                for _ in range(MEASURED_RUNS)
            ]
        return baseline, loaded

    with (
        tempfile.TemporaryDirectory(prefix="riskmon-bench-memory-") as folder,
        simulator_process(scenario(args.accounts)) as (base, _pid),
    ):
        baseline, runs = asyncio.run(both(base, Path(folder)))
    runs.sort(key=lambda run: int(run["rss_bytes"]))
    loaded = runs[len(runs) // 2]  # the median run
    per_run = [(run["rss_bytes"] - baseline["rss_bytes"]) / (args.accounts - 1) for run in runs]
    per_account = per_run[len(runs) // 2]
    complete = all(run["accounts_with_snapshot"] == args.accounts for run in runs)
    result: dict[str, Any] = {
        "accounts": args.accounts,
        "baseline": baseline,
        "measured": loaded,
        "rss_bytes_per_account": round(per_account),
        "rss_bytes_per_account_runs": [round(bytes_) for bytes_ in per_run],
        "target_bytes_per_account": TARGET_BYTES,
        "target_holds": complete and per_account <= TARGET_BYTES,
    }
    print(
        f"RSS of the daemon with 1 account:       {baseline['rss_bytes'] / 2**20:8.1f} MiB\n"
        f"RSS with {args.accounts:,} accounts polled once: {loaded['rss_bytes'] / 2**20:8.1f} MiB "
        f"({loaded['accounts_with_snapshot']:,} with a snapshot, {loaded['metrics_lines']:,} "
        f"/metrics lines; first cycle after {loaded['seconds_to_first_cycle']} s)"
    )
    print(
        f"per monitored account: {per_account:,.0f} bytes, the median of {MEASURED_RUNS} "
        f"processes ({', '.join(f'{bytes_:,.0f}' for bytes_ in per_run)})"
    )
    print(
        f"target <= {TARGET_BYTES:,} bytes per account: {verdict(result['target_holds'])}"
        + ("" if complete else " (not every account was polled)")
    )
    return result


if __name__ == "__main__":
    main()
