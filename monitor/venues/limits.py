"""Per-venue request pacing: a token bucket (GCRA) under the venue's request budget,
a pause while the venue asked for one, and a concurrency cap."""

from __future__ import annotations

import asyncio
import math
from collections import deque

from monitor.errors import PollDeadlineExceeded, VenueError
from monitor.infra.ratelimit import RateLimiter  # moved; the venues import it here
from monitor.venues.budget import RequestBudget

__all__ = ["RateLimiter", "RequestBudgetExceeded", "VenueLimits"]

# No more than the budget's requests in any window this long, by the times they were
# actually sent: the token bucket spaces the turns evenly, but a turn taken late (the loop
# was busy) beside one on time would put one request too many into some second. The 10 ms
# beyond the second covers the requests' way to the venue varying.
SEND_WINDOW = 1.01
SEND_LOG = 1000  # above this many requests a second the window is not kept (nor needed)


class RequestBudgetExceeded(PollDeadlineExceeded):
    """The request's turn under riskmon's own budget (or the venue's pause) comes after
    the poll's deadline. Not the venue's failure: the poller waits and polls again."""

    outcome = "skipped_budget"


class VenueLimits:
    """The concurrency cap, request budget and pacing of one venue, for every request."""

    def __init__(self, max_concurrency: int, max_requests_per_second: float) -> None:
        self.semaphore = asyncio.Semaphore(max_concurrency)
        self.budget = RequestBudget(max_requests_per_second)
        # No burst: the budget is never exceeded in any second (a burst of one second's
        # worth let two seconds' requests into one). The poller spreads polls evenly.
        self.rate = RateLimiter(max_requests_per_second)
        self._paced_at = max_requests_per_second
        self._sent: deque[float] = deque(
            maxlen=max(1, min(math.floor(max_requests_per_second), SEND_LOG))
        )

    def slot(self, deadline: float) -> _Slot:
        """`async with limits.slot(deadline):` one request: a place among the venue's
        `max_concurrency`, then its turn under the budget (RequestBudgetExceeded if that
        turn comes after `deadline`)."""
        return _Slot(self, deadline)

    def notice(self, error: VenueError) -> None:
        """Every failed request's error: a 429 or 503 with a retry hint pauses the venue
        (the status and hint come through the error, whatever the HTTP client)."""
        if self.budget.note(error, asyncio.get_running_loop().time()):
            self.rate.hold_until(self.budget.paused_until)

    def pause_left(self, now: float, deadline: float) -> float:
        """Seconds until the venue's pause ends (0 when none); RequestBudgetExceeded when
        it ends after `deadline`."""
        paused_until = self.budget.paused_until
        if now >= paused_until:
            return 0.0
        if paused_until > deadline:
            raise RequestBudgetExceeded(
                f"the venue asked for no request for {paused_until - now:.3g}s more, "
                "past the poll deadline"
            )
        return paused_until - now

    def window_left(self, now: float) -> float:
        """Seconds until one more request fits in the last SEND_WINDOW (0: now)."""
        allowed = max(1, math.floor(self._paced_at))
        sent = self._sent
        if len(sent) < allowed:  # also when the budget is above SEND_LOG
            return 0.0
        return max(0.0, sent[-allowed] + SEND_WINDOW - now)

    def sending(self, now: float) -> None:
        self._sent.append(now)

    def reserve(self, now: float, deadline: float) -> float:
        """Reserve the next turn at the budget's rate now; how long to wait for it."""
        rate = self.budget.rate(now)
        if rate != self._paced_at:
            self._paced_at = rate
            self.rate.set_rate(rate)
        try:
            return self.rate.reserve(deadline)
        except PollDeadlineExceeded as exc:  # riskmon's own budget, not the venue's failure
            raise RequestBudgetExceeded(str(exc)) from None


class _Slot:
    """One request's slot. A class rather than an @asynccontextmanager generator: it is
    entered once per poll, and the generator machinery cost more than the semaphore and
    the rate limiter together (bench/poll_cost.py)."""

    __slots__ = ("_deadline", "_limits")

    def __init__(self, limits: VenueLimits, deadline: float) -> None:
        self._limits = limits
        self._deadline = deadline

    async def __aenter__(self) -> None:
        limits = self._limits
        semaphore = limits.semaphore
        await semaphore.acquire()
        try:
            loop = asyncio.get_running_loop()
            while True:
                now = loop.time()
                pause = limits.pause_left(now, self._deadline)
                if pause:
                    await asyncio.sleep(pause)
                    continue
                wait = limits.reserve(now, self._deadline)
                if wait > 0:  # nearly always 0, and then nothing to await
                    await asyncio.sleep(wait)
                    if loop.time() < limits.budget.paused_until:
                        continue  # a pause began while waiting: the turn is after it
                while late := limits.window_left(loop.time()):
                    if loop.time() + late > self._deadline:
                        raise RequestBudgetExceeded(
                            "rate limit: no request slot before the poll deadline"
                        )
                    await asyncio.sleep(late)
                limits.sending(loop.time())
                return
        except BaseException:
            semaphore.release()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._limits.semaphore.release()
