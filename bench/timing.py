"""Timing for the in-process benchmarks (rule_eval, lifecycle, scrape)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


def best_of(runs: int, body: Callable[[], object], *, collect: bool = False) -> float:
    """The shortest of `runs` timed calls of `body`, in seconds. `collect`: a full garbage
    collection before each call, outside its time, so that no call pays for the garbage
    of the one before."""
    best = float("inf")
    for _ in range(runs):
        if collect:
            gc.collect()
        start = time.perf_counter()
        body()
        best = min(best, time.perf_counter() - start)
    return best
