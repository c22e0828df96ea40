"""Keeping a connection up: one session after another, backing off between failures.

The daemon's MQTT publisher and the PagerDuty bridge both run their broker session
through `reconnect_forever`: a session that ends without an error is the end (only a
stop ends one so); a session that fails is reported to `failed` with the wait before the
next attempt, waits doubling from the back-off's `initial` to its `max` (jittered), and
starting over once a connection held longer than `max`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from monitor.infra.backoff import Backoff

__all__ = ["RECONNECT", "reconnect_forever", "wait_or_stop"]

#: The reconnect back-off of both the publisher and the bridge: 0.2 s doubling to 30 s.
RECONNECT = Backoff(0.2, 30.0)


async def wait_or_stop(stopping: asyncio.Event, delay: float) -> None:
    """Wait `delay` seconds, or less if `stopping` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await stopping.wait()


async def reconnect_forever(
    session: Callable[[], Awaitable[None]],
    *,
    backoff: Backoff,
    stopping: asyncio.Event,
    failed: Callable[[Exception, float], None],
    keep_trying: Callable[[], bool] | None = None,
    pause: Callable[[float], Awaitable[None]] | None = None,
) -> None:
    """Run `session()` until one returns; after each that raises, `failed(error,
    delay)` (it logs; it must not raise), then `pause(delay)` (default: wait the delay
    or until `stopping` is set). Before each attempt `keep_trying()` (default: not
    `stopping`) may end the loop. Only CancelledError escapes: every failure is retried,
    so the caller's task never dies of one."""
    loop = asyncio.get_running_loop()
    should_try = keep_trying or (lambda: not stopping.is_set())
    failures = 0
    while should_try():
        began = loop.time()
        try:
            await session()
            return
        except Exception as exc:
            if loop.time() - began > backoff.max:
                failures = 0  # the connection held: start the back-off again
            delay = backoff.delay(failures)
            failures += 1
            failed(exc, delay)
        if pause is not None:
            await pause(delay)
        else:
            await wait_or_stop(stopping, delay)
