"""A token bucket (GCRA): at most `rate` requests per second on average, bursts of
`burst`; the venues' pacing and the PagerDuty bridge's per-routing-key limit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from monitor.errors import PollDeadlineExceeded

__all__ = ["RateLimiter"]


class RateLimiter:
    """At most `rate` requests per second on average, with bursts of `burst`: the
    bucket starts full, and in any window of T seconds at most `burst + rate * T`
    requests go out.

    Requests reserve their slot in call order, so waiting is fair (first come, first
    served); a caller whose slot would come after its deadline does not reserve it and
    fails at once (`PollDeadlineExceeded`, the venues' error for a poll out of time).
    `clock` is the loop's time unless given.
    """

    def __init__(
        self, rate: float, *, burst: float = 1.0, clock: Callable[[], float] | None = None
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate
        self.burst = burst
        self.interval = 1.0 / rate
        self.tolerance = max(0.0, burst - 1.0) * self.interval
        self._clock = clock
        self._tat = 0.0  # theoretical arrival time of the next request

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def set_rate(self, rate: float) -> None:
        """Pace at `rate` from the next reservation on (the budget changed)."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.interval = 1.0 / rate
        self.tolerance = max(0.0, self.burst - 1.0) * self.interval

    def hold_until(self, when: float) -> None:
        """No slot before `when`, and no burst at it: the other side asked for a pause."""
        self._tat = max(self._tat, when + self.tolerance)

    def reserve(self, deadline: float | None = None) -> float:
        """Reserve the next slot; return how long to wait for it."""
        now = self._now()
        tat = max(self._tat, now)
        wait = max(0.0, tat - self.tolerance - now)
        if deadline is not None and now + wait > deadline:
            raise PollDeadlineExceeded(
                f"rate limit: next request slot in {wait:.3g}s is past the poll deadline"
            )
        self._tat = tat + self.interval
        return wait

    async def acquire(self) -> None:
        """Wait for the next slot (taken even if the wait is cancelled)."""
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
