"""A venue's request budget: `max_requests_per_second`, lowered while the venue pushes back.

A 429 or 503 that says when to come back (`Retry-After`, `retry-after-ms`) stops every
request to the venue until then: the limit is per key, so the other accounts' polls,
discovery and token requests would only be refused as well. The budget then restarts at
half the rate it had and grows by `RECOVERY_STEP` of the configured rate each second
until it is whole again (additive increase, multiplicative decrease, as TCP does): from
half to whole in ten seconds, and a venue that throttles again halves it again.

Pure bookkeeping with the time passed in; `VenueLimits` applies it to every request and
the poller asks it when to start polls.
"""

from __future__ import annotations

from monitor.errors import VenueError
from monitor.infra.retry_after import RETRY_AFTER_CAP, THROTTLING_STATUSES

RECOVERY_STEP = 0.05  # of the configured rate, added per second after a throttle
MIN_FRACTION = 1 / 64  # the budget never halves below this share of the configured rate


class RequestBudget:
    """The requests per second a venue may be sent now (see the module docstring)."""

    __slots__ = ("_floor", "_recovered", "configured", "paused_until", "throttled_total")

    def __init__(self, max_requests_per_second: float) -> None:
        if max_requests_per_second <= 0:
            raise ValueError("max_requests_per_second must be positive")
        self.configured = max_requests_per_second
        self.paused_until = 0.0  # loop time before which nothing is sent
        self.throttled_total = 0  # throttling answers that paused the venue
        self._floor = max_requests_per_second  # the rate when the pause ends
        self._recovered = True  # the fast path: nothing to compute

    def rate(self, now: float) -> float:
        """Requests per second allowed at `now`: 0 while paused, then recovering."""
        if self._recovered:
            return self.configured
        if now < self.paused_until:
            return 0.0
        rate = self._floor + RECOVERY_STEP * self.configured * (now - self.paused_until)
        if rate >= self.configured:
            self._recovered = True
            return self.configured
        return rate

    def planning_rate(self, now: float) -> float:
        """The rate to plan a schedule with: during a pause, the one it resumes at."""
        if now < self.paused_until:
            return self._floor
        return self.rate(now)

    def throttle(self, seconds: float, now: float) -> None:
        """The venue asked for no request during `seconds` from `now`. Answers that
        arrive while the venue is already paused (requests sent before it) extend the
        pause but halve the rate only once. A hint past RETRY_AFTER_CAP (a broken or
        hostile `Retry-After: 99999999999`) pauses that long, not for ever."""
        seconds = min(seconds, RETRY_AFTER_CAP)
        if now >= self.paused_until:
            self._floor = max(self.rate(now) / 2, self.configured * MIN_FRACTION)
            self.throttled_total += 1
        self._recovered = False
        self.paused_until = max(self.paused_until, now + seconds)

    def note(self, error: VenueError, now: float) -> bool:
        """Throttle when `error` is a throttling answer with a hint; True when it was."""
        if error.status in THROTTLING_STATUSES and error.retry_after is not None:
            self.throttle(error.retry_after, now)
            return True
        return False
