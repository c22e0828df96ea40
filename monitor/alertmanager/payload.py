"""An event (its payload, schema riskmon.alert.v1) as an alert of Alertmanager's API v2.

`POST /api/v2/alerts` takes a list of `{labels, annotations, startsAt, endsAt,
generatorURL}`, as Prometheus sends them:

- labels: the alert's own labels (the rule's static ones, the account's), then
  `alertname`, `venue`, `account` and `severity` over them; empty values are left out
  (Alertmanager reads an empty label as an absent one). No `instance` label: two riskmon
  replicas watching the same accounts send the same alert, which Alertmanager de-duplicates.
- annotations: the event's, as rendered.
- startsAt: when the alert began to fire.
- endsAt: on a resolved event, when it resolved. On a firing one, now plus four resend
  intervals (`lookahead`, as Prometheus does): Alertmanager resolves a firing alert on
  its own once that has passed, so the alerts of a riskmon that died (and stopped
  resending) do not fire forever; while riskmon lives it resends them every
  `resend_interval` (1 minute) and pushes the time forward.
- generatorURL: riskmon's own API listing the account's alerts,
  `{api}/api/v1/alerts?venue=V&account=A`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlencode

from monitor.publish.events import rfc3339

__all__ = ["LOOKAHEAD_RESENDS", "PayloadError", "am_alert"]

LOOKAHEAD_RESENDS: Final = 4  # a firing alert's endsAt: now + this many resend intervals

_CORE_LABELS: Final = ("alertname", "venue", "account", "severity")


class PayloadError(ValueError):
    """A queued record that is not an event payload (it cannot be sent)."""


def am_alert(
    payload: bytes | Mapping[str, Any], *, now: float, lookahead: float, api_url: str
) -> dict[str, Any]:
    """The Alertmanager alert of one event payload, as JSON or parsed (see the module
    docstring): a firing one ends at `now + lookahead` unless sent again; `api_url` is
    riskmon's HTTP API (`http://host:port`)."""
    try:
        event = json.loads(payload) if isinstance(payload, bytes) else payload
        labels = {str(k): str(v) for k, v in (event.get("labels") or {}).items() if str(v) != ""}
        for name in _CORE_LABELS:
            value = str(event[name])
            if value:
                labels[name] = value
        annotations = {str(k): str(v) for k, v in (event.get("annotations") or {}).items()}
        firing = event["status"] == "firing"
        ends_at = rfc3339(now + lookahead) if firing else (event["ends_at"] or rfc3339(now))
        query = urlencode({"venue": event["venue"], "account": event["account"]})
        return {
            "labels": labels,
            "annotations": annotations,
            "startsAt": event["starts_at"],
            "endsAt": ends_at,
            "generatorURL": f"{api_url}/api/v1/alerts?{query}",
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PayloadError(f"not an alert event payload: {type(exc).__name__}: {exc}") from None
