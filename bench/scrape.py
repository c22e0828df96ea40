"""/metrics speed and memory: `Metrics.render()` against prometheus-client's stock Gauges.

Run: `.venv/bin/python -m bench.scrape [--accounts N] [--runs R]`. Builds N (10,000)
Clear Street accounts from the margin-account fixture, each with its own numbers and one
of four desks as its label, 27 series each (24 field gauges + up + last success + info:
270,000 series), plus the venue and process families. Then:

- times `Metrics.render()` (best of R) and the same series held in prometheus-client
  Gauges, rendered by `generate_latest` on a `CollectorRegistry` (best of 2: it is slow);
- checks the targets: render <= 150 ms and >= 10x faster than the stock Gauges;
- times `update_account` for a poll whose values all changed and one where none did;
- measures with tracemalloc the memory `Metrics` holds per account (the snapshots' own
  Decimals are the poller's and not counted), and snapshot + metrics per account
  (target: <= 10 KB per monitored account, metrics included; reported separately as
  `memory_target_holds`, since the snapshot's share is the poller's).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from bench.timing import best_of
from monitor.metrics import ACCOUNT_FIELD_METRICS, Metrics, format_value
from monitor.snapshot import Snapshot
from monitor.venues.clearstreet import ClearStreetAdapter

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "data" / "cs_balances_margin.json"
ACCOUNTS = 10_000
RUNS = 5
TARGET_MS = 150.0
TARGET_SPEEDUP = 10.0
TARGET_BYTES_PER_ACCOUNT = 10 * 1024
_FIXTURE_TEXT = FIXTURE.read_text()
#: The accounts' labels: one mapping per desk, shared as the config's discovery labels are.
DESKS = tuple({"desk": desk} for desk in ("equities", "options", "futures", "treasury"))


def _payload(i: int) -> dict[str, Any]:
    """The fixture's balances for account `i`, its numbers scaled so no two are alike."""
    data: dict[str, Any] = json.loads(_FIXTURE_TEXT)["data"]
    data["account_id"] = 100_000 + i
    data["unrealized_pnl"] = "123.45"
    data["margin_details"]["intraday_details"] = {"buying_power": "180000.00", "multiplier": "4"}
    factor = Decimal(1000 + i) / 1000

    def scale(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: scale(v) for k, v in node.items()}
        if isinstance(node, list):
            return [scale(v) for v in node]
        if isinstance(node, str) and node.replace(".", "", 1).lstrip("-").isdigit():
            return str((Decimal(node) * factor).quantize(Decimal("0.01")))
        return node

    scaled: dict[str, Any] = scale(data)
    return scaled


def snapshots(n: int, *, venue: str = "cs-prod", taken_at: float = 1.8e9) -> list[Snapshot]:
    return [
        Snapshot(
            venue=venue,
            venue_kind="clearstreet",
            account=str(100_000 + i),
            fields=ClearStreetAdapter.parse_balances(_payload(i), str(100_000 + i)),
            taken_at=taken_at + i / 1000,
            currency="USD",
            request_id=f"req-{i}",
            labels=DESKS[i % len(DESKS)],
        )
        for i in range(n)
    ]


def fill(metrics: Metrics, snaps: list[Snapshot]) -> None:
    for snap in snaps:
        metrics.update_account(snap)
        metrics.set_account_info(snap.venue, snap.account, snap.labels)
        metrics.observe_poll(snap.venue, "ok", 0.05)
    metrics.set_venue("cs-prod", True, len(snaps))


def stock_registry(snaps: list[Snapshot]) -> CollectorRegistry:
    """The same account series in prometheus-client Gauges."""
    registry = CollectorRegistry()
    gauges = [
        (path, Gauge(name, help_text, ["venue", "account", "currency"], registry=registry))
        for path, name, help_text in ACCOUNT_FIELD_METRICS
    ]
    up = Gauge("riskmon_account_up", "up", ["venue", "account"], registry=registry)
    last = Gauge(
        "riskmon_last_success_timestamp_seconds", "last", ["venue", "account"], registry=registry
    )
    info = Gauge("riskmon_account_info", "info", ["venue", "account", "desk"], registry=registry)
    for snap in snaps:
        currency = snap.currency or ""
        for path, gauge in gauges:
            value = snap.fields.get(path)
            if value is not None and format_value(value) is not None:
                gauge.labels(snap.venue, snap.account, currency).set(float(value))
        up.labels(snap.venue, snap.account).set(1)
        last.labels(snap.venue, snap.account).set(snap.taken_at)
        info.labels(snap.venue, snap.account, snap.labels["desk"]).set(1)
    return registry


def _held(build: Callable[[], object]) -> tuple[int, object]:
    """Bytes still allocated after `build()`, which must return what it built."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    built = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, built


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.scrape", description=__doc__)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args(argv)
    n: int = args.accounts

    snaps = snapshots(n)
    metrics_bytes, built = _held(lambda: _filled(snaps))
    assert isinstance(built, Metrics)
    metrics = built
    body = metrics.render()
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    account_series = sum(1 for line in body.splitlines() if line.startswith(b"riskmon_acc"))
    account_series += body.count(b"\nriskmon_last_success_timestamp_seconds{")
    render_s = best_of(args.runs, metrics.render, collect=True)

    # A poll where every value changed, and one where none did.
    changed = snapshots(n, taken_at=1.9e9)
    changed = [
        Snapshot(s.venue, s.venue_kind, s.account, _bumped(s.fields), s.taken_at, s.currency)
        for s in changed
    ]
    start = time.perf_counter()
    for snap in changed:
        metrics.update_account(snap)
    update_changed_us = (time.perf_counter() - start) / n * 1e6
    start = time.perf_counter()
    for snap in changed:
        metrics.update_account(snap)
    update_same_us = (time.perf_counter() - start) / n * 1e6

    # snapshot + metrics per account: what the poller and Metrics hold together.
    total_bytes, _ = _held(lambda: _snapshots_and_metrics(n))

    registry = stock_registry(snaps)
    stock_body = generate_latest(registry)
    stock_s = best_of(2, lambda: generate_latest(registry), collect=True)

    render_ms = render_s * 1000
    speedup = stock_s / render_s
    result: dict[str, Any] = {
        "accounts": n,
        "series": series,
        "account_series": account_series,
        "body_bytes": len(body),
        "render_ms": round(render_ms, 2),
        "render_us_per_series": round(render_s / series * 1e6, 3),
        "stock_gauges_ms": round(stock_s * 1000, 1),
        "stock_gauges_us_per_series": round(stock_s / series * 1e6, 3),
        "stock_body_bytes": len(stock_body),
        "speedup": round(speedup, 1),
        "update_account_changed_us": round(update_changed_us, 2),
        "update_account_unchanged_us": round(update_same_us, 2),
        "metrics_bytes_per_account": round(metrics_bytes / n),
        "snapshot_and_metrics_bytes_per_account": round(total_bytes / n),
        "target_ms": TARGET_MS,
        "target_speedup": TARGET_SPEEDUP,
        "target_bytes_per_account": TARGET_BYTES_PER_ACCOUNT,
        "target_holds": render_ms <= TARGET_MS and speedup >= TARGET_SPEEDUP,
        "memory_target_holds": total_bytes / n <= TARGET_BYTES_PER_ACCOUNT,
    }
    print(f"{n} accounts, {series} series ({account_series} per-account), {len(body)} bytes")
    print(
        f"Metrics.render():           {render_ms:8.2f} ms  "
        f"({result['render_us_per_series']} us/series)"
    )
    print(
        f"prometheus-client Gauges:   {stock_s * 1000:8.1f} ms  "
        f"({result['stock_gauges_us_per_series']} us/series)"
    )
    print(f"speed-up:                   {speedup:8.1f}x")
    print(f"update_account, all changed: {update_changed_us:7.2f} us")
    print(f"update_account, unchanged:   {update_same_us:7.2f} us")
    print(f"Metrics memory per account:       {result['metrics_bytes_per_account']:6d} B")
    print(
        f"snapshot + metrics per account:   {result['snapshot_and_metrics_bytes_per_account']:6d} B"
    )
    verdict = "holds" if result["target_holds"] else "MISSED"
    print(f"target (<= {TARGET_MS:.0f} ms and >= {TARGET_SPEEDUP:.0f}x): {verdict}")
    verdict = "holds" if result["memory_target_holds"] else "MISSED"
    print(
        f"memory target (snapshot + metrics <= {TARGET_BYTES_PER_ACCOUNT // 1024} KB/account): "
        f"{verdict}"
    )
    return result


def _filled(snaps: list[Snapshot]) -> Metrics:
    metrics = Metrics()
    fill(metrics, snaps)
    return metrics


def _snapshots_and_metrics(n: int) -> tuple[list[Snapshot], Metrics]:
    snaps = snapshots(n)
    return snaps, _filled(snaps)


def _bumped(fields: Any) -> dict[str, Any]:
    return {k: v + 1 if isinstance(v, Decimal) else v for k, v in fields.items()}


if __name__ == "__main__":
    main()
