"""Rule evaluation speed: 20 typical rules over 10,000 varied snapshots.

Run: `.venv/bin/python -m bench.rule_eval`. Prints evaluations per second and the total
time of the best of several runs, and whether the targets hold: 20 x 10,000 in under 20 ms
on one core (~100 ns per rule evaluation), and, as a same-run ratio that does not drift
with the machine, at most 1.8x the yardstick below, both timed batch by batch side by
side over the same snapshots (the median of 7 rounds).

The target is judged as the daemon evaluates: each snapshot moments after it was built
(parsed from a venue answer), in a task that runs under `CONTEXT` (the daemon sets it for
all its tasks). Measured here by building the 10,000 distinct snapshots 100 at a time and
evaluating each batch right away, timing only the evaluation. The other rows are for
comparison: "all built first" evaluates 10,000 snapshots built beforehand, about 30 MB
that no longer fit the CPU caches, so every snapshot's dict and Decimals come from
memory (about 9 ms of the total); "cache-hot" evaluates 100 snapshots 100 times. The
yardstick row times the rules' Decimal operations alone over values already in local
variables: the floor of exact evaluation on the machine at hand, however it is
organized, so that figures from machines of different speeds can be compared.

The snapshots are a Clear Street venue's as its adapter makes them: Clear Street's field
paths (interned, as `flatten` interns them), carrying its parser's guarantee that its
numbers are Decimals (`Snapshot.decimal_fields`), with the rules compiled for that venue
as the daemon compiles them (its deprecated PDT fields, present here, are checked where
they are used, as fields that are usually absent). The "without the parser's guarantee"
row evaluates the same snapshots as a rule test or a replay builds them, each number's
type checked.
"""

from __future__ import annotations

import dataclasses
import decimal
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from bench.timing import best_of
from monitor.engine.expr import CONTEXT, CompiledExpr, compile_expression, compile_rules
from monitor.snapshot import Snapshot
from monitor.venue_fields import decimal_fields_map, often_absent_map

KIND = "clearstreet"  # the venue kind whose snapshots and compiled rules these are
TARGET_MS = 20.0
# as the daemon evaluates, at most this many times the yardstick (the rules' Decimal
# operations alone) measured in the same run: a target that does not drift with the machine
TARGET_RATIO = 1.8
SNAPSHOTS = 10_000
RUNS = 5
RATIO_ROUNDS = 7  # rounds of the paired figures the ratio divides
BATCH = 100  # snapshots built, then evaluated, at a time: as the daemon's polls

RULES: tuple[tuple[str, Mapping[str, Any]], ...] = (
    ("buying_power < params.buying_power_floor", {"buying_power_floor": 25_000}),
    ("margin_details.maintenance_margin_excess < 0", {}),
    (
        "margin_details.usage.used / margin_details.usage.total > params.max_util",
        {"max_util": "0.9"},
    ),
    ("coalesce(daily_pnl, 0) < -params.max_daily_loss", {"max_daily_loss": 50_000}),
    (
        "present(margin_details.pattern_day_trader) and margin_details.pattern_day_trader"
        " and equity < 25000",
        {},
    ),
    ("day_trade_count >= params.max_day_trades - 1", {"max_day_trades": 4}),
    ("margin_details.initial_margin_excess < 0", {}),
    ("equity < params.min_equity", {"min_equity": 10_000}),
    ("margin_excess / equity < params.min_excess_ratio", {"min_excess_ratio": "0.05"}),
    (
        "margin_requirement > equity * params.max_requirement_ratio",
        {"max_requirement_ratio": "0.8"},
    ),
    (
        "margin_details.intraday_details.buying_power < params.intraday_floor",
        {"intraday_floor": 5_000},
    ),
    ("abs(coalesce(daily_pnl, 0)) > params.max_abs_pnl", {"max_abs_pnl": 100_000}),
    ("sod.equity - equity > params.max_drawdown", {"max_drawdown": 20_000}),
    ("(sod.equity - equity) / sod.equity > params.max_drawdown_pct", {"max_drawdown_pct": "0.1"}),
    ('currency != "USD"', {}),
    (
        'venue == "cs-prime" and buying_power < params.prime_floor',
        {"prime_floor": 1_000},
    ),
    ("min(buying_power, margin_excess) < params.min_cushion", {"min_cushion": 2_000}),
    ('labels.tier == "gold" and equity < params.gold_min', {"gold_min": 500_000}),
    ("not present(buying_power)", {}),
    ("day_trade_count > 2 and not margin_details.pattern_day_trader", {}),
)


def _params(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Params as the rule loader hands them over: numbers as Decimal."""
    return {k: Decimal(str(v)) for k, v in raw.items()}


def _money(rng: random.Random, low: int, high: int) -> Decimal:
    return Decimal(rng.randint(low * 100, high * 100)).scaleb(-2)


def make_snapshots(count: int, seed: int = 7) -> list[Snapshot]:
    """Varied snapshots shaped like `flatten()` output; some fields absent."""
    rng = random.Random(seed)
    vouched = decimal_fields_map()[KIND]
    snapshots = []
    for i in range(count):
        equity = _money(rng, 1_000, 2_000_000)
        used, total = _money(rng, 0, 900_000), _money(rng, 1_000_000, 2_000_000)
        fields: dict[str, Any] = {
            "buying_power": _money(rng, -10_000, 4_000_000),
            "equity": equity,
            "margin_excess": _money(rng, -5_000, 1_000_000),
            "margin_requirement": _money(rng, 0, 1_500_000),
            "day_trade_count": Decimal(rng.randint(0, 5)),
            "margin_details.intraday_details.buying_power": _money(rng, 0, 4_000_000),
            "sod.equity": equity + _money(rng, -50_000, 50_000),
            "margin_details.maintenance_margin_excess": _money(rng, -10_000, 900_000),
            "margin_details.initial_margin_excess": _money(rng, -10_000, 900_000),
            "margin_details.usage.used": used,
            "margin_details.usage.total": total,
            "margin_details.pattern_day_trader": rng.random() < 0.3,
        }
        fields["sod"] = {"equity": fields["sod.equity"]}
        fields["margin_details.usage"] = {"used": used, "total": total}
        if rng.random() < 0.8:
            fields["daily_pnl"] = _money(rng, -200_000, 200_000)
        if rng.random() < 0.1:
            del fields["margin_details.pattern_day_trader"]
        fields = {sys.intern(path): value for path, value in fields.items()}  # as flatten's
        snapshots.append(
            Snapshot(
                venue="cs" if i % 4 else "cs-prime",
                venue_kind="clearstreet",
                account=str(10_000 + i),
                fields=fields,
                taken_at=0.0,
                currency="USD" if i % 10 else "USDC",
                labels={"tier": "gold" if i % 3 == 0 else "silver"},
                decimal_fields=vouched,  # as its adapter's snapshots
            )
        )
    return snapshots


def decimal_floor(snapshots: list[Snapshot]) -> Callable[[], None]:
    """Just the Decimal operations the 20 rules make (20 comparisons, 3 divisions, a
    shared subtraction, a multiplication, an abs), straight-line over values already in
    local variables: what exact evaluation costs on this machine however it is organized.
    The gap between it and the rows above is reading, checking and bookkeeping."""
    names = (
        "buying_power equity margin_excess margin_requirement day_trade_count"
        " margin_details.intraday_details.buying_power sod.equity"
        " margin_details.maintenance_margin_excess margin_details.initial_margin_excess"
        " margin_details.usage.used margin_details.usage.total"
    ).split()
    zero = Decimal(0)
    rows = [(*(s.fields[n] for n in names), s.fields.get("daily_pnl", zero)) for s in snapshots]
    p = [Decimal(n) for n in ("25000", "0.9", "50000", "4", "10000", "0.05", "0.8", "5000")]
    p0, p1, p2, p3, p4, p5, p6, p7 = p

    def body() -> None:
        for bp, eq, me, mr, dtc, ibp, sod, mme, rte, used, total, pnl in rows:
            drop = sod - eq
            (
                bp < p0,
                mme < zero,
                used / total > p1,
                pnl < -p2,
                eq < p0,
                dtc >= p3,
                rte < zero,
                eq < p4,
                me / eq < p5,
                mr > eq * p6,
                ibp < p7,
                abs(pnl) > p2,
                drop > p4,
                drop / sod > p5,
                bp < p7,
                me < bp,
                me < p7,
                eq < p0,
                dtc > p3,
                bp < zero,
            )

    return body


def main(argv: list[str] | None = None) -> dict[str, object]:
    exprs: list[CompiledExpr] = [compile_expression(text) for text, _ in RULES]
    params = [_params(raw) for _, raw in RULES]
    # as the daemon compiles them for a Clear Street venue (monitor.engine.evaluate): its
    # deprecated fields checked where used, the rest vouched for by its parser
    rules = compile_rules(
        exprs, optional=often_absent_map()[KIND], decimal_fields=decimal_fields_map()[KIND]
    )
    prepared = rules.prepare(params)  # once per account and config load
    run = rules.run
    snapshots = make_snapshots(SNAPSHOTS)
    hot = snapshots[:100] * (SNAPSHOTS // 100)  # 100 snapshots that stay in the CPU cache
    evaluations = len(exprs) * len(snapshots)

    # a sanity check that the benchmark exercises what it should
    outcome: dict[str, int] = {}
    for snapshot in snapshots:
        for result in rules(snapshot, params):  # the convenient, unprepared call
            key = type(result).__name__
            outcome[key] = outcome.get(key, 0) + 1
    assert outcome.get("EvalError", 0) == 0, outcome

    def rule_set(batch: list[Snapshot]) -> Callable[[], None]:
        def body() -> None:
            for snapshot in batch:
                run(snapshot, prepared)

        return body

    def one_by_one() -> None:
        for snapshot in snapshots:
            for expr, p in zip(exprs, params, strict=True):
                expr.evaluate(snapshot, p)

    def as_built() -> tuple[float, float]:
        """Seconds to evaluate 10,000 distinct snapshots, each batch of 100 evaluated
        right after it was built (as the daemon evaluates an answer once parsed), and
        seconds of the yardstick over the same batches, each timed beside its batch's
        evaluation (which of the two goes first alternates)."""
        daemon = yard = 0.0
        for batch in range(len(snapshots) // BATCH):
            built = make_snapshots(BATCH, seed=1000 + batch)
            yardstick = decimal_floor(built)
            if batch % 2:
                yard += best_of(1, yardstick)
            start = time.perf_counter()
            for snapshot in built:
                run(snapshot, prepared)
            daemon += time.perf_counter() - start
            if not batch % 2:
                yard += best_of(1, yardstick)
        return daemon, yard

    switching = best_of(RUNS, rule_set(snapshots))
    unvouched = [dataclasses.replace(s, decimal_fields=frozenset()) for s in snapshots]
    old = decimal.getcontext()
    decimal.setcontext(CONTEXT)  # as in an evaluation task that runs under CONTEXT
    try:
        in_context = best_of(RUNS, rule_set(snapshots))
        in_context_unvouched = best_of(RUNS, rule_set(unvouched))
        in_context_hot = best_of(RUNS, rule_set(hot))
        # The ratio's two figures are taken batch by batch, side by side, over the same
        # just-built snapshots: this machine's speed drifts by up to 2x within minutes
        # (other tenants), and a ratio of two figures taken seconds apart drifted with it
        # (1.59x-1.88x between runs of unchanged code); paired, rounds agree within 3%.
        pairs = []
        gc.disable()  # neither figure pays for the garbage of building the snapshots
        for _ in range(RATIO_ROUNDS):
            gc.collect()
            pairs.append(as_built())
    finally:
        gc.enable()
        decimal.setcontext(old)
    daemon_order = min(daemon for daemon, _ in pairs)
    floor = min(yard for _, yard in pairs)
    round_ratios = sorted(daemon / yard for daemon, yard in pairs)
    separate = best_of(RUNS, one_by_one)

    print(f"{len(exprs)} rules x {len(snapshots)} snapshots = {evaluations} evaluations")
    print(f"results: {dict(sorted(outcome.items()))}")
    for label, seconds, runs in (
        (
            "rules.run, as the daemon: each snapshot just built, under CONTEXT",
            daemon_order,
            RATIO_ROUNDS,
        ),
        ("rules.run, all built first, context switched per call", switching, RUNS),
        ("rules.run, all built first, task under CONTEXT", in_context, RUNS),
        (
            "rules.run, the same without the parser's guarantee",
            in_context_unvouched,
            RUNS,
        ),
        ("rules.run, task under CONTEXT, cache-hot snapshots", in_context_hot, RUNS),
        ("CompiledExpr.evaluate one by one", separate, RUNS),
        ("yardstick: the rules' Decimal operations alone, in locals", floor, RATIO_ROUNDS),
    ):
        print(
            f"{label}: {seconds * 1000:.1f} ms, {evaluations / seconds:,.0f} evaluations/s,"
            f" {seconds / evaluations * 1e9:.0f} ns each (best of {runs})"
        )
    daemon_ms = daemon_order * 1000
    verdict = "holds" if daemon_ms < TARGET_MS else "MISSED"
    print(
        f"target {TARGET_MS:.0f} ms for {evaluations} evaluations of distinct snapshots, "
        f"as the daemon evaluates them: {verdict}"
    )
    ratio = statistics.median(round_ratios)
    print(
        f"ratio to the yardstick, same run: {ratio:.2f}x, the median of {RATIO_ROUNDS} paired "
        f"rounds ({round_ratios[0]:.2f}x-{round_ratios[-1]:.2f}x; "
        f"target <= {TARGET_RATIO}x): {'holds' if ratio <= TARGET_RATIO else 'MISSED'}"
    )
    return {
        "evaluations": evaluations,
        "ms_as_daemon": round(daemon_ms, 2),
        "ms_context_switched": round(switching * 1000, 2),
        "ms_under_context": round(in_context * 1000, 2),
        "ms_under_context_unvouched": round(in_context_unvouched * 1000, 2),
        "ms_under_context_cache_hot": round(in_context_hot * 1000, 2),
        "ms_one_by_one": round(separate * 1000, 2),
        "ms_decimal_operations_alone": round(floor * 1000, 2),
        "target_ms": TARGET_MS,
        "target_holds": daemon_ms < TARGET_MS,
        "ratio_to_yardstick": round(ratio, 2),
        "ratio_rounds": [round(r, 3) for r in round_ratios],
        "target_ratio_to_yardstick": TARGET_RATIO,
        "ratio_holds": ratio <= TARGET_RATIO,
    }


if __name__ == "__main__":
    main()
