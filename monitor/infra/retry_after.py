"""A server's hint of when to come back, from its 429 or 503 answer's headers."""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Final

from monitor.infra.backoff import Backoff

__all__ = ["RETRY_AFTER_CAP", "THROTTLING_STATUSES", "retry_after_seconds", "retry_wait"]

#: The longest server hint honoured, in seconds.
RETRY_AFTER_CAP: Final = 300.0
#: The answers whose Retry-After (or retry-after-ms) is honoured.
THROTTLING_STATUSES: Final = frozenset({429, 503})


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait: `retry-after-ms` (milliseconds, as OpenAI's and Stripe's APIs
    send it) when it is a number, else `Retry-After` as delta-seconds or an HTTP date
    (`now`, epoch seconds, is the time it is measured from). A time in the past is 0,
    a number too large for a float infinite (callers cap it); None when neither header
    holds a usable value. `headers` must be case-insensitive
    (aiohttp's, httpx's, `HttpResponse.headers`)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        value = _number(millis)
        if value is not None and value >= 0:
            return value / 1000
    text = headers.get("retry-after")
    if text is None:
        return None
    seconds = _number(text)
    if seconds is None:
        try:
            when = email.utils.parsedate_to_datetime(text.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, by RFC 5322
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds)


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return None if math.isnan(value) else value  # a huge value is "much later": the caller caps


def retry_wait(backoff: Backoff, failures: int, hint: float | None) -> float:
    """The wait before the next attempt after `failures` failed ones before the last:
    the back-off's, or the server's `hint` (capped at RETRY_AFTER_CAP) when longer."""
    delay = backoff.delay(failures)
    if hint is not None:
        delay = max(delay, min(hint, RETRY_AFTER_CAP))
    return delay
