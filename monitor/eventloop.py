"""The event loop every riskmon command runs on: uvloop where it is installed.

uvloop (libuv, in C) runs riskmon's own code unchanged and takes about 7% less CPU per
poll than asyncio's pure-Python loop (bench/poll_cost.py: 0.19 against 0.205 ms on the
2-core benchmark machine): the loop's bookkeeping and socket calls are a large share of
a poll. `RISKMON_EVENT_LOOP=asyncio` chooses the standard loop, for debugging with
asyncio's debug mode or where uvloop is not installed (it is optional on platforms
without a wheel).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

ENVIRONMENT_VARIABLE = "RISKMON_EVENT_LOOP"


def loop_name() -> str:
    """`uvloop` or `asyncio`: the loop `run` will use."""
    wanted = os.environ.get(ENVIRONMENT_VARIABLE, "uvloop").strip().lower()
    if wanted not in ("uvloop", "asyncio"):
        raise SystemExit(
            f"riskmon: {ENVIRONMENT_VARIABLE} must be uvloop or asyncio, not {wanted!r}"
        )
    if wanted == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "asyncio"
    return wanted


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, on uvloop unless told otherwise."""
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
