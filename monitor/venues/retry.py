"""Retrying venue calls with tenacity: backoff with jitter, server hints, a hard deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from monitor.errors import PollDeadlineExceeded, VenueError

T = TypeVar("T")

BACKOFF_MIN = 0.5  # seconds, as the official Clear Street SDK
BACKOFF_MAX = 8.0
MAX_ATTEMPTS = 5


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, VenueError) and exc.retryable


class _WaitWithHint:
    """Exponential backoff with full jitter, unless the server said when to come back."""

    def __init__(self, minimum: float, maximum: float) -> None:
        self._backoff = wait_random_exponential(multiplier=minimum, max=maximum, min=0.0)
        self._maximum = maximum

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hint = exc.retry_after if isinstance(exc, VenueError) else None
        if hint is not None:
            return hint
        return float(self._backoff(state))


class _StopAtDeadline:
    """Stop when attempts run out or the next try could not start before the deadline."""

    def __init__(self, deadline: float, max_attempts: int) -> None:
        self._deadline = deadline
        self._max_attempts = max_attempts

    def __call__(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self._max_attempts:
            return True
        now = asyncio.get_running_loop().time()
        return now + state.upcoming_sleep >= self._deadline


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    deadline: float,
    max_attempts: int = MAX_ATTEMPTS,
    backoff_min: float = BACKOFF_MIN,
    backoff_max: float = BACKOFF_MAX,
    notice: Callable[[VenueError], object] | None = None,
) -> T:
    """Run `attempt` until it succeeds, a non-retryable error, or the deadline.

    The last error is raised as it was, so callers see the venue's own reason; a retry
    that runs out of the poll's time raises the failure before it instead.

    The first attempt runs directly: setting up tenacity's machinery costs about 20 us
    of CPU, as much as a tenth of a whole poll, and nearly every poll succeeds at once
    (bench/poll_cost.py). Only a retryable failure builds the AsyncRetrying, which is
    handed that failure as its first attempt's outcome, so waits, hints, the deadline and
    the attempt count are exactly those of retrying from the start.

    `notice` sees every attempt's VenueError (the venue's request budget pauses on a
    throttling answer).
    """
    try:
        return await attempt()
    except VenueError as exc:
        if notice is not None:
            notice(exc)
        if not exc.retryable:
            raise
        first: VenueError | None = exc
        earlier: VenueError = exc  # the last failure that was the venue's own

    async def attempts() -> T:
        nonlocal first, earlier
        if first is not None:
            failed, first = first, None
            raise failed  # the first attempt's outcome, without a second request
        try:
            return await attempt()
        except PollDeadlineExceeded:
            # A retry that ran out of the poll's time says less than the failure that
            # made it retry ("no answer within 0.011s" after a refused TLS handshake).
            raise earlier from None
        except VenueError as exc:
            if notice is not None:
                notice(exc)
            earlier = exc
            raise

    retrying = AsyncRetrying(
        retry=retry_if_exception(_retryable),
        wait=_WaitWithHint(backoff_min, backoff_max),
        stop=_StopAtDeadline(deadline, max_attempts),
        reraise=True,
    )
    return await retrying(attempts)
