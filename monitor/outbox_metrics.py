"""The metrics of what keeps events from leaving: refusals, dead letters, failed writes.

| family | type | labels |
| --- | --- | --- |
| `riskmon_outbox_dead_letters` (records the broker refused, set aside) | gauge | |
| `riskmon_events_refused_total` (refused publishes, by MQTT 5 reason) | counter | reason |
| `riskmon_store_write_failures_total` (`OPERATIONS`) | counter | operation |
| `riskmon_outbox_held_in_memory` (events waiting for the disk) | gauge | |
| `riskmon_events_dropped_total` (events lost: the disk refused, memory was full) | counter | |

Appended to `Metrics.render()`'s text by the daemon. Each counter's series exist at 0
from the start, so that `increase()` sees the first failure.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from monitor.metrics import _header, escape_label_value
from monitor.outbox_writer import OutboxWriter
from monitor.store import Store

__all__ = ["OPERATIONS", "OutboxMetrics"]

OPERATIONS: Final = ("append", "save_alerts", "acknowledge", "checkpoint")


class OutboxMetrics:
    """Renders the families above from `store`, `writer` and its own `refused` counts
    (`count_refused`, the publisher's `on_refused`)."""

    def __init__(self, store: Store, writer: OutboxWriter) -> None:
        self._store = store
        self._writer = writer
        self.refused: Counter[str] = Counter()

    def count_refused(self, reason: str) -> None:
        self.refused[reason] += 1

    def render(self) -> bytes:
        writer = self._writer
        lines = [
            _header(
                "riskmon_outbox_dead_letters",
                "gauge",
                "Events the broker refused again and again, set aside in the outbox"
                " (re-queued at start-up and at SIGHUP).",
            ),
            b"riskmon_outbox_dead_letters %d\n" % self._store.dead_letters(),
            _header(
                "riskmon_events_refused_total",
                "counter",
                "Publishes the MQTT broker refused (MQTT 5 PUBACK reason codes).",
            ),
            *(
                b'riskmon_events_refused_total{reason="%s"} %d\n'
                % (escape_label_value(reason).encode(), self.refused[reason])
                for reason in sorted({*self.refused, "not_authorized"})
            ),
            _header(
                "riskmon_store_write_failures_total",
                "counter",
                "Writes to state_dir/riskmon.db that failed (a full disk, most likely).",
            ),
            *(
                b'riskmon_store_write_failures_total{operation="%s"} %d\n'
                % (operation.encode(), writer.failures[operation])
                for operation in OPERATIONS
            ),
            _header(
                "riskmon_outbox_held_in_memory",
                "gauge",
                "Events waiting in memory because the disk refused to write them.",
            ),
            b"riskmon_outbox_held_in_memory %d\n" % writer.held,
            _header(
                "riskmon_events_dropped_total",
                "counter",
                "Events lost: the disk refused them and the memory bound was reached.",
            ),
            b"riskmon_events_dropped_total %d\n" % writer.dropped,
        ]
        return b"".join(lines)
