"""`AlertmanagerSender`: delivers riskmon's events to one Alertmanager, as Prometheus does.

Each event is queued for every configured Alertmanager in the same transaction that
writes it to the outbox (`Store.set_destinations`, `delivery_queue`), so an Alertmanager
that is down or slow loses nothing and holds back neither MQTT nor another Alertmanager.
The sender reads its queue oldest first, in batches, posts them to
`{url}/api/v2/alerts` (`monitor.alertmanager.payload`) and deletes them once
Alertmanager answered 2xx. A failure (no connection, timeout, 5xx, 401 ...) is retried
with back-off (1 s doubling to 30 s), the records staying queued; a 400 (Alertmanager
refuses the alerts themselves: trying again would not help) drops the batch, logged
with Alertmanager's reason and counted.

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
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import aiohttp
import structlog

from monitor.alertmanager.payload import LOOKAHEAD_RESENDS, PayloadError, am_alert
from monitor.config.model import AlertmanagerConfig
from monitor.config.secret import SecretUnavailable
from monitor.infra.mqtt_link import ssl_context
from monitor.store import Store, StoreError

__all__ = ["AlertmanagerSender"]

log = structlog.get_logger("riskmon.alertmanager")

BATCH: Final = 64  # records per POST
BACKOFF_START: Final = 1.0
BACKOFF_MAX: Final = 30.0
_REASON_LIMIT: Final = 300  # characters of Alertmanager's error text kept for the log


class _Refused(Exception):
    """Alertmanager refused the alerts themselves (400): sending them again won't help."""


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
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        connector = aiohttp.TCPConnector(ssl=context if context is not None else True)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            backoff = BACKOFF_START
            while True:
                self._wake.clear()
                try:
                    worked = await self._step(session)
                except StoreError as exc:
                    log.error("alertmanager: cannot read its queue", error=str(exc))
                    worked = False
                if worked is not False:
                    backoff = BACKOFF_START
                if worked is None:  # nothing to do until notified or the next resend
                    delay = max(0.0, self._next_resend - time.monotonic())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                    continue
                if worked:
                    continue
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    async def _step(self, session: aiohttp.ClientSession) -> bool | None:
        """One POST: queued records, else (when due) the alerts still firing. True when
        queued records went (more may wait), False when the POST failed, None when
        there is nothing to send until notified or the next resend."""
        records = self._store.queued(self.name, BATCH)
        now = time.time()
        if records:
            alerts = self._alerts([payload for _id, payload in records], now)
            ids = [row_id for row_id, _payload in records]
            try:
                ok = await self._post(session, alerts)
            except _Refused:
                self._store.delivered(self.name, ids)
                self.dropped += len(alerts)
                return True
            if ok:
                self._store.delivered(self.name, ids)
            return ok
        if time.monotonic() < self._next_resend:
            return None
        alerts = self._alerts(self._firing(), now)
        ok = True
        if alerts:
            with contextlib.suppress(_Refused):
                ok = await self._post(session, alerts)
        if not ok:
            return False
        self._next_resend = time.monotonic() + self._resend_interval
        return None

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

    async def _post(self, session: aiohttp.ClientSession, alerts: list[dict[str, Any]]) -> bool:
        if not alerts:
            return True
        headers = {}
        token = self.config.bearer_token
        try:
            if token is not None:
                headers["Authorization"] = f"Bearer {token.get()}"
        except SecretUnavailable as exc:
            return self._failure(alerts, str(exc))
        url = f"{self.config.url}/api/v2/alerts"
        try:
            async with session.post(url, json=alerts, headers=headers) as response:
                if 200 <= response.status < 300:
                    self.sent += len(alerts)
                    if self._failing:
                        self._failing = False
                        self._next_resend = 0.0  # it may have restarted: all firing, now
                        log.info("alertmanager: delivering again", alertmanager=self.name)
                    return True
                text = (await response.text(errors="replace"))[:_REASON_LIMIT].strip()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return self._failure(alerts, f"{type(exc).__name__}: {exc}")
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
        return self._failure(alerts, f"HTTP {status}: {text}")

    def _failure(self, alerts: list[dict[str, Any]], reason: str) -> bool:
        if not self._failing:
            log.warning(
                "alertmanager: cannot deliver, retrying", alertmanager=self.name, error=reason
            )
        self._failing = True
        self.failed += len(alerts)
        return False
