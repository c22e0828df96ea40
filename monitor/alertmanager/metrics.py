"""The metrics of the Alertmanager destinations, one series per `alertmanagers` URL.

Every family has the label `alertmanager` (the URL):

- `riskmon_alertmanager_alerts_sent_total` (counter): alerts Alertmanager took, resends
  included;
- `riskmon_alertmanager_alerts_failed_total` (counter): alerts in posts that failed
  (kept queued and retried);
- `riskmon_alertmanager_alerts_dropped_total` (counter): alerts it refused with 400;
- `riskmon_alertmanager_pending` (gauge): events queued for it, not yet delivered.

Appended to `Metrics.render()`'s text by the daemon, like `monitor/outbox_metrics.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from monitor.alertmanager.sender import AlertmanagerSender
from monitor.metrics import _header, escape_label_value

__all__ = ["render"]

_FAMILIES: Final[tuple[tuple[str, str, str, Callable[[AlertmanagerSender], int]], ...]] = (
    (
        "riskmon_alertmanager_alerts_sent_total",
        "counter",
        "Alerts an Alertmanager took (POST /api/v2/alerts answered 2xx), resends included.",
        lambda s: s.sent,
    ),
    (
        "riskmon_alertmanager_alerts_failed_total",
        "counter",
        "Alerts in posts to an Alertmanager that failed (kept queued and retried).",
        lambda s: s.failed,
    ),
    (
        "riskmon_alertmanager_alerts_dropped_total",
        "counter",
        "Alerts an Alertmanager refused as invalid (HTTP 400), not sent again.",
        lambda s: s.dropped,
    ),
    (
        "riskmon_alertmanager_pending",
        "gauge",
        "Events queued for an Alertmanager, not yet delivered.",
        lambda s: s.pending,
    ),
)


def render(senders: Sequence[AlertmanagerSender]) -> bytes:
    """The families above for `senders`; nothing when there are none."""
    if not senders:
        return b""
    lines = []
    for name, kind, help_text, value in _FAMILIES:
        lines.append(_header(name, kind, help_text))
        for sender in senders:
            label = escape_label_value(sender.name).encode()
            lines.append(b'%s{alertmanager="%s"} %d\n' % (name.encode(), label, value(sender)))
    return b"".join(lines)
