"""Poll cost: account polls per CPU-second of riskmon, end to end, beside bare HTTP loops.

Run: `.venv/bin/python -m bench.poll_cost [--accounts 1000] [--seconds 10]`.

The simulator serves 1,000 Clear Street accounts from its own process. In this process:

1. a raw aiohttp request loop and a plain `httpx.AsyncClient` loop GET the same balances
   (`bench.http_clients.measure`): what HTTP alone costs here;
2. the daemon itself (`monitor.daemon.Daemon`: VenuePoller, ClearStreetAdapter, 20 rules,
   Metrics.update_account, the outbox and MQTT publisher on a Mosquitto, the 1 s health
   tick, the HTTP API) polls the 1,000 accounts every 300 ms: 3,333 polls a second, about
   three quarters of what it serves with a whole core of this machine, 64 requests in
   flight, no rate limit to speak of. Not more: at 100 ms (10,000 wanted) every poll had
   1-4 turns come while it still ran, each skipped and counted, work the raw loop does not
   do; the line "turns skipped while in flight" shows whether a run was over-subscribed
   (it is when other work on the machine takes riskmon's core).

The daemon runs twice, each time against its own simulator: with every account's answer
the same at each poll (the target's case: then riskmon takes the last parse, and skips the
last quiet rule run, of an equal answer, `monitor/venues/unchanged.py`), and with each
account's buying power walking in 100 ms steps, so that nearly every answer changes and
everything runs at every poll (`--answers changing`; printed beside the target, no target).

After a warm-up, completed polls and `time.process_time()` (this process only: the
simulator and Mosquitto are other processes) are counted over three 4-second windows:
polls per CPU-second, the median window's (other work on the machine moves single
windows by 10% or more). Targets: at least 5,000, and at least 0.5x the raw aiohttp loop's
requests per CPU-second measured in the same run (a ratio that does not drift with the
machine). Both sides make the same requests and the figure is CPU per completed request
or poll, so the daemon need not use a whole core for the ratio to be fair.

The ratio's yardstick is measured as the daemon is, in windows, and around it: the raw
loop runs RAW_WINDOWS windows of `--http-requests` just before the daemon starts and as
many just after it stops, and its figure is the median of them all, so a change in the
machine's load during the run moves both sides alike. Both sides fetch the same answers
(the same 1,000 balances URLs of the same simulator), 64 at a time, over pooled
keep-alive connections (64 of them, opened once and reused).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    RULES_PER_SNAPSHOT,
    CountingDaemon,
    account_ids,
    cpu_seconds,
    scenario,
    verdict,
    write_config,
)
from bench.http_clients import measure, raw_aiohttp_rates
from monitor import eventloop
from monitor.config import load_config
from monitor.logs import configure_logging
from monitor.simulator.process import simulator_process

TARGET = 5_000.0
# riskmon's whole poll per CPU-second against a raw aiohttp GET loop's requests per
# CPU-second, same run, same simulator: at least this
TARGET_RATIO = 0.5
ACCOUNTS = 1_000
SECONDS = 12.0  # measured, in WINDOWS windows; the figure is the median window's
WINDOWS = 3
WARMUP = 3.0
POLL_INTERVAL = "300ms"  # 1,000 accounts due 3,333 times a second: served without overruns
CONCURRENCY = 64
HTTP_REQUESTS = 3_000
# with --answers changing: each account's buying power steps this often, three steps or
# more between two polls 300 ms apart, so nearly every answer differs from the last
CHANGING_EVERY = "100ms"
RAW_WINDOWS = 3  # raw aiohttp windows before the daemon, and as many after it
RAW = "raw aiohttp session"
PLAIN = "httpx.AsyncClient (default transport)"
OURS = "riskmon HttpClient, aiohttp backend"


async def pipeline(config_path: Path, seconds: float, simulator_pid: int) -> dict[str, Any]:
    """Run the daemon; count polls and CPU over `seconds` after a warm-up."""
    daemon = CountingDaemon(load_config(config_path))
    run = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.serving.wait(), 20)
        for poller in daemon.pollers.values():
            await asyncio.wait_for(poller.first_cycle_done.wait(), 30)
        await asyncio.sleep(WARMUP)
        windows = []
        for _ in range(WINDOWS):
            polls0, failed0 = daemon.snapshots, daemon.failures
            skipped0 = daemon.skipped
            sim0 = cpu_seconds(simulator_pid)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(seconds / WINDOWS)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            windows.append(
                {
                    "polls": daemon.snapshots - polls0,
                    "failed_polls": daemon.failures - failed0,
                    "skipped_turns": daemon.skipped - skipped0,
                    "cpu_seconds": cpu,
                    "wall_seconds": wall,
                    "simulator_cpu_seconds": cpu_seconds(simulator_pid) - sim0,
                }
            )
    finally:
        daemon.stop()
        await asyncio.wait_for(run, 30)
    rates = [w["polls"] / w["cpu_seconds"] for w in windows]
    total = {key: sum(w[key] for w in windows) for key in windows[0]}
    polls, cpu, wall = total["polls"], total["cpu_seconds"], total["wall_seconds"]
    return {
        "polls": polls,
        "failed_polls": total["failed_polls"],
        "skipped_turns": total["skipped_turns"],
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(wall, 3),
        "polls_per_cpu_second": round(statistics.median(rates)),
        "polls_per_cpu_second_windows": [round(r) for r in rates],
        "cpu_ms_per_poll": round(cpu / polls * 1000, 4) if polls else None,
        "polls_per_second_wall": round(polls / wall),
        "riskmon_cpu_share": round(cpu / wall, 2),
        "simulator_cpu_share": round(total["simulator_cpu_seconds"] / wall, 2),
    }


def measure_case(
    args: argparse.Namespace, walk_every: str | None, *, with_clients: bool
) -> dict[str, Any]:
    """One simulator (its answers unchanged, or changing with `walk_every`): the raw
    aiohttp loop's windows around the daemon's, and (`with_clients`) the other HTTP loops."""
    accounts = account_ids(args.accounts)
    with (
        tempfile.TemporaryDirectory(prefix="riskmon-bench-poll-") as folder,
        simulator_process(scenario(args.accounts, walk_every=walk_every)) as (
            base,
            simulator_pid,
        ),
    ):
        http_rows: list[dict[str, Any]] = []
        raw_rates: list[float] = []

        def raw_windows() -> None:
            raw_rates.extend(
                eventloop.run(
                    raw_aiohttp_rates(base, accounts, args.http_requests, CONCURRENCY, RAW_WINDOWS)
                )
            )

        if args.http_requests:
            if with_clients:
                http_rows = eventloop.run(measure(base, accounts, args.http_requests, CONCURRENCY))
            raw_windows()
        config = write_config(
            Path(folder),
            base_url=base,
            accounts=args.accounts,
            poll_interval=args.poll_interval,
            max_concurrency=CONCURRENCY,
        )
        ours = eventloop.run(pipeline(config, args.seconds, simulator_pid))
        if args.http_requests:
            raw_windows()
    raw = round(statistics.median(raw_rates)) if raw_rates else None
    rate = ours["polls_per_cpu_second"]
    return {
        "riskmon": ours,
        "http_clients": http_rows,
        "raw_aiohttp_requests_per_cpu_second": raw,
        "raw_aiohttp_requests_per_cpu_second_windows": [round(r) for r in raw_rates],
        "polls_per_cpu_second": rate,
        "ratio_to_raw_aiohttp": round(rate / raw, 2) if raw else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.poll_cost", description=__doc__)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--poll-interval", default=POLL_INTERVAL)
    parser.add_argument(
        "--http-requests",
        type=int,
        default=HTTP_REQUESTS,
        help="requests per bare HTTP loop (0: skip them, e.g. to profile the daemon alone)",
    )
    parser.add_argument(
        "--answers",
        choices=("unchanged", "changing", "both"),
        default="both",
        help="unchanged: every account's answer the same at each poll (the target's case);"
        " changing: a field of each moves between any two polls; both (default)",
    )
    args = parser.parse_args(argv)
    configure_logging("warning")
    unchanged = changing = None
    if args.answers != "changing":
        unchanged = measure_case(args, None, with_clients=True)
    if args.answers != "unchanged":
        changing = measure_case(args, CHANGING_EVERY, with_clients=unchanged is None)
    main_case = unchanged if unchanged is not None else changing
    assert main_case is not None
    ours = main_case["riskmon"]
    by_name = {row["client"]: row for row in main_case["http_clients"]}
    raw = main_case["raw_aiohttp_requests_per_cpu_second"]
    plain = by_name.get(PLAIN, {}).get("requests_per_cpu_second")
    rate = ours["polls_per_cpu_second"]
    result: dict[str, Any] = {
        "accounts": args.accounts,
        "rules_per_snapshot": RULES_PER_SNAPSHOT,
        "poll_interval": args.poll_interval,
        "concurrency": CONCURRENCY,
        "answers": "changing" if unchanged is None else "unchanged",
        **main_case,
        "plain_httpx_requests_per_cpu_second": plain,
        "ratio_to_plain_httpx": round(rate / plain, 2) if plain else None,
        "target_polls_per_cpu_second": TARGET,
        "target_holds": rate >= TARGET,
        "target_ratio_to_raw_aiohttp": TARGET_RATIO,
        "ratio_holds": bool(raw) and rate / raw >= TARGET_RATIO,
        "changing_answers": changing if unchanged is not None else None,
        "event_loop": eventloop.loop_name(),
    }
    print(
        f"{args.accounts} accounts, {RULES_PER_SNAPSHOT} rules each, "
        f"poll_interval {args.poll_interval} ({CONCURRENCY} in flight), "
        f"{ours['wall_seconds']:.0f} s window, CPU of this process only, every loop on"
        f" {eventloop.loop_name()} as the daemon's:"
    )
    print(f"  {'loop':48} {'per CPU-s':>10} {'CPU ms each':>11} {'per s wall':>10}")
    if raw:
        windows = len(main_case["raw_aiohttp_requests_per_cpu_second_windows"])
        label = f"raw aiohttp GET loop (median of {windows} windows)"
        print(f"  {label:48} {raw:>10} {1000 / raw:>11.3f} {'-':>10}")
    for label, name in (
        ("plain httpx.AsyncClient GET loop", PLAIN),
        ("riskmon HttpClient GET loop (HTTP only)", OURS),
    ):
        if name in by_name:
            row = by_name[name]
            print(
                f"  {label:48} {row['requests_per_cpu_second']:>10} "
                f"{row['cpu_ms_per_request']:>11.3f} {row['requests_per_second_wall']:>10}"
            )
    for case, label in (
        (unchanged, "riskmon daemon, whole poll, answers unchanged"),
        (changing, "riskmon daemon, whole poll, answers changing"),
    ):
        if case is None:
            continue
        daemon = case["riskmon"]
        print(
            f"  {label:48} {case['polls_per_cpu_second']:>10} "
            f"{daemon['cpu_ms_per_poll']:>11.3f} {daemon['polls_per_second_wall']:>10}"
        )
        print(
            f"    {daemon['polls']} polls ({daemon['failed_polls']} failed,"
            f" {daemon['skipped_turns']} turns skipped while in flight); riskmon used"
            f" {daemon['riskmon_cpu_share']:.0%} of a core, the simulator"
            f" {daemon['simulator_cpu_share']:.0%}"
        )
        windows = case["raw_aiohttp_requests_per_cpu_second_windows"]
        if windows:
            print(
                f"    raw aiohttp GET loop, {len(windows)} windows of {args.http_requests}"
                f" requests around the daemon's: {', '.join(f'{r:,}' for r in windows)} per"
                f" CPU-s, median {case['raw_aiohttp_requests_per_cpu_second']:,}; ratio"
                f" {case['ratio_to_raw_aiohttp']:.2f}x"
            )
    if raw and plain:
        print(
            f"  riskmon polls per CPU-second: {rate / raw:.2f}x raw aiohttp requests, "
            f"{rate / plain:.2f}x plain httpx requests"
        )
    print(f"target >= {TARGET:,.0f} polls per CPU-second: {verdict(rate >= TARGET)}")
    if raw:
        print(
            f"ratio to the raw aiohttp GET loop, same run, answers {result['answers']}:"
            f" {rate / raw:.2f}x (target >= {TARGET_RATIO}x): {verdict(rate / raw >= TARGET_RATIO)}"
        )
    return result


if __name__ == "__main__":
    main()
