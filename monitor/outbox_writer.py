"""`OutboxWriter`: the daemon's way into the outbox, which keeps riskmon alerting, and
says that it cannot deliver, while the disk refuses to write.

A failed write (`append`, `save_alerts`, the publisher's `acknowledge`, the background
checkpoint) is caught, counted (`failures[operation]`:
`riskmon_store_write_failures_total{operation}`), logged once when a burst of failures
begins and once when writes work again, and makes `/healthz` fail
(`HealthProblems.fail("outbox", ...)`): SPEC, healthy means riskmon can alert.

Events that could not be written wait in memory, in order, at most `capacity` of them;
beyond that new ones are dropped, counted (`dropped`: `riskmon_events_dropped_total`)
and logged as errors. `retry()` (every tick) writes them, oldest first and before
anything newer, with the latest alert state, as soon as the disk takes them, then tells
the publisher (`notify`). A failed write never touches the alert state in memory (the
AlertBook), so /api/v1/alerts and the metrics stay right meanwhile.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any, Final

import structlog

from monitor.health import HealthProblems
from monitor.store import OutboxEntry, Store, StoreError

__all__ = ["CAPACITY", "COMPONENT", "OutboxWriter"]

log = structlog.get_logger("riskmon.outbox")

CAPACITY: Final = 10_000  # events held in memory while the disk refuses them
COMPONENT: Final = "outbox"  # the name /healthz gives the problem
_RETRY_CHUNK: Final = 1_000  # events written per transaction when the backlog drains
_DROP_LOG_EVERY: Final = 100  # after the first drop of a burst, one error line per this many


class OutboxWriter:
    """Writes to `store` for the daemon (module docstring); `notify` is called after
    held events were written."""

    def __init__(
        self,
        store: Store,
        problems: HealthProblems,
        *,
        notify: Callable[[], None],
        capacity: int = CAPACITY,
    ) -> None:
        self._store = store
        self._problems = problems
        self._notify = notify
        self._capacity = capacity
        self._held: deque[OutboxEntry] = deque()
        self._alerts: list[dict[str, Any]] | None = None  # the alert state not yet written
        self._failing: dict[str, str] = {}  # operation -> its last error
        self.failures: Counter[str] = Counter()  # operation -> failed writes
        self.dropped = 0
        self._dropped_in_burst = 0

    @property
    def held(self) -> int:
        """Events waiting in memory for the disk."""
        return len(self._held)

    def append(
        self, entries: Sequence[OutboxEntry], alerts: list[dict[str, Any]], now: float
    ) -> None:
        """Events and the alert state they lead to, into the outbox, or into memory
        (behind the events already held there) when the disk refuses."""
        if not self._held:
            try:
                self._store.append(entries, alerts=alerts)
            except StoreError as exc:
                self._failed("append", exc, now)
            else:
                self._worked("append")
                return
        self._hold(entries, alerts)

    def save_alerts(self, alerts: list[dict[str, Any]], now: float) -> None:
        if self._held:  # written with the held events, after them
            self._alerts = alerts
            return
        try:
            self._store.save_alerts(alerts)
        except StoreError as exc:
            self._alerts = alerts
            self._failed("save_alerts", exc, now)
        else:
            self._alerts = None
            self._worked("save_alerts")

    def write_journal(self, now: float) -> None:
        """Write the journal records no event took along (reloads, silences); they wait
        in the journal while the disk refuses."""
        try:
            self._store.write_journal()
        except StoreError as exc:
            self._failed("journal", exc, now)
        else:
            self._worked("journal")

    def retry(self, now: float) -> None:
        """Write what waits in memory, oldest first; see whether the background
        checkpoint works."""
        self._checkpoint(now)
        written = 0
        while self._held or self._alerts is not None:
            chunk = [self._held[i] for i in range(min(_RETRY_CHUNK, len(self._held)))]
            last = len(chunk) == len(self._held)
            operation = "append" if chunk else "save_alerts"
            try:
                self._store.append(chunk, alerts=self._alerts if last else None)
            except StoreError as exc:
                self._failed(operation, exc, now)
                break
            for _ in chunk:
                self._held.popleft()
            written += len(chunk)
            if last:
                self._alerts = None
                self._worked("save_alerts")
            self._worked("append")
        if written:
            log.info("held events written to the outbox", events=written, held=len(self._held))
            self._notify()

    def acknowledged(self, error: StoreError | None, now: float) -> None:
        """The publisher's report: deleting published records failed (`error`) or works
        again (None)."""
        if error is None:
            self._worked("acknowledge")
        else:
            self._failed("acknowledge", error, now)

    # -- bookkeeping ------------------------------------------------------------------------

    def _hold(self, entries: Sequence[OutboxEntry], alerts: list[dict[str, Any]]) -> None:
        self._alerts = alerts
        room = self._capacity - len(self._held)
        self._held.extend(entries[: max(room, 0)])
        for entry in entries[max(room, 0) :]:
            self.dropped += 1
            self._dropped_in_burst += 1
            if self._dropped_in_burst % _DROP_LOG_EVERY == 1:
                log.error(
                    "outbox: the disk refuses writes and the events held in memory reached"
                    " their bound; an alert event is DROPPED (riskmon_events_dropped_total)",
                    topic=entry.event_topic,
                    event_id=entry.event_id,
                    held=len(self._held),
                    dropped=self.dropped,
                )

    def _checkpoint(self, now: float) -> None:
        error = self._store.checkpoint_error
        if error is None:
            self._worked("checkpoint")
        elif self._failing.get("checkpoint") != error or not self._problems.failing(COMPONENT):
            self._failed("checkpoint", StoreError(f"{self._store.path}: checkpoint: {error}"), now)

    def _failed(self, operation: str, exc: StoreError, now: float) -> None:
        self.failures[operation] += 1
        self._failing[operation] = str(exc)
        reason = f"writes to the outbox fail ({operation}): {exc}"
        if self._problems.fail(COMPONENT, reason, now):
            log.error(
                "outbox: the disk refuses writes; events wait in memory and riskmon is"
                " unhealthy until it writes again (further failures are counted in"
                " riskmon_store_write_failures_total)",
                operation=operation,
                error=str(exc),
                held=len(self._held),
            )

    def _worked(self, operation: str) -> None:
        if self._failing.pop(operation, None) is None or self._failing:
            return
        if self._problems.recover(COMPONENT):
            log.warning(
                "outbox: writes work again",
                held=len(self._held),
                dropped_meanwhile=self._dropped_in_burst,
            )
            self._dropped_in_burst = 0
