"""Soak: does a replica's memory, fd or task count grow over a long run?

Run: `.venv/bin/python -m bench.soak [--minutes 5]`, for hours `--minutes 120`. Not part
of `make bench` (it takes minutes to hours). Exit status 1 when the target is missed.

The replica of `python -m bench.sizing` (its own `riskmon run` process: 800 Clear
Street and 200 Polymarket accounts on the simulator every 2 s, the shipped rules, a
Mosquitto, scraped every 5 s as Prometheus would) runs for `--minutes`. Every scrape
reads the daemon's RSS and open fds from /proc, and `riskmon_asyncio_tasks` and
`riskmon_outbox_pending` from the scrape; a table row is printed every `--report`
minutes.

After a warm-up (`--warmup`, 10 minutes; half the run when the run is shorter than
twice that) the target is: RSS growing under 2% per hour (the least-squares slope of the
samples after the warm-up, against the RSS at its end), and neither fds nor tasks
growing (the fewest in the last quarter of the samples after the warm-up no more than
the fewest in the first quarter, give or take 2 and 5%: a leaked fd or task is always
there, while connections in the pool and polls in flight come and go; after a stall the
pools may keep more idle connections, up to each venue's `max_concurrency`: a rise that
stops there is the pools' bound, not a leak, though it is reported). Also printed: the
minute from which RSS stayed within 1% of where it ended (the warm-up it measured) and,
when that is later than the warm-up, the growth after it.

Ctrl-C or SIGTERM ends a run early and judges what it sampled. `--samples FILE` judges
the samples an earlier run wrote with `--out` (another `--warmup`, say). `--probe DIR`
runs the daemon under `bench.memprobe`, which writes what its memory is made of to DIR
every minute (`--tracemalloc N` adds tracemalloc differences, at a high CPU cost);
`--env NAME=VALUE` sets the daemon's environment (`MALLOC_ARENA_MAX=2`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.harness import REPO, cpu_seconds, rss_bytes, verdict
from bench.sizing import (
    CS_ACCOUNTS,
    PM_ACCOUNTS,
    POLL_INTERVAL,
    SCRAPE_INTERVAL,
    polls_total,
    running_replica,
    scrape,
    simulated_venues,
)

WARMUP_MINUTES = 10.0
TARGET_RSS_GROWTH_PER_HOUR = 0.02  # of the RSS at the end of the warm-up
COUNT_TOLERANCE = 2  # fds or tasks: pool connections and polls in flight come and go
COUNT_TOLERANCE_SHARE = 0.05
SETTLED_SHARE = 0.99  # "warmed up" once RSS is within 1% of where it ended


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float  # since the daemon was ready
    rss_mib: float
    fds: int
    tasks: int | None  # riskmon_asyncio_tasks
    outbox: int | None  # riskmon_outbox_pending
    polls: float  # riskmon_polls_total, all venues and outcomes
    cpu_seconds: float


def gauge(metrics: str, name: str) -> int | None:
    """An unlabelled gauge's value in a /metrics text; None when absent."""
    prefix = name + " "
    for line in metrics.splitlines():
        if line.startswith(prefix):
            return int(float(line[len(prefix) :]))
    return None


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour."""
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return 3600 * sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def count_growth(values: list[int]) -> tuple[int, int, bool]:
    """(fewest in the first quarter, fewest in the last quarter, grew beyond the
    tolerance). The fewest: what leaks is always there, polls in flight and pooled
    connections come on top of it and go."""
    quarter = max(1, len(values) // 4)
    first = min(values[:quarter])
    last = min(values[-quarter:])
    tolerance = max(COUNT_TOLERANCE, COUNT_TOLERANCE_SHARE * first)
    return first, last, last - first > tolerance


def settled_at(samples: list[Sample]) -> float:
    """Seconds after which RSS stayed at or above 99% of its level at the end (the
    median of the last tenth of the samples)."""
    tail = samples[-max(1, len(samples) // 10) :]
    level = SETTLED_SHARE * statistics.median(s.rss_mib for s in tail)
    at = samples[0].seconds
    for sample in samples:
        if sample.rss_mib < level:
            at = sample.seconds
    return at


def _rss_growth(samples: list[Sample]) -> tuple[float, float]:
    """(RSS at the start: the median of the first 5% of the samples, least-squares
    growth in MiB per hour)."""
    start = statistics.median(s.rss_mib for s in samples[: max(1, len(samples) // 20)])
    return start, slope_per_hour([(s.seconds, s.rss_mib) for s in samples])


def analyse(samples: list[Sample], warmup: float) -> dict[str, Any]:
    after = [s for s in samples if s.seconds >= warmup]
    if len(after) < 8:
        raise SystemExit(f"bench.soak: only {len(after)} samples after the warm-up: run longer")
    rss_start, rss_slope = _rss_growth(after)
    growth = rss_slope / rss_start
    settled = settled_at(samples)
    after_settled = [s for s in samples if s.seconds >= settled]
    growth_after_settled = None
    if settled > warmup and len(after_settled) >= 8:
        start, slope = _rss_growth(after_settled)
        growth_after_settled = round(slope / start, 4)
    fds_first, fds_last, fds_grew = count_growth([s.fds for s in after])
    tasks = [s.tasks for s in after if s.tasks is not None]
    if len(tasks) < len(after):
        raise SystemExit("bench.soak: the daemon's /metrics has no riskmon_asyncio_tasks")
    tasks_first, tasks_last, tasks_grew = count_growth(tasks)
    outbox = [s.outbox or 0 for s in after]
    wall = after[-1].seconds - after[0].seconds
    return {
        "minutes": round(samples[-1].seconds / 60, 1),
        "warmup_minutes": round(warmup / 60, 1),
        "rss_settled_minutes": round(settled / 60, 1),
        "rss_growth_per_hour_after_settled": growth_after_settled,
        "rss_mib_first": samples[0].rss_mib,
        "rss_mib_after_warmup": round(rss_start, 1),
        "rss_mib_end": samples[-1].rss_mib,
        "rss_mib_peak": max(s.rss_mib for s in samples),
        "rss_mib_per_hour_after_warmup": round(rss_slope, 2),
        "rss_growth_per_hour_after_warmup": round(growth, 4),
        "fds_fewest_first_quarter": fds_first,
        "fds_fewest_last_quarter": fds_last,
        "fds_max": max(s.fds for s in after),
        "tasks_fewest_first_quarter": tasks_first,
        "tasks_fewest_last_quarter": tasks_last,
        "tasks_max": max(tasks),
        "outbox_max": max(outbox),
        "outbox_end": outbox[-1],
        "polls_per_second": round((after[-1].polls - after[0].polls) / wall, 1),
        "cpu_cores_mean": round((after[-1].cpu_seconds - after[0].cpu_seconds) / wall, 3),
        "target_rss_growth_per_hour": TARGET_RSS_GROWTH_PER_HOUR,
        "rss_holds": growth < TARGET_RSS_GROWTH_PER_HOUR,
        "fds_hold": not fds_grew,
        "tasks_hold": not tasks_grew,
        "target_holds": growth < TARGET_RSS_GROWTH_PER_HOUR and not fds_grew and not tasks_grew,
    }


def _row(sample: Sample, previous: Sample | None) -> str:
    rate = cores = "-"
    if previous is not None:
        wall = sample.seconds - previous.seconds
        rate = f"{(sample.polls - previous.polls) / wall:,.0f}"
        cores = f"{(sample.cpu_seconds - previous.cpu_seconds) / wall:.3f}"
    tasks = "-" if sample.tasks is None else str(sample.tasks)
    outbox = "-" if sample.outbox is None else str(sample.outbox)
    return (
        f"{sample.seconds / 60:7.1f} {sample.rss_mib:8.1f} {sample.fds:5d} {tasks:>6} "
        f"{outbox:>7} {rate:>8} {cores:>6}"
    )


async def soak(
    seconds: float,
    report_every: float,
    *,
    command: tuple[str, ...],
    env: dict[str, str],
    cs: int,
    pm: int,
    base: str,
    folder: Path,
    keys: Path,
) -> list[Sample]:
    samples: list[Sample] = []
    async with running_replica(base, folder, keys, cs, pm, command=command, env=env) as (
        daemon,
        url,
        session,
    ):
        print(
            f"{cs} Clear Street + {pm} Polymarket accounts every {POLL_INTERVAL:g} s, shipped "
            f"rules, scraped every {SCRAPE_INTERVAL:g} s, for {seconds / 60:g} minutes "
            f"(daemon pid {daemon.pid}, log {folder / 'riskmon.log'})",
            flush=True,
        )
        print(
            " minute  RSS MiB   fds  tasks  outbox  polls/s  cores\n"
            " ------  -------  ----  -----  ------  -------  -----",
            flush=True,
        )
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()  # Ctrl-C or SIGTERM: judge what was sampled so far
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        started = next_scrape = loop.time()
        reported: Sample | None = None
        while True:
            metrics = await scrape(session, url)
            sample = Sample(
                seconds=round(loop.time() - started, 1),
                rss_mib=round(rss_bytes(daemon.pid) / 2**20, 1),
                fds=open_fds(daemon.pid),
                tasks=gauge(metrics, "riskmon_asyncio_tasks"),
                outbox=gauge(metrics, "riskmon_outbox_pending"),
                polls=polls_total(metrics),
                cpu_seconds=cpu_seconds(daemon.pid),
            )
            samples.append(sample)
            if reported is None or sample.seconds - reported.seconds >= report_every - 1:
                print(_row(sample, reported), flush=True)
                reported = sample
            if sample.seconds >= seconds:
                break
            if stop.is_set():
                print(f"stopped after {sample.seconds / 60:.1f} minutes", flush=True)
                break
            next_scrape += SCRAPE_INTERVAL
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_scrape - loop.time()))
            if daemon.returncode is not None:
                raise RuntimeError(f"riskmon exited with {daemon.returncode} during the soak")
    return samples


def _report(result: dict[str, Any]) -> None:
    r = result
    print(f"\nafter the {r['warmup_minutes']:g}-minute warm-up ({r['minutes']:g} minutes in all):")
    print(
        f"  RSS: {r['rss_mib_first']:.1f} MiB when ready, {r['rss_mib_after_warmup']:.1f} at the "
        f"end of the warm-up, {r['rss_mib_end']:.1f} at the end (peak {r['rss_mib_peak']:.1f}); "
        f"within 1% of its final level from minute {r['rss_settled_minutes']:g}"
    )
    print(
        f"  RSS growth after the warm-up: {r['rss_mib_per_hour_after_warmup']:+.2f} MiB/h = "
        f"{100 * r['rss_growth_per_hour_after_warmup']:+.2f}%/h "
        f"(target < {100 * TARGET_RSS_GROWTH_PER_HOUR:g}%/h): {verdict(r['rss_holds'])}"
    )
    if r["rss_growth_per_hour_after_settled"] is not None:
        print(
            f"  the measured warm-up is longer than {r['warmup_minutes']:g} minutes: after "
            f"minute {r['rss_settled_minutes']:g}, RSS grows "
            f"{100 * r['rss_growth_per_hour_after_settled']:+.2f}%/h"
        )
    print(
        f"  fds: at least {r['fds_fewest_first_quarter']} in the first quarter, "
        f"{r['fds_fewest_last_quarter']} in the last (max {r['fds_max']}): "
        f"{verdict(r['fds_hold'])}"
    )
    print(
        f"  asyncio tasks: at least {r['tasks_fewest_first_quarter']} in the first quarter, "
        f"{r['tasks_fewest_last_quarter']} in the last (max {r['tasks_max']}): "
        f"{verdict(r['tasks_hold'])}"
    )
    print(
        f"  outbox: at most {r['outbox_max']} pending, {r['outbox_end']} at the end; "
        f"{r['polls_per_second']:,.0f} polls/s, {r['cpu_cores_mean']:.3f} cores"
    )
    print(json.dumps(r))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0, help="how long (default 5)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=WARMUP_MINUTES,
        help="minutes before growth counts (default 10, at most half the run)",
    )
    parser.add_argument("--report", type=float, default=1.0, help="minutes between table rows")
    parser.add_argument("--clearstreet", type=int, default=CS_ACCOUNTS)
    parser.add_argument("--polymarket", type=int, default=PM_ACCOUNTS)
    parser.add_argument("--probe", type=Path, help="run the daemon under bench.memprobe into DIR")
    parser.add_argument("--tracemalloc", type=int, default=0, help="frames, with --probe")
    parser.add_argument("--out", type=Path, help="write the figures and every sample as JSON")
    parser.add_argument(
        "--samples", type=Path, help="judge the samples of an earlier run's --out instead"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="for the daemon"
    )
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    command: tuple[str, ...] = ("-m", "monitor")
    if args.probe is not None:
        command = ("-m", "bench.memprobe")
        env |= {
            "PYTHONPATH": str(REPO),
            "RISKMON_MEMPROBE_DIR": str(args.probe.resolve()),
            "RISKMON_MEMPROBE_TRACEMALLOC": str(args.tracemalloc),
        }
    seconds = 60 * args.minutes
    if args.samples is not None:
        samples = [Sample(**item) for item in json.loads(args.samples.read_text())["samples"]]
        result = analyse(samples, min(60 * args.warmup, samples[-1].seconds / 2))
        _report(result)
        return result
    with simulated_venues(args.clearstreet, args.polymarket) as (base, folder, keys):
        samples = asyncio.run(
            soak(
                seconds,
                60 * args.report,
                command=command,
                env=env,
                cs=args.clearstreet,
                pm=args.polymarket,
                base=base,
                folder=folder,
                keys=keys,
            )
        )
    result = analyse(samples, min(60 * args.warmup, samples[-1].seconds / 2))
    result["samples"] = [asdict(s) for s in samples]
    _report({k: v for k, v in result.items() if k != "samples"})
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["target_holds"] else 1)
