"""`AlertmanagerSender`: delivers riskmon's events to one Alertmanager, as Prometheus does.

Each event is queued for every configured Alertmanager in the same transaction that
writes it to the outbox (`Store.set_destinations`, `delivery_queue`), so an Alertmanager
that is down or slow loses nothing and holds back neither MQTT nor another Alertmanager.
The sender reads its queue oldest first, in batches, posts them to
`{url}/api/v2/alerts` (`monitor.alertmanager.payload`) and deletes them once
Alertmanager answered 2xx. A failure (no connection, timeout, 5xx, 401 ...) is retried
with back-off (1 s doubling to 30 s, jittered: `monitor.infra.backoff`), the records
staying queued; a 429 or 503 with `Retry-After` or `retry-after-ms` (a proxy in front
of Alertmanager throttling) waits that long when it is longer, up to 5 minutes
(`monitor.infra.retry_after`). A 400 (Alertmanager refuses the alerts themselves:
trying again would not help) drops the batch, logged with Alertmanager's reason and
counted. Posts go through `monitor.infra.http_post` (one pooled session, the answer
read up to 4 KiB, redirects not followed).

When its queue is empty the sender sends every alert still firing again (`firing`:
the daemon's, as event payloads) every `resend_interval` (1 minute), each with endsAt pushed
forward (Prometheus' resend_delay), so Alertmanager keeps them firing while riskmon
lives; and at once after an outage, since an Alertmanager that restarted has forgotten
them (it keeps silences and notification logs on disk, not alerts).

The bearer token file is read for each request through `Secret` (re-read when it
changes, and at once after a 401 or 403); the token never reaches a log or a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import structlog

from monitor.alertmanager.payload import LOOKAHEAD_RESENDS, PayloadError, am_alert
from monitor.config.model import AlertmanagerConfig
from monitor.config.secret import SecretUnavailable
from monitor.infra.backoff import Backoff
from monitor.infra.http_post import JsonPoster, PostFailed
from monitor.infra.mqtt_link import ssl_context
from monitor.infra.retry_after import THROTTLING_STATUSES, retry_after_seconds, retry_wait
from monitor.store import Store, StoreError

__all__ = ["BACKOFF", "BATCH", "AlertmanagerSender"]

log = structlog.get_logger("riskmon.alertmanager")

BATCH: Final = 64  # records per POST
BACKOFF: Final = Backoff(initial=1.0, max=30.0)
_ANSWER_LIMIT: Final = 4096  # bytes of an answer read
_REASON_LIMIT: Final = 300  # characters of Alertmanager's error text kept for the log


class _Refused(Exception):
    """Alertmanager refused the alerts themselves (400): sending them again won't help."""


class _NotDelivered(Exception):
    """The post failed (already logged and counted); `retry_after` is the server's hint."""

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__()
        self.retry_after = retry_after


class AlertmanagerSender:
    """Delivers the `delivery_queue` of destination `config.url` (module docstring).

    `api_url` is riskmon's own HTTP API (for generatorURL); `firing()` gives the event
    payloads of the alerts still firing (the resends). Counters: `sent`, `failed`
    (alerts in posts that failed), `dropped` (alerts Alertmanager refused with 400).
    """

    def __init__(
        self,
        config: AlertmanagerConfig,
        store: Store,
        *,
        api_url: str,
        firing: Callable[[], Sequence[Mapping[str, Any]]],
    ) -> None:
        self.config = config
        self.name = config.url
        self._url = f"{config.url}/api/v2/alerts"
        self._store = store
        self._api_url = api_url
        self._firing = firing
        self._resend_interval = config.resend_interval
        self._wake = asyncio.Event()
        self._next_resend = 0.0  # time.monotonic(): at once when the queue is first empty
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._failing = False  # the last post failed (logged once per outage)

    @property
    def pending(self) -> int:
        return self._store.queue_depth(self.name)

    def notify(self) -> None:
        """New records were queued."""
        self._wake.set()

    async def run(self) -> None:
        context: ssl.SSLContext | None = None
        if self.config.url.startswith("https:") or self.config.tls is not None:
            context = await asyncio.to_thread(ssl_context, self.config.tls)
        async with JsonPoster(tls=context) as poster:
            failures = 0  # in a row
            while True:
                self._wake.clear()
                hint: float | None = None
                try:
                    more = await self._step(poster)
                except _NotDelivered as exc:
                    hint = exc.retry_after
                except StoreError as exc:
                    log.error("alertmanager: cannot read its queue", error=str(exc))
                else:
                    failures = 0
                    if not more:  # nothing to do until notified or the next resend
                        delay = max(0.0, self._next_resend - time.monotonic())
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), delay)
                    continue
                await asyncio.sleep(retry_wait(BACKOFF, failures, hint))
                failures += 1

    async def _step(self, poster: JsonPoster) -> bool:
        """One POST: queued records, else (when due) the alerts still firing. True when
        queued records went (more may wait), False when there is nothing to send until
        notified or the next resend; _NotDelivered when the POST failed."""
        records = self._store.queued(self.name, BATCH)
        now = time.time()
        if records:
            alerts = self._alerts([payload for _id, payload in records], now)
            ids = [row_id for row_id, _payload in records]
            try:
                await self._post(poster, alerts)
            except _Refused:
                self.dropped += len(alerts)
            self._store.delivered(self.name, ids)
            return True
        if time.monotonic() < self._next_resend:
            return False
        with contextlib.suppress(_Refused):
            await self._post(poster, self._alerts(self._firing(), now))
        self._next_resend = time.monotonic() + self._resend_interval
        return False

    def _alerts(
        self, payloads: Sequence[bytes | Mapping[str, Any]], now: float
    ) -> list[dict[str, Any]]:
        alerts = []
        for payload in payloads:
            try:
                alerts.append(
                    am_alert(
                        payload,
                        now=now,
                        lookahead=LOOKAHEAD_RESENDS * self._resend_interval,
                        api_url=self._api_url,
                    )
                )
            except PayloadError as exc:
                log.error("alertmanager: a queued record is skipped", error=str(exc))
                self.dropped += 1
        return alerts

    async def _post(self, poster: JsonPoster, alerts: list[dict[str, Any]]) -> None:
        """Alertmanager took `alerts` (2xx); _Refused on 400, _NotDelivered otherwise."""
        if not alerts:
            return
        headers = {}
        token = self.config.bearer_token
        try:
            if token is not None:
                headers["Authorization"] = f"Bearer {token.get()}"
        except SecretUnavailable as exc:  # names the file, never the value
            raise self._failure(alerts, str(exc)) from None
        body = json.dumps(alerts, separators=(",", ":")).encode()
        try:
            answer = await poster.post(
                self._url,
                body,
                within=self.config.timeout,
                max_bytes=_ANSWER_LIMIT,
                headers=headers,
            )
        except PostFailed as exc:
            raise self._failure(alerts, str(exc)) from None
        status = answer.status
        if 200 <= status < 300:
            self.sent += len(alerts)
            if self._failing:
                self._failing = False
                self._next_resend = 0.0  # it may have restarted: all firing, now
                log.info("alertmanager: delivering again", alertmanager=self.name)
            return
        text = answer.body.decode("utf-8", errors="replace")[:_REASON_LIMIT].strip()
        if status in (401, 403) and token is not None:
            token.recheck()
        if status == 400:
            log.error(
                "alertmanager refused the alerts; dropped",
                alertmanager=self.name,
                alerts=len(alerts),
                reason=text,
            )
            raise _Refused
        hint = retry_after_seconds(answer.headers) if status in THROTTLING_STATUSES else None
        raise self._failure(alerts, f"HTTP {status}: {text}", hint)

    def _failure(
        self, alerts: list[dict[str, Any]], reason: str, retry_after: float | None = None
    ) -> _NotDelivered:
        if not self._failing:
            hint = {} if retry_after is None else {"retry_after": round(retry_after, 3)}
            log.warning(
                "alertmanager: cannot deliver, retrying",
                alertmanager=self.name,
                error=reason,
                **hint,
            )
        self._failing = True
        self.failed += len(alerts)
        return _NotDelivered(retry_after)
