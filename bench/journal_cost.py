"""Journal cost: poll throughput with the history journal and without it, in one run.

Run: `.venv/bin/python -m bench.journal_cost [--accounts 1000] [--flapping 100]`.

The history journal (monitor/history) writes one chained record per alert event, in
the transaction that writes the event to the outbox. It costs nothing while nothing
happens, so this benchmark makes events happen: of the simulator's 1,000 Clear Street
accounts, 100 walk their buying power around 30,000 (steps of 2,000 every 200 ms) and
a bench rule fires below 30,000 (no `for`), so their alerts flap: tens of events a
second, more than a desk sees in a bad hour. The daemon (as in bench/poll_cost.py: 20
rules besides, the outbox, a Mosquitto, the tick and the API) polls every account as
fast as it may. One daemon, one run: its journal is switched off and on again every
window (`Store.journal` swapped for a `NullJournal` and back: the chain goes on), so
both halves see the same machine, the same heap and the same events. The figure is the
median, over the pairs of windows, of the ratio of polls per CPU-second (of this
process) with the journal to those without: a busy machine moves single windows by 10%
or more, the median of many neighbouring pairs far less.

Besides: the time spent in the journal's own code meanwhile (recording, writing), as a
share of the daemon's CPU, and `Store.append` of one event with and without the
journal, in microseconds.

Target: the journal costs under 5% of poll throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
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
from monitor.engine.lifecycle import Alert, AlertEvent
from monitor.history.journal import Journal, NullJournal
from monitor.logs import configure_logging
from monitor.publish.events import to_entry
from monitor.simulator.process import simulator_process
from monitor.store import Store

TARGET_PERCENT = 5.0
ACCOUNTS = 1_000
FLAPPING = 100
WINDOW = 0.5  # seconds; the journal is on in every other one
PAIRS = 30
WARMUP = 3.0
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

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.events = 0

    def _emit(
        self,
        events: Iterable[AlertEvent],
        *,
        answered_at: float | None = None,
        announced: bool = False,
        retained: Iterable[Alert] = (),
    ) -> None:
        events = list(events)
        self.events += len(events)
        super()._emit(events, answered_at=answered_at, announced=announced, retained=retained)


def flapping_scenario(count: int, flapping: int) -> dict[str, Any]:
    data = scenario(count)
    data["timeline"] = [
        {
            "at": "0s",
            "venue": "clearstreet",
            "account": str(FIRST_ID + i),
            "set": {"buying_power": "30000.00"},
            "walk": {
                "field": "buying_power",
                "step": "2000",
                "every": "200ms",
                "min": "24000",
                "max": "36000",
            },
        }
        for i in range(flapping)
    ]
    return data


class _Timed:
    """Wraps the journal's recording and writing, summing the time spent in them."""

    def __init__(self, journal: Journal) -> None:
        self.seconds = 0.0
        for name in ("record_event", "write"):
            method = getattr(journal, name)
            setattr(journal, name, self._timed(method))

    def _timed(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed


async def measure(config_path: Path, pairs: int) -> dict[str, Any]:
    daemon = EventCountingDaemon(load_config(config_path))
    journal = daemon.store.journal
    timer = _Timed(journal)
    off = NullJournal()
    run = asyncio.create_task(daemon.run())
    totals = {True: [0, 0, 0.0, 0.0], False: [0, 0, 0.0, 0.0]}  # polls, events, cpu, wall
    journal_seconds = 0.0
    pair_ratios: list[float] = []  # polls per CPU-second with / without, pair by pair
    try:
        await asyncio.wait_for(daemon.serving.wait(), 20)
        for poller in daemon.pollers.values():
            await asyncio.wait_for(poller.first_cycle_done.wait(), 30)
        await asyncio.sleep(WARMUP)
        records0 = journal.head[0]
        for _ in range(pairs):
            rates = {}
            for on in (True, False):
                daemon.store.journal = journal if on else off
                polls0, events0, timed0 = daemon.snapshots, daemon.events, timer.seconds
                cpu0, wall0 = time.process_time(), time.perf_counter()
                await asyncio.sleep(WINDOW)
                cpu1 = time.process_time()
                total = totals[on]
                total[0] += daemon.snapshots - polls0
                total[1] += daemon.events - events0
                total[2] += cpu1 - cpu0
                total[3] += time.perf_counter() - wall0
                rates[on] = (daemon.snapshots - polls0) / (cpu1 - cpu0)
                if on:
                    journal_seconds += timer.seconds - timed0
            pair_ratios.append(rates[True] / rates[False])
        daemon.store.journal = journal
        records = journal.head[0] - records0
    finally:
        daemon.stop()
        await asyncio.wait_for(run, 30)
    with_rate = totals[True][0] / totals[True][2]
    without_rate = totals[False][0] / totals[False][2]
    return {
        "polls_with_journal": totals[True][0],
        "polls_without_journal": totals[False][0],
        "events_with_journal": totals[True][1],
        "events_without_journal": totals[False][1],
        "journal_records": records,
        "events_per_second": round(
            (totals[True][1] + totals[False][1]) / (totals[True][3] + totals[False][3])
        ),
        "polls_per_cpu_second_with_journal": round(with_rate),
        "polls_per_cpu_second_without_journal": round(without_rate),
        "journal_cpu_share_percent": round(journal_seconds / totals[True][2] * 100, 2),
        "cpu_seconds_with_journal": round(totals[True][2], 3),
        "pair_ratios": [round(r, 3) for r in pair_ratios],
        "median_pair_ratio": round(statistics.median(pair_ratios), 4),
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
    parser.add_argument("--flapping", type=int, default=FLAPPING)
    parser.add_argument("--pairs", type=int, default=PAIRS)
    args = parser.parse_args(argv)
    configure_logging("warning")
    with (
        tempfile.TemporaryDirectory(prefix="riskmon-bench-journal-") as folder,
        simulator_process(flapping_scenario(args.accounts, args.flapping)) as (base, _pid),
    ):
        config = write_config(
            Path(folder),
            base_url=base,
            accounts=args.accounts,
            poll_interval=POLL_INTERVAL,
            max_concurrency=CONCURRENCY,
        )
        (Path(folder) / "flap.yaml").write_text(FLIP_RULE)
        config.write_text(config.read_text().replace('rules: ["', 'rules: ["flap.yaml", "', 1))
        ours = eventloop.run(measure(config, args.pairs))
        appends = append_cost(Path(folder), APPENDS)
    with_rate = ours["polls_per_cpu_second_with_journal"]
    without_rate = ours["polls_per_cpu_second_without_journal"]
    cost = (1 - ours["median_pair_ratio"]) * 100
    # Another reading, free of the noise between windows: what the journal adds to an
    # append (measured apart) times the events, against the CPU the daemon used.
    added_us = appends["with_us"] - appends["without_us"]
    estimate = added_us * ours["events_with_journal"] / 1e6 / ours["cpu_seconds_with_journal"]
    polls = ours["polls_with_journal"] + ours["polls_without_journal"]
    events = ours["events_with_journal"] + ours["events_without_journal"]
    result: dict[str, Any] = {
        "accounts": args.accounts,
        "flapping_accounts": args.flapping,
        "rules_per_snapshot": RULES_PER_SNAPSHOT + 1,
        **ours,
        "events_per_poll": round(events / polls, 4) if polls else None,
        "journal_cost_percent": round(cost, 2),
        "journal_cost_estimate_percent": round(estimate * 100, 2),
        "append_us_with_journal": appends["with_us"],
        "append_us_without_journal": appends["without_us"],
        "target_percent": TARGET_PERCENT,
        "target_holds": cost < TARGET_PERCENT,
    }
    print(
        f"{args.accounts} accounts ({args.flapping} flapping: {ours['events_per_second']:,} events"
        f" a second, {result['events_per_poll']} per poll), {RULES_PER_SNAPSHOT + 1} rules each,"
        f" polled as fast as allowed; the journal on and off in alternate {WINDOW} s windows"
        f" ({args.pairs} each):"
    )
    print(
        f"  with the journal:    {with_rate:>7,} polls per CPU-second"
        f" ({ours['polls_with_journal']:,} polls, {ours['events_with_journal']:,} events,"
        f" {ours['journal_records']:,} records)"
    )
    print(
        f"  without the journal: {without_rate:>7,} polls per CPU-second"
        f" ({ours['polls_without_journal']:,} polls, {ours['events_without_journal']:,} events)"
    )
    print(f"  with / without, pair by pair: {ours['pair_ratios']}")
    print(
        f"  the journal costs {cost:.1f}% of poll throughput (the median pair); its own code took"
        f" {ours['journal_cpu_share_percent']}% of the daemon's CPU while on"
    )
    print(
        f"  Store.append of one event: {appends['with_us']} us with its journal record, "
        f"{appends['without_us']} us without: {added_us:.0f} us x {ours['events_with_journal']}"
        f" events = {estimate:.2%} of the daemon's CPU"
    )
    print(f"target < {TARGET_PERCENT:.0f}%: {verdict(cost < TARGET_PERCENT)}")
    return result


if __name__ == "__main__":
    main()
