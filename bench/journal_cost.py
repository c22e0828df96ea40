"""Journal cost: poll throughput with the history journal and without it, in one run.

Run: `.venv/bin/python -m bench.journal_cost [--accounts 1000] [--seconds 6]`.

The history journal (monitor/history) writes one chained record per alert event, in
the transaction that writes the event to the outbox. It costs nothing while nothing
happens, so this benchmark makes events happen: the simulator's 1,000 Clear Street
accounts each walk their buying power around 30,000 (steps of 2,000 every 200 ms) and
a bench rule fires below 30,000 (no `for`), so the alert flaps: hundreds of events a
second, many times what a desk sees. The daemon (as in bench/poll_cost.py: 20 rules
besides, the outbox, a Mosquitto, the tick and the API) polls them as fast as it may,
with the journal and then without it (`Daemon(journal=False)`), alternating
(with, without, with, without) so that a machine that slows down meanwhile weighs on
both; polls per CPU-second of this process, the median window of each.

Besides, the cost of the journal per event where it is paid: `Store.append` of one
event with and without the journal, in microseconds.

Target: the journal costs under 5% of poll throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.harness import (
    FIRST_ID,
    RULES_PER_SNAPSHOT,
    CountingDaemon,
    scenario,
    verdict,
    write_config,
)
from monitor import eventloop
from monitor.config import Config, load_config
from monitor.engine.lifecycle import AlertEvent
from monitor.logs import configure_logging
from monitor.publish.events import to_entry
from monitor.simulator.process import simulator_process
from monitor.store import Store

TARGET_PERCENT = 5.0
ACCOUNTS = 1_000
SECONDS = 6.0  # measured per run, in WINDOWS windows
WINDOWS = 2
WARMUP = 2.0
RUNS = ("with", "without", "with", "without")
POLL_INTERVAL = "100ms"
CONCURRENCY = 64
APPENDS = 5_000
FLIP_RULE = """\
groups:
  - name: bench-journal
    venues: [clearstreet]
    rules:
      - alert: BenchBuyingPowerFlaps
        expr: buying_power < 30000
        severity: warning
        annotations: {summary: "{{ account }} buying power {{ buying_power }} under 30000"}
"""


class EventCountingDaemon(CountingDaemon):
    """Counts the events it emits too."""

    def __init__(self, config: Config, **options: Any) -> None:
        super().__init__(config, **options)
        self.events = 0

    def _emit(self, events: Iterable[AlertEvent], *, answered_at: float | None = None) -> None:
        events = list(events)
        self.events += len(events)
        super()._emit(events, answered_at=answered_at)


def flapping_scenario(count: int) -> dict[str, Any]:
    data = scenario(count)
    [generated] = data["clearstreet"]["accounts"]
    generated["generate"]["set"] = {"buying_power": "30000.00"}
    data["timeline"] = [
        {
            "at": "0s",
            "venue": "clearstreet",
            "account": str(FIRST_ID + i),
            "walk": {
                "field": "buying_power",
                "step": "2000",
                "every": "200ms",
                "min": "20000",
                "max": "40000",
            },
        }
        for i in range(count)
    ]
    return data


async def measure(config_path: Path, *, journal: bool, seconds: float) -> dict[str, Any]:
    daemon = EventCountingDaemon(load_config(config_path), journal=journal)
    run = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.serving.wait(), 20)
        for poller in daemon.pollers.values():
            await asyncio.wait_for(poller.first_cycle_done.wait(), 30)
        await asyncio.sleep(WARMUP)
        windows = []
        for _ in range(WINDOWS):
            polls0, events0 = daemon.snapshots, daemon.events
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(seconds / WINDOWS)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            windows.append((daemon.snapshots - polls0, daemon.events - events0, cpu, wall))
        journaled = daemon.store.journal.head[0]
    finally:
        daemon.stop()
        await asyncio.wait_for(run, 30)
    polls = sum(w[0] for w in windows)
    events = sum(w[1] for w in windows)
    return {
        "journal": journal,
        "polls_per_cpu_second_windows": [round(w[0] / w[2]) for w in windows],
        "polls": polls,
        "events": events,
        "events_per_second": round(events / sum(w[3] for w in windows)),
        "journal_records": journaled,
    }


def append_cost(folder: Path, appends: int) -> dict[str, float]:
    """Microseconds per `Store.append` of one event, with the journal and without."""
    now = time.time()
    event = AlertEvent(
        status="firing",
        at=now,
        rule_key="bench/BenchBuyingPowerFlaps",
        alertname="BenchBuyingPowerFlaps",
        severity="warning",
        venue="cs",
        venue_kind="clearstreet",
        account="100000",
        labels={},
        annotations={"summary": "100000 buying power 28000.00 under 30000"},
        values={"buying_power": "28000.00"},
        starts_at=now,
        ends_at=None,
        fingerprint="0" * 16,
    )
    timings: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(4):
        for journal in (True, False):
            path = folder / f"append-{journal}-{round_}" / "riskmon.db"
            with Store(path, journal=journal) as store:
                entry = to_entry(event, prefix="riskmon", instance="bench")
                started = time.perf_counter()
                for _ in range(appends):
                    store.journal.record_event(event, event_id=entry.event_id)
                    store.append([entry])
                timings[journal].append((time.perf_counter() - started) / appends * 1e6)
    return {
        "with_us": round(statistics.median(timings[True]), 1),
        "without_us": round(statistics.median(timings[False]), 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.journal_cost", description=__doc__)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    args = parser.parse_args(argv)
    configure_logging("warning")
    runs = []
    with (
        tempfile.TemporaryDirectory(prefix="riskmon-bench-journal-") as folder,
        simulator_process(flapping_scenario(args.accounts)) as (base, _simulator_pid),
    ):
        for i, variant in enumerate(RUNS):
            run_folder = Path(folder) / f"run-{i}"
            config = write_config(
                run_folder,
                base_url=base,
                accounts=args.accounts,
                poll_interval=POLL_INTERVAL,
                max_concurrency=CONCURRENCY,
            )
            (run_folder / "flap.yaml").write_text(FLIP_RULE)
            text = config.read_text().replace('rules: ["', 'rules: ["flap.yaml", "', 1)
            config.write_text(text)
            journal = variant == "with"
            runs.append(eventloop.run(measure(config, journal=journal, seconds=args.seconds)))
        appends = append_cost(Path(folder), APPENDS)
    with_rate = statistics.median(
        r for run in runs if run["journal"] for r in run["polls_per_cpu_second_windows"]
    )
    without_rate = statistics.median(
        r for run in runs if not run["journal"] for r in run["polls_per_cpu_second_windows"]
    )
    cost = (without_rate - with_rate) / without_rate * 100
    events = statistics.median(run["events_per_second"] for run in runs)
    polls = sum(run["polls"] for run in runs)
    result: dict[str, Any] = {
        "accounts": args.accounts,
        "rules_per_snapshot": RULES_PER_SNAPSHOT + 1,
        "runs": runs,
        "events_per_second": events,
        "events_per_poll": round(sum(run["events"] for run in runs) / polls, 3) if polls else None,
        "polls_per_cpu_second_with_journal": round(with_rate),
        "polls_per_cpu_second_without_journal": round(without_rate),
        "journal_cost_percent": round(cost, 2),
        "append_us_with_journal": appends["with_us"],
        "append_us_without_journal": appends["without_us"],
        "target_percent": TARGET_PERCENT,
        "target_holds": cost < TARGET_PERCENT,
    }
    print(
        f"{args.accounts} accounts flapping ({events:,} events a second, "
        f"{result['events_per_poll']} per poll), {RULES_PER_SNAPSHOT + 1} rules each, polled as "
        f"fast as allowed; runs {', '.join(RUNS)} the journal:"
    )
    for run in runs:
        print(
            f"  {'with' if run['journal'] else 'without':8} polls per CPU-second "
            f"{run['polls_per_cpu_second_windows']}, {run['events']:,} events, "
            f"{run['journal_records']:,} journal records"
        )
    print(
        f"  median: {with_rate:,.0f} with, {without_rate:,.0f} without: the journal costs "
        f"{cost:.1f}% of poll throughput"
    )
    print(
        f"  Store.append of one event: {appends['with_us']} us with the journal record, "
        f"{appends['without_us']} us without"
    )
    print(f"target < {TARGET_PERCENT:.0f}%: {verdict(cost < TARGET_PERCENT)}")
    return result


if __name__ == "__main__":
    main()
