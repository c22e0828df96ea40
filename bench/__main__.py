"""`make bench`: every benchmark in one run; a summary table at the end; JSON in
bench/results/.

Each module has `main(argv) -> dict` that prints its own table and returns its figures
with `target_holds` booleans. A benchmark that fails is reported and the others still
run; the run fails (exit 1) only then, never because a target is missed: the benchmarks
measure, they do not gate CI.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

BENCHMARKS = [
    "bench.http_clients",
    "bench.rule_eval",
    "bench.lifecycle",
    "bench.scrape",
    "bench.poll_cost",
    "bench.journal_cost",
    "bench.latency",
    "bench.memory",
    "bench.startup",
    "bench.budget",
]

Row = tuple[str, str, str, str]  # figure, measured, target, verdict
Results = dict[str, Any]


def _verdict(holds: object) -> str:
    return "holds" if holds else "MISSED"


def _poll_cost(r: Results) -> list[Row]:
    rate = r["polls_per_cpu_second"]
    raw, plain = (
        r.get("raw_aiohttp_requests_per_cpu_second"),
        r.get("plain_httpx_requests_per_cpu_second"),
    )
    rows: list[Row] = [
        (
            "poll cost (polls per CPU-second, 1,000 accounts, 20 rules)",
            f"{rate:,}",
            f">= {r['target_polls_per_cpu_second']:,.0f}",
            _verdict(r["target_holds"]),
        )
    ]
    if raw:
        rows.append(
            (
                "  ratio to a raw aiohttp GET loop's requests per CPU-second, same run,"
                " answers unchanged",
                f"{rate / raw:.2f}x ({raw:,})",
                f">= {r.get('target_ratio_to_raw_aiohttp', 0.5)}x",
                _verdict(rate / raw >= r.get("target_ratio_to_raw_aiohttp", 0.5)),
            )
        )
    changing = r.get("changing_answers")
    if changing and changing.get("ratio_to_raw_aiohttp") is not None:
        rows.append(
            (
                "  the same with every answer changing between polls",
                f"{changing['ratio_to_raw_aiohttp']:.2f}x ({changing['polls_per_cpu_second']:,})",
                "-",
                "info",
            )
        )
    if plain:
        rows.append(
            (
                "  beside a plain httpx.AsyncClient GET loop",
                f"{plain:,} ({rate / plain:.1f}x)",
                "-",
                "ratio",
            )
        )
    return rows


def _journal_cost(r: Results) -> list[Row]:
    return [
        (
            f"history journal cost ({r['events_per_second']:,} events/s, 1,000 accounts)",
            f"{r['journal_cost_percent']:.1f}% of polls/CPU-s",
            f"< {r['target_percent']:.0f}%",
            _verdict(r["target_holds"]),
        ),
        (
            "  the journal's own code, share of the daemon's CPU",
            f"{r['journal_cpu_share_percent']:.2f}%",
            "-",
            "info",
        ),
        (
            "  what it adds to each append x the events, share of CPU",
            f"{r['journal_cost_estimate_percent']:.2f}%",
            "-",
            "info",
        ),
        (
            "  Store.append of one event, with / without its record",
            f"{r['append_us_with_journal']} / {r['append_us_without_journal']} us",
            "-",
            "info",
        ),
    ]


def _scrape(r: Results) -> list[Row]:
    return [
        (
            f"scrape cost (/metrics, {r['accounts']:,} accounts, {r['series']:,} series)",
            f"{r['render_ms']:.1f} ms",
            f"<= {r['target_ms']:.0f} ms",
            _verdict(r["render_ms"] <= r["target_ms"]),
        ),
        (
            "  speed-up over prometheus-client Gauges",
            f"{r['speedup']:.1f}x ({r['stock_gauges_ms']:,.0f} ms)",
            f">= {r['target_speedup']:.0f}x",
            _verdict(r["speedup"] >= r["target_speedup"]),
        ),
    ]


def _latency(r: Results) -> list[Row]:
    return [
        (
            f"detection latency p99, end to end ({r['accounts']:,} accounts, 1 s)",
            f"{r['end_to_end_p99_ms']:.1f} ms (p50 {r['end_to_end_p50_ms']:.0f})",
            f"<= {r['target_end_to_end_p99_ms']:.0f} ms",
            _verdict(r["end_to_end_target_holds"]),
        ),
        (
            "  venue answer received -> PUBACK, p99",
            f"{r['internal_p99_ms']:.2f} ms (p50 {r['internal_p50_ms']:.2f})",
            f"<= {r['target_internal_p99_ms']:.0f} ms",
            _verdict(r["internal_target_holds"]),
        ),
        (
            "  riskmon's CPU meanwhile (its own process)",
            f"{r['riskmon_cpu_share']:.0%} of a core",
            "-",
            "info",
        ),
    ]


def _memory(r: Results) -> list[Row]:
    return [
        (
            f"memory: RSS per monitored account ({r['accounts']:,} accounts)",
            f"{r['rss_bytes_per_account']:,} B",
            f"<= {r['target_bytes_per_account']:,} B",
            _verdict(r["target_holds"]),
        )
    ]


def _startup(r: Results) -> list[Row]:
    return [
        (
            f"start-up to /readyz 200 ({r['accounts']:,} accounts, slowest of {len(r['runs_s'])})",
            f"{r['max_s']:.2f} s",
            f"<= {r['target_s']:.0f} s",
            _verdict(r["target_holds"]),
        )
    ]


def _rule_eval(r: Results) -> list[Row]:
    return [
        (
            "rule evaluation, 20 rules x 10,000 snapshots (as the daemon)",
            f"{r['ms_as_daemon']:.1f} ms",
            f"< {r['target_ms']:.0f} ms",
            _verdict(r["target_holds"]),
        ),
        (
            "  the same, all 10,000 snapshots built first (cache-cold)",
            f"{r['ms_under_context']:.1f} ms",
            "-",
            "info",
        ),
        (
            "  yardstick: the rules' Decimal operations alone",
            f"{r['ms_decimal_operations_alone']:.1f} ms",
            "-",
            "floor",
        ),
        (
            "  ratio to the yardstick, same run",
            f"{r['ratio_to_yardstick']:.2f}x",
            f"<= {r['target_ratio_to_yardstick']}x",
            _verdict(r["ratio_holds"]),
        ),
    ]


def _lifecycle(r: Results) -> list[Row]:
    worst = max(r[f"{shape}_ns_per_step"] for shape in ("inactive", "pending", "firing"))
    return [
        ("alert lifecycle step (worst shape)", f"{worst:.0f} ns", "-", _verdict(r["target_holds"]))
    ]


def _budget(r: Results) -> list[Row]:
    uniform, risk = r["uniform"], r["risk_aware"]

    def run(x: Results) -> str:
        return (
            f"p99 {x['p99_s']:.2f} s (p50 {x['p50_s']:.2f}, max {x['max_s']:.2f}), "
            f"{x['requests']:,} requests, busiest second {x['busiest_second']}"
        )

    return [
        (
            f"breach to MQTT, {r['accounts']:,} accounts, {r['budget_requests_per_second']} req/s",
            f"risk-aware {r['p99_ratio']}x sooner at p99",
            f"p99 <= {r['target_p99_s']:g} s, >= {r['target_ratio']:g}x, no more requests",
            _verdict(r["target_holds"]),
        ),
        ("  uniform schedule", run(uniform), "-", "info"),
        ("  risk-aware schedule", run(risk), "-", "info"),
    ]


SUMMARY: dict[str, tuple[str, Callable[[Results], list[Row]]]] = {
    "bench.poll_cost": ("poll cost", _poll_cost),
    "bench.journal_cost": ("journal cost", _journal_cost),
    "bench.scrape": ("scrape cost", _scrape),
    "bench.latency": ("detection latency", _latency),
    "bench.memory": ("memory", _memory),
    "bench.startup": ("start-up", _startup),
    "bench.rule_eval": ("rule evaluation", _rule_eval),
    "bench.lifecycle": ("alert lifecycle", _lifecycle),
    "bench.budget": ("request budget", _budget),
}


def summary_rows(results: dict[str, Any], failed: list[str]) -> list[Row]:
    rows: list[Row] = []
    for name, (label, rows_of) in SUMMARY.items():
        if name in failed:
            rows.append((label, "failed", "-", "FAILED"))
        elif name in results:
            try:
                rows.extend(rows_of(results[name]))
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
                rows.append((label, f"unreadable result: {exc!r}", "-", "FAILED"))
    return rows


def print_table(rows: list[Row]) -> None:
    headers: Row = ("figure", "measured", "target", "verdict")
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    print(line)
    for row in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if row is headers:
            print(line)
    print(line)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    summary: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": {},
    }
    failed = []
    for name in BENCHMARKS:
        print(f"\n== {name} ==", flush=True)
        started = time.perf_counter()
        try:
            result = importlib.import_module(name).main([])
        except Exception as exc:  # one broken benchmark must not hide the others
            print(f"{name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(name)
            continue
        print(f"({time.perf_counter() - started:.0f} s)", flush=True)
        summary["results"][name] = result
    rows = summary_rows(summary["results"], failed)
    summary["summary"] = [
        {"figure": f.strip(), "measured": m, "target": t, "verdict": v} for f, m, t, v in rows
    ]
    summary["failed"] = failed
    path = RESULTS / f"bench-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json"
    path.write_text(json.dumps(_json_safe(summary), indent=2, default=str))
    print("\n== summary ==")
    print_table(rows)
    print(f"\nresults written to {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
