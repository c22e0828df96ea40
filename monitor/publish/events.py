"""MQTT topics and event payloads, exactly as SPEC.md's "MQTT" section fixes them.

Topics (`prefix` is `mqtt.topic_prefix`, used as configured; every other level goes
through `topic_level`):

    {prefix}/events/{severity}/{venue}/{account}/{alertname}   QoS 1, every event
    {prefix}/alerts/{venue}/{account}/{alertname}              QoS 1, retained while firing
    {prefix}/status/{instance}                                 QoS 1, retained
    {prefix}/heartbeat/{instance}                              QoS 0

A level is the text with exactly these characters percent-encoded (as `%XX` of their
UTF-8 bytes): `%`, `/`, `+`, `#` and the control characters MQTT forbids or advises
against (U+0000 to U+001F, U+007F to U+009F). So a level never holds `/`, `+`, `#` or `%`
raw, everything else stays readable (`*`, spaces, non-ASCII letters), and
`urllib.parse.unquote` gives the text back: `firms/ACME/accounts/main` is
`firms%2FACME%2Faccounts%2Fmain`; the account `*` of `VenueDown` stays `*`. To build
the topic of a known account, replace `%` first, then `/`, `+` and `#`.

An event payload (`event_payload`, schema `riskmon.alert.v1`, JSON Schema in
`alert-event.schema.json`) carries the alert's identity, labels, annotations and the
field values that decided, `starts_at`/`ends_at` as RFC 3339 UTC with milliseconds
(`ends_at` is null while firing), `reason` only when the alert resolved for another
reason than its condition (its account left, its rule was removed; the key is absent
otherwise), and `pagerduty`: a PagerDuty Events API v2 body without `routing_key`, so a
bridge only adds its key and POSTs it. The PagerDuty `payload.timestamp` is the moment of
the transition (firing or resolution). The summary is cut to 1024 characters and the
body kept under 512 KB by shortening, then dropping, `custom_details`.

A resolved event's annotations are rendered at resolve time, its `values` are those of
the evaluation that resolved it (none when it resolved for a `reason`), and it adds
`firing_values`, the values it fired with; a firing event's payload is as it always was
(its `values` are the firing values). The resolve body for PagerDuty keeps its
`payload`: the Events API needs only `dedup_key` to resolve, but takes a payload with
it and keeps it in the alert's log, so the incident records how it recovered (the
resolve-time summary, both sets of values in `custom_details`) instead of a bare
"resolved".

The retained alert message is the same JSON as the event while the alert fires; an
empty payload clears it on resolve. While the alert is suppressed (inhibited or
silenced, `monitor.engine.announce`) no event is published, and the retained message
carries `suppressed_by` (see `to_entry`).
"""

from __future__ import annotations

import json
import time
import uuid
from importlib import resources
from typing import Any, Final, Literal

from monitor.engine.builtin import EVENTS_UNDELIVERABLE
from monitor.engine.lifecycle import AlertEvent
from monitor.infra.event_wire import PAGERDUTY_BODY_LIMIT, SCHEMA, SUMMARY_LIMIT, encode
from monitor.store import OutboxEntry

__all__ = [
    "PAGERDUTY_BODY_LIMIT",
    "SCHEMA",
    "SUMMARY_LIMIT",
    "alert_topic",
    "encode",
    "event_payload",
    "event_topic",
    "heartbeat_topic",
    "json_schema",
    "rfc3339",
    "status_payload",
    "status_topic",
    "to_entry",
    "topic_level",
]

_BODY_BUDGET: Final = PAGERDUTY_BODY_LIMIT - 1024
_DETAIL_TEXT_LIMIT: Final = 1024  # characters per value when custom_details must shrink
_PD_SEVERITIES: Final = frozenset({"critical", "error", "warning", "info"})
_ELLIPSIS: Final = "\u2026"
_TOPIC_ESCAPES: Final = {
    code: "".join(f"%{byte:02X}" for byte in chr(code).encode("utf-8"))
    for code in (*b"%/+#", *range(0x20), *range(0x7F, 0xA0))
}


# -- topics ---------------------------------------------------------------------------------


def topic_level(text: str) -> str:
    """`text` as one MQTT topic level: `%`, `/`, `+`, `#` and control characters
    percent-encoded, everything else as it is (see the module docstring)."""
    return text.translate(_TOPIC_ESCAPES)


def event_topic(prefix: str, severity: str, venue: str, account: str, alertname: str) -> str:
    levels = (severity, venue, account, alertname)
    return f"{prefix}/events/" + "/".join(topic_level(level) for level in levels)


def alert_topic(prefix: str, venue: str, account: str, alertname: str) -> str:
    levels = (venue, account, alertname)
    return f"{prefix}/alerts/" + "/".join(topic_level(level) for level in levels)


def status_topic(prefix: str, instance: str) -> str:
    return f"{prefix}/status/{topic_level(instance)}"


def heartbeat_topic(prefix: str, instance: str) -> str:
    return f"{prefix}/heartbeat/{topic_level(instance)}"


# -- payloads -------------------------------------------------------------------------------


def rfc3339(t: float) -> str:
    """Seconds since the epoch as RFC 3339 UTC with milliseconds: `2026-11-21T10:00:00.000Z`."""
    seconds, millis = divmod(round(t * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def event_payload(event: AlertEvent, *, event_id: str, instance: str) -> dict[str, Any]:
    """The JSON object of one event (see the module docstring and the JSON Schema)."""
    starts_at = rfc3339(event.starts_at)
    ends_at = None if event.ends_at is None else rfc3339(event.ends_at)
    labels = dict(event.labels)
    annotations = dict(event.annotations)
    values = dict(event.values)
    payload: dict[str, Any] = {
        "schema": SCHEMA,
        "event_id": event_id,
        "status": event.status,
        "alertname": event.alertname,
        "severity": event.severity,
        "venue": event.venue,
        "venue_kind": event.venue_kind,
        "account": event.account,
        "labels": labels,
        "annotations": annotations,
        "values": values,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "fingerprint": event.fingerprint,
        "instance": instance,
    }
    resolved = event.status == "resolved"
    firing_values = dict(event.firing_values)
    if resolved:
        payload["firing_values"] = firing_values
    if event.reason is not None:
        payload["reason"] = event.reason
    details: dict[str, Any] = {
        "values": values,
        "labels": labels,
        "annotations": annotations,
        "venue": event.venue,
        "venue_kind": event.venue_kind,
        "account": event.account,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "fingerprint": event.fingerprint,
        "event_id": event_id,
        "instance": instance,
    }
    if resolved:
        details["firing_values"] = firing_values
    if event.reason is not None:
        details["reason"] = event.reason
    summary = annotations.get("summary") or f"{event.alertname} on {event.venue}/{event.account}"
    payload["pagerduty"] = _fit(
        {
            "event_action": "trigger" if event.status == "firing" else "resolve",
            "dedup_key": event.fingerprint,
            "payload": {
                "summary": _cut(summary, SUMMARY_LIMIT),
                "source": f"riskmon/{instance}",
                "severity": event.severity if event.severity in _PD_SEVERITIES else "error",
                "timestamp": rfc3339(event.at),
                "component": event.venue,
                "group": event.account,
                "class": event.alertname,
                "custom_details": details,
            },
        }
    )
    return payload


def status_payload(
    status: Literal["online", "offline"],
    *,
    instance: str,
    at: float,
    version: str | None = None,
    started_at: float | None = None,
    dead_letters: int = 0,
) -> dict[str, Any]:
    """The retained `{prefix}/status/{instance}` message. With dead letters (events the
    broker refused, set aside) it says so, and names the alert they raise, so that a
    consumer that can read nothing else still learns that events go undelivered."""
    payload: dict[str, Any] = {"status": status, "instance": instance}
    if version is not None:
        payload["version"] = version
    if started_at is not None:
        payload["started_at"] = rfc3339(started_at)
    if dead_letters:
        payload["dead_letters"] = dead_letters
        payload["alerts"] = [EVENTS_UNDELIVERABLE]
    payload["at"] = rfc3339(at)
    return payload


def to_entry(
    event: AlertEvent,
    *,
    prefix: str,
    instance: str,
    event_id: str | None = None,
    answered_at: float | None = None,
    announce: bool | None = None,
) -> OutboxEntry:
    """The outbox entry of `event`: its event message and the retained alert message
    (the same JSON while firing, empty to clear it when resolved). `event_id` is a new
    UUID4 unless given; `answered_at` is when the venue answer that caused the event
    arrived (`Snapshot.taken_at`), if one did.

    An event that is not announced (`announce`, by default `event.announced`: its alert
    is suppressed, or its firing never reached the pager) is an entry without an event
    message (`event_topic` ""): only the retained message changes. A suppressed alert's
    JSON says what suppresses it: `suppressed_by` with `inhibited_by` (fingerprints of
    the alerts that inhibit it) and `silenced_by` (silence ids)."""
    eid = str(uuid.uuid4()) if event_id is None else event_id
    payload = event_payload(event, event_id=eid, instance=instance)
    if event.inhibited_by or event.silenced_by:
        payload["suppressed_by"] = {
            "inhibited_by": list(event.inhibited_by),
            "silenced_by": list(event.silenced_by),
        }
    body = encode(payload)
    venue, account, alertname = event.venue, event.account, event.alertname
    announced = event.announced if announce is None else announce
    return OutboxEntry(
        event_id=eid,
        alert_key=event.fingerprint,
        event_topic=event_topic(prefix, event.severity, venue, account, alertname)
        if announced
        else "",
        event_payload=body if announced else b"",
        alert_topic=alert_topic(prefix, venue, account, alertname),
        alert_payload=body if event.status == "firing" else b"",
        answered_at=answered_at,
    )


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an event payload."""
    text = resources.files("monitor.publish").joinpath("alert-event.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


# -- keeping within PagerDuty's limits --------------------------------------------------------


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + _ELLIPSIS


def _size(body: dict[str, Any]) -> int:
    return len(encode(body))


def _fit(body: dict[str, Any]) -> dict[str, Any]:
    """`body` under the size budget: long detail texts cut first, then the maps dropped,
    then the remaining free texts cut. A normal event is returned unchanged."""
    if _size(body) <= _BODY_BUDGET:
        return body
    payload = body["payload"]
    details: dict[str, Any] = payload["custom_details"]
    shortened = {
        key: (
            {k: _cut(v, _DETAIL_TEXT_LIMIT) for k, v in value.items()}
            if isinstance(value, dict)
            else _cut(value, _DETAIL_TEXT_LIMIT)
            if isinstance(value, str)
            else value
        )
        for key, value in details.items()
    }
    shortened["truncated"] = True
    payload["custom_details"] = shortened
    if _size(body) <= _BODY_BUDGET:
        return body
    for key in ("annotations", "labels", "firing_values", "values"):
        shortened.pop(key, None)
        if _size(body) <= _BODY_BUDGET:
            return body
    for key in ("source", "component", "group", "class"):
        payload[key] = _cut(payload[key], _DETAIL_TEXT_LIMIT)
    return body
