"""POSTing one event to PagerDuty's Events API v2, with retries (tenacity).

PagerDuty's answers, as its documentation lists them: 202 accepted (any 2xx is taken
as accepted); 400 invalid event, never retried; 429 too many requests and 5xx, retried
after a while; a network error, retried. Here: 400, 413 and 422 are refusals (the event
is dropped: sending it again cannot succeed); 408, 429, 5xx, connection errors and
timeouts are retried with exponential backoff and jitter (`Backoff`), a server's hint
longer than the backoff is honoured (up to 5 minutes): `retry-after-ms`, else
`Retry-After` in seconds or as an HTTP date (`monitor/infra/retry_after.py`, the
venues' parser too); any other status (401, 403, 404,
a redirect: a wrong `events_url`, a proxy) is retried the same way and logged as an
error, so a misconfiguration delays pages instead of losing them. Retries go on until
the event is accepted or refused, or the bridge stops; every attempt takes a token of
the routing key's bucket, so retries count against the rate limit too.

The routing key is read from its Secret at every attempt (a rotated key file is picked
up) and goes into the request body only: never into a log field, an exception, or the
text of PagerDuty's answer as logged (`scrub` removes it from there too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never

from monitor.config.secret import Secret, SecretUnavailable
from monitor.infra.backoff import Backoff
from monitor.infra.http_post import JsonPoster, PostFailed
from monitor.infra.ratelimit import RateLimiter
from monitor.infra.retry_after import RETRY_AFTER_CAP, retry_after_seconds, retry_wait
from monitor.pagerduty.inbound import InboundEvent

__all__ = ["RETRY_AFTER_CAP", "EventsApi", "Outcome", "retry_wait", "scrub"]

log = structlog.get_logger("riskmon.pagerduty")

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
    """The Events API at `url`, through `poster` (the caller owns both)."""

    def __init__(self, url: str, poster: JsonPoster, *, timeout: float, backoff: Backoff) -> None:
        self.url = url
        self._poster = poster
        self._timeout = timeout
        self._backoff = backoff

    async def deliver(
        self, event: InboundEvent, key: Secret, bucket: RateLimiter, *, route: str
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
        """The back-off's delay (doubling from `initial`, capped at `max`, half of it
        jittered); a longer server hint wins."""
        exc = state.outcome.exception() if state.outcome is not None else None
        return retry_wait(
            self._backoff,
            state.attempt_number - 1,
            exc.retry_after if isinstance(exc, _Retry) else None,
        )

    async def _post(self, event: InboundEvent, key: Secret, attempts: int) -> Outcome:
        try:
            routing_key = key.get(fresh=True)  # one event at a time: always the current key
        except SecretUnavailable as exc:  # names the file, never the value
            raise _Retry(str(exc), unexpected=True) from None
        if not routing_key:
            raise _Retry(f"{key.name}: the routing key is empty", unexpected=True)
        try:
            answer = await self._poster.post(
                self.url,
                event.request(routing_key),
                within=self._timeout,
                max_bytes=_ANSWER_LIMIT,
            )
        except PostFailed as exc:
            raise _Retry(scrub(str(exc), routing_key)) from None
        status = answer.status
        if 200 <= status < 300:
            return Outcome(True, status, "", attempts)
        retry_after = retry_after_seconds(answer.headers)
        error = _error_text(answer.body, routing_key) or f"HTTP {status}"
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
