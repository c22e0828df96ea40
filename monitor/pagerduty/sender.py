"""POSTing one event to PagerDuty's Events API v2, with retries (tenacity).

PagerDuty's answers, as its documentation lists them: 202 accepted (any 2xx is taken
as accepted); 400 invalid event, never retried; 429 too many requests and 5xx, retried
after a while; a network error, retried. Here: 400, 413 and 422 are refusals (the event
is dropped: sending it again cannot succeed); 408, 429, 5xx, connection errors and
timeouts are retried with exponential backoff and jitter (`Backoff`), a Retry-After
longer than the backoff is honoured (up to 5 minutes); any other status (401, 403, 404,
a redirect: a wrong `events_url`, a proxy) is retried the same way and logged as an
error, so a misconfiguration delays pages instead of losing them. Retries go on until
the event is accepted or refused, or the bridge stops; every attempt takes a token of
the routing key's bucket, so retries count against the rate limit too.

The routing key is read from its Secret at every attempt (a rotated key file is picked
up) and goes into the request body only: never into a log field, an exception, or the
text of PagerDuty's answer as logged (`scrub` removes it from there too).
"""

from __future__ import annotations

import email.utils
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import aiohttp
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never

from monitor.config.secret import Secret, SecretUnavailable
from monitor.pagerduty.config import Backoff
from monitor.pagerduty.inbound import InboundEvent
from monitor.pagerduty.ratelimit import TokenBucket

__all__ = ["RETRY_AFTER_CAP", "EventsApi", "Outcome", "scrub"]

log = structlog.get_logger("riskmon.pagerduty")

#: The longest Retry-After honoured, in seconds.
RETRY_AFTER_CAP: Final = 300.0
_REFUSED: Final = frozenset({400, 413, 422})
_RETRIED: Final = frozenset({408, 429})
_ANSWER_LIMIT: Final = 64 * 1024  # bytes of an answer read
_TEXT_LIMIT: Final = 500  # characters of PagerDuty's error text logged
_HIDDEN: Final = "<routing_key>"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one event ended: accepted (2xx) or refused (`status`, PagerDuty's `error`)."""

    accepted: bool
    status: int
    error: str
    attempts: int


class _Retry(Exception):
    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        unexpected: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.unexpected = unexpected


class EventsApi:
    """The Events API at `url`, through `session` (the caller owns both)."""

    def __init__(
        self, url: str, session: aiohttp.ClientSession, *, timeout: float, backoff: Backoff
    ) -> None:
        self.url = url
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._backoff = backoff

    async def deliver(
        self, event: InboundEvent, key: Secret, bucket: TokenBucket, *, route: str
    ) -> Outcome:
        """Send `event` with the routing key `key` until PagerDuty accepts or refuses it."""

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            if not isinstance(exc, _Retry):  # pragma: no cover - only _Retry is retried
                return
            delay = state.upcoming_sleep
            fields = {
                "event_id": event.event_id,
                "alertname": event.alertname,
                "route": route,
                "status": exc.status,
                "error": exc.reason,
                "attempt": state.attempt_number,
                "retry_in": round(delay, 3),
            }
            if exc.unexpected:
                log.error("pagerduty: unexpected answer; retrying", **fields)
            else:
                log.warning("pagerduty: not delivered; retrying", **fields)

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retry),
            wait=self._wait,
            stop=stop_never,
            before_sleep=before_sleep,
            reraise=True,
        )
        attempts = 0

        async def attempt() -> Outcome:
            nonlocal attempts
            attempts += 1
            await bucket.acquire()
            return await self._post(event, key, attempts)

        outcome: Outcome = await retrying(attempt)
        return outcome

    def _wait(self, state: RetryCallState) -> float:
        """Exponential (doubling from `initial`, capped at `max`), half of it jittered;
        a longer Retry-After wins."""
        exponent = min(state.attempt_number - 1, 60)
        ceiling = min(self._backoff.max, self._backoff.initial * 2.0**exponent)
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retry) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, RETRY_AFTER_CAP))
        return delay

    async def _post(self, event: InboundEvent, key: Secret, attempts: int) -> Outcome:
        try:
            routing_key = key.get(fresh=True)  # one event at a time: always the current key
        except SecretUnavailable as exc:  # names the file, never the value
            raise _Retry(str(exc), unexpected=True) from None
        if not routing_key:
            raise _Retry(f"{key.name}: the routing key is empty", unexpected=True)
        try:
            async with self._session.post(
                self.url,
                data=event.request(routing_key),
                headers={"Content-Type": "application/json"},
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                answer = await response.content.read(_ANSWER_LIMIT)
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            text = scrub(str(exc), routing_key)
            reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            raise _Retry(reason) from None
        if 200 <= status < 300:
            return Outcome(True, status, "", attempts)
        error = _error_text(answer, routing_key) or f"HTTP {status}"
        if status in _REFUSED:
            return Outcome(False, status, error, attempts)
        retried = status in _RETRIED or status >= 500
        raise _Retry(error, status=status, retry_after=retry_after, unexpected=not retried)


def scrub(text: str, routing_key: str) -> str:
    """`text` with every occurrence of the routing key hidden."""
    return text.replace(routing_key, _HIDDEN) if routing_key else text


def _error_text(answer: bytes, routing_key: str) -> str:
    """PagerDuty's explanation (`message: errors`), or the start of the answer's text."""
    text = answer.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        parts = [str(data["message"])] if data.get("message") else []
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            parts.append("; ".join(str(e) for e in errors))
        if parts:
            text = ": ".join(parts)
    text = scrub(text, routing_key)
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 1] + "\u2026"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if seconds == seconds else None  # NaN: no answer
