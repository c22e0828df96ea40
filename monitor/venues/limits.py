"""Per-venue request pacing: a token bucket (GCRA) plus a concurrency cap."""

from __future__ import annotations

import asyncio

from monitor.infra.ratelimit import RateLimiter  # moved; the venues import it here

__all__ = ["RateLimiter", "VenueLimits"]


class VenueLimits:
    """The concurrency cap and rate limit of one venue, applied to every request."""

    def __init__(self, max_concurrency: int, max_requests_per_second: float) -> None:
        self.semaphore = asyncio.Semaphore(max_concurrency)
        # A burst of one second's worth lets a cycle start promptly without exceeding
        # the average rate the venue allows.
        self.rate = RateLimiter(
            max_requests_per_second, burst=max(1.0, min(max_requests_per_second, 50.0))
        )

    def slot(self, deadline: float) -> _Slot:
        """`async with limits.slot(deadline):` one request: a place among the venue's
        `max_concurrency`, then its turn under the rate limit (PollDeadlineExceeded if
        that turn comes after `deadline`)."""
        return _Slot(self, deadline)


class _Slot:
    """One request's slot. A class rather than an @asynccontextmanager generator: it is
    entered once per poll, and the generator machinery cost more than the semaphore and
    the rate limiter together (bench/poll_cost.py)."""

    __slots__ = ("_deadline", "_limits")

    def __init__(self, limits: VenueLimits, deadline: float) -> None:
        self._limits = limits
        self._deadline = deadline

    async def __aenter__(self) -> None:
        semaphore = self._limits.semaphore
        await semaphore.acquire()
        try:
            wait = self._limits.rate.reserve(self._deadline)
            if wait > 0:  # nearly always 0, and then nothing to await
                await asyncio.sleep(wait)
        except BaseException:
            semaphore.release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._limits.semaphore.release()
