"""Parse cost: one venue answer into snapshot fields, against its Decimals alone.

Run: `.venv/bin/python -m bench.parse_cost`. For the simulator's Clear Street margin
answer (63 fields, five top margin contributors) and its Polymarket answer: the time of
each step a poll takes after the HTTP answer is in (`decode_json`'s decoding, the answer
digest of `monitor/venues/unchanged.py`, the adapter's parse: `flatten` and the
normalized fields), and the floor of the parse in the same run: `Decimal()` of the
answer's decimal texts alone. Each figure is the best of 15 rounds that time all of them
in turn, so that the ratio is of figures taken moments apart (this machine's speed drifts
by up to 2x within minutes). No target: the figures behind `flatten`'s inlined checks.
"""

from __future__ import annotations

import copy
import json
import re
import statistics
import timeit
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any

from monitor.simulator.templates import _CS_MARGIN, _PM_DEFAULT, CS_TOP_CONTRIBUTORS
from monitor.venues.clearstreet import ClearStreetAdapter
from monitor.venues.polymarket import PolymarketAdapter
from monitor.venues.unchanged import answer_digest
from monitor.venues.wire import _loads

ROUNDS = 15
CALLS = 2_000  # per round and figure
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def _texts(node: Any, out: list[str]) -> list[str]:
    """The decimal texts in a decoded answer."""
    if isinstance(node, dict):
        node = list(node.values())
    if isinstance(node, list):
        for item in node:
            _texts(item, out)
    elif isinstance(node, str) and _NUMBER.fullmatch(node):
        out.append(node)
    return out


def answers() -> dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]]:
    clearstreet = copy.deepcopy(_CS_MARGIN) | {"account_id": 100001}
    clearstreet["margin_details"]["top_contributors"] = copy.deepcopy(CS_TOP_CONTRIBUTORS)
    polymarket = copy.deepcopy(_PM_DEFAULT) | {"updateTime": "2026-12-05T10:00:00.123456Z"}
    return {
        "clearstreet": (
            clearstreet,
            lambda data: ClearStreetAdapter.parse_balances(data, "100001"),
        ),
        "polymarket": (polymarket, PolymarketAdapter.parse_balance),
    }


def main() -> dict[str, object]:
    results: dict[str, object] = {}
    for venue, (data, parse) in answers().items():
        body = _json(data)
        texts = _texts(data, [])
        fields = parse(data)
        steps: dict[str, Callable[[], object]] = {
            "decode": partial(_loads, body),
            "digest": partial(answer_digest, data),
            "parse": partial(parse, data),
            "Decimal() alone": partial(_decimals, texts),
        }
        best = dict.fromkeys(steps, float("inf"))
        ratios = []
        for _ in range(ROUNDS):
            took = {name: timeit.timeit(step, number=CALLS) / CALLS for name, step in steps.items()}
            ratios.append(took["parse"] / took["Decimal() alone"])
            best = {name: min(best[name], took[name]) for name in steps}
        ratio = statistics.median(ratios)
        print(
            f"{venue}: {len(body)} bytes, {len(fields)} fields, {len(texts)} decimal texts: "
            + ", ".join(f"{name} {seconds * 1e6:.1f} us" for name, seconds in best.items())
            + f"; parse / Decimal() alone {ratio:.2f}x (median round; {min(ratios):.2f}x-"
            f"{max(ratios):.2f}x)"
        )
        results[venue] = {name: round(seconds * 1e6, 2) for name, seconds in best.items()}
        results[f"{venue}_parse_ratio"] = round(ratio, 2)
    return results


def _decimals(texts: list[str]) -> list[Decimal]:
    return list(map(Decimal, texts))


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps({"data": data, "error": None, "metadata": {"request_id": "r"}}).encode()


if __name__ == "__main__":
    main()
