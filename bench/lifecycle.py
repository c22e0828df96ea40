"""Alert lifecycle speed: `AlertBook.observe` on the hot path, where nothing changes.

Run: `.venv/bin/python -m bench.lifecycle`. Times 200,000 `observe()` calls that cause no
transition, best of 5, for the three shapes a no-transition step takes:

- inactive: the condition is false and no alert is held (the common case: 10,000
  accounts x 20 rules, mostly quiet): one look-up, nothing kept;
- pending: the condition holds, `for` has not elapsed;
- firing: the condition holds, the alert stays firing.

Observations are built beforehand (building one is the evaluator's cost; it is printed
separately). Target: well under 1 us per step.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from bench.timing import best_of
from monitor.engine.expr import compile_expression
from monitor.engine.lifecycle import AlertBook, Observation
from monitor.engine.model import Rule
from monitor.yamlsource import Location

STEPS = 200_000
ACCOUNTS = 10_000
RULES = 20
RUNS = 5
TARGET_NS = 1000.0


def _rules(for_: float) -> list[Rule]:
    expr = compile_expression("buying_power < params.floor")
    where = Location("bench.yaml", 1, 1)
    return [
        Rule(
            alert=f"Rule{i}", expr=expr, group="bench", file="bench.yaml", location=where, for_=for_
        )
        for i in range(RULES)
    ]


def _no_annotations(resolved: bool, firing_values: Mapping[str, str]) -> dict[str, str]:
    return {}


def _observe_all(
    book: AlertBook, rules: list[Rule], accounts: list[str], obs: Observation, now: float
) -> int:
    events = 0
    observe = book.observe
    labels: dict[str, str] = {}
    for account in accounts:
        for rule in rules:
            if (
                observe(
                    rule,
                    venue="cs",
                    venue_kind="clearstreet",
                    account=account,
                    labels=labels,
                    obs=obs,
                    now=now,
                )
                is not None
            ):
                events += 1
    return events


def main(argv: list[str] | None = None) -> dict[str, object]:
    accounts = [str(n) for n in range(STEPS // RULES)]  # 10,000 x 20 = 200,000 steps
    values = {"buying_power": Decimal("24000.00")}
    false = Observation(condition=False, values=values, render=_no_annotations)
    true = Observation(condition=True, values=values, render=_no_annotations)
    results: dict[str, object] = {"steps": STEPS}

    for shape, for_, obs in (
        ("inactive", 0.0, false),
        ("pending", 3600.0, true),
        ("firing", 0.0, true),
    ):
        rules = _rules(for_)
        book = AlertBook()
        if obs is true:  # bring every alert to the phase measured
            _observe_all(book, rules, accounts, true, 0.0)
        expected = len(book)

        def body(book: AlertBook = book, rules: list[Rule] = rules, obs: Observation = obs) -> None:
            assert _observe_all(book, rules, accounts, obs, 60.0) == 0  # no transition

        seconds = best_of(RUNS, body)
        assert len(book) == expected
        ns = seconds / STEPS * 1e9
        print(
            f"{shape:>8}: {STEPS:,} observe() in {seconds * 1000:.1f} ms,"
            f" {STEPS / seconds:,.0f} steps/s, {ns:.0f} ns each (best of {RUNS}),"
            f" {expected:,} alerts held"
        )
        results[f"{shape}_steps_per_s"] = round(STEPS / seconds)
        results[f"{shape}_ns_per_step"] = round(ns, 1)

    def build_all() -> None:
        for _ in range(STEPS):
            Observation(condition=False, clear=None, values=values, render=_no_annotations)

    build = best_of(RUNS, build_all)
    print(f"(building an Observation, the caller's cost: {build / STEPS * 1e9:.0f} ns)")
    results["observation_build_ns"] = round(build / STEPS * 1e9, 1)
    worst = max(float(str(results[f"{s}_ns_per_step"])) for s in ("inactive", "pending", "firing"))
    verdict = "holds" if worst < TARGET_NS else "MISSED"
    print(f"target under {TARGET_NS:.0f} ns per no-transition step: {verdict}")
    results["target_holds"] = worst < TARGET_NS
    return results


if __name__ == "__main__":
    main()
