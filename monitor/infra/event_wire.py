"""The alert event payload's contract between the daemon, which writes it
(`monitor.publish.events`), and the PagerDuty bridge, which reads it
(`monitor.pagerduty.inbound`): the schema's name, PagerDuty's limits the payload keeps
to, and the one JSON encoding both use."""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = ["PAGERDUTY_BODY_LIMIT", "SCHEMA", "SUMMARY_LIMIT", "encode"]

SCHEMA: Final = "riskmon.alert.v1"
#: PagerDuty's limit on `payload.summary`, in characters.
SUMMARY_LIMIT: Final = 1024
#: PagerDuty's limit on a whole event body, in bytes; the body is kept 1 KiB below it so
#: that `routing_key` (and a bridge's own whitespace) still fit.
PAGERDUTY_BODY_LIMIT: Final = 512 * 1024


def encode(payload: Any) -> bytes:
    """A payload as compact UTF-8 JSON (non-ASCII characters kept, not escaped)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
