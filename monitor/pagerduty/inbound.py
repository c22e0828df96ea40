"""Reading an event payload (`riskmon.alert.v1`) off MQTT, for the bridge.

Only what the bridge relies on is checked, by hand (the JSON Schema in
`monitor/publish/alert-event.schema.json` is the full contract, `monitor/infra/event_wire.py`
the part both sides share; jsonschema is not a
runtime dependency): the schema name, `event_id`, `alertname`, `severity`, `labels` and
a `pagerduty` body PagerDuty can take (an action, a dedup key, for a trigger a summary,
a source and a severity), under PagerDuty's 512 KB. Anything else is a `BadEvent`
whose message says what is wrong without repeating the payload.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from monitor.infra.event_wire import PAGERDUTY_BODY_LIMIT, SCHEMA, SUMMARY_LIMIT, encode
from monitor.pagerduty.config import SEVERITIES

__all__ = ["BadEvent", "InboundEvent", "parse_event"]

_ACTIONS: Final = ("trigger", "acknowledge", "resolve")
_ID_LIMIT: Final = 256
_DEDUP_KEY_LIMIT: Final = 255
_BODY_BUDGET: Final = PAGERDUTY_BODY_LIMIT - 256  # room for `routing_key`


class BadEvent(ValueError):
    """A payload the bridge cannot forward; the message says why."""


@dataclass(frozen=True, slots=True)
class InboundEvent:
    event_id: str
    status: str
    alertname: str
    severity: str
    labels: Mapping[str, str]
    body: Mapping[str, Any]  # the ready PagerDuty Events API v2 body, without routing_key

    def request(self, routing_key: str) -> bytes:
        """The JSON the Events API receives: the body plus `routing_key`."""
        return encode({**self.body, "routing_key": routing_key})


def parse_event(payload: bytes) -> InboundEvent:
    """The event in an MQTT payload; BadEvent when it is not one the bridge can forward."""
    if not payload:
        raise BadEvent("empty payload")
    try:
        data = json.loads(payload)
    except UnicodeDecodeError:
        raise BadEvent("payload is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadEvent(f"payload is not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise BadEvent(f"payload is JSON {type(data).__name__}, not an object")
    schema = data.get("schema")
    if schema != SCHEMA:
        shown = repr(schema)[:60] if isinstance(schema, str) else "missing or not text"
        raise BadEvent(f"schema is {shown}, expected {SCHEMA!r}")
    event_id = _text(data, "event_id", _ID_LIMIT)
    alertname = _text(data, "alertname", _ID_LIMIT)
    status = _text(data, "status", _ID_LIMIT)
    severity = data.get("severity")
    if severity not in SEVERITIES:
        raise BadEvent(f"severity must be one of {', '.join(SEVERITIES)}")
    labels = data.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise BadEvent("labels must be an object of texts")
    body = data.get("pagerduty")
    if not isinstance(body, dict):
        raise BadEvent("pagerduty is missing or not an object")
    _check_body(body)
    return InboundEvent(event_id, status, alertname, severity, labels, body)


def _text(data: Mapping[str, Any], key: str, limit: int, where: str = "") -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadEvent(f"{where}{key} is missing, empty or not text")
    if len(value) > limit:
        raise BadEvent(f"{where}{key} is longer than {limit} characters")
    return value


def _check_body(body: Mapping[str, Any]) -> None:
    action = body.get("event_action")
    if action not in _ACTIONS:
        raise BadEvent(f"pagerduty.event_action must be one of {', '.join(_ACTIONS)}")
    _text(body, "dedup_key", _DEDUP_KEY_LIMIT, "pagerduty.")
    payload = body.get("payload")
    if action == "trigger" or payload is not None:
        if not isinstance(payload, dict):
            raise BadEvent("pagerduty.payload is missing or not an object")
        _text(payload, "summary", SUMMARY_LIMIT, "pagerduty.payload.")
        _text(payload, "source", PAGERDUTY_BODY_LIMIT, "pagerduty.payload.")
        if payload.get("severity") not in SEVERITIES:
            raise BadEvent(f"pagerduty.payload.severity must be one of {', '.join(SEVERITIES)}")
    if len(encode(body)) > _BODY_BUDGET:
        raise BadEvent(f"pagerduty body is larger than PagerDuty's {PAGERDUTY_BODY_LIMIT} bytes")
