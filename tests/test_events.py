"""Event topics and payloads (monitor/publish/events.py) against SPEC.md and the schema."""

from __future__ import annotations

import copy
import json
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.engine.expr import compile_expression
from monitor.engine.lifecycle import REASON_ACCOUNT_GONE, AlertBook, AlertEvent, Observation
from monitor.engine.lifecycle import fingerprint as alert_fingerprint
from monitor.engine.model import Rule
from monitor.publish.events import (
    PAGERDUTY_BODY_LIMIT,
    SUMMARY_LIMIT,
    alert_topic,
    encode,
    event_payload,
    event_topic,
    heartbeat_topic,
    json_schema,
    rfc3339,
    status_payload,
    status_topic,
    to_entry,
    topic_level,
)
from monitor.yamlsource import Location

T0 = 1795255200.0  # 2026-11-21T10:00:00Z
PMX_ACCOUNT = "firms/ACME/accounts/main"


def make_event(
    status: str = "firing",
    *,
    account: str = "19816",
    annotations: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    reason: str | None = None,
    severity: str = "critical",
    firing_values: dict[str, str] | None = None,
) -> AlertEvent:
    labels = {"desk": "equities"}
    return AlertEvent(
        status="firing" if status == "firing" else "resolved",
        at=T0 + 30 if status == "firing" else T0 + 90.25,
        rule_key="capital/BuyingPowerBelowFloor",
        alertname="BuyingPowerBelowFloor",
        severity=severity,
        venue="cs-prod",
        venue_kind="clearstreet",
        account=account,
        labels=labels,
        annotations={"summary": "19816 buying power 24000.00 below 25000"}
        if annotations is None
        else annotations,
        values={"buying_power": "24000.00"} if values is None else values,
        starts_at=T0,
        ends_at=None if status == "firing" else T0 + 90.25,
        fingerprint=alert_fingerprint(
            "BuyingPowerBelowFloor", "cs-prod", account, {**labels, "severity": severity}
        ),
        reason=reason,
        firing_values={"buying_power": "24000.00"} if firing_values is None else firing_values,
    )


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def assert_valid(validator: jsonschema.Draft202012Validator, payload: dict[str, Any]) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(payload)]
    assert not errors, errors


# -- topics ---------------------------------------------------------------------------------


def test_topic_level_percent_encodes_account_ids() -> None:
    assert topic_level(PMX_ACCOUNT) == "firms%2FACME%2Faccounts%2Fmain"
    assert topic_level("19816") == "19816"
    assert topic_level("a+b#c%d/e") == "a%2Bb%23c%25d%2Fe"
    assert topic_level("%2F") == "%252F"  # an escape in the text is not taken as one
    assert topic_level("*") == "*"  # VenueDown's account: readable
    assert topic_level("Main Account é") == "Main Account é"
    assert topic_level("a\0b\nc\x85") == "a%00b%0Ac%C2%85"  # controls MQTT refuses


@given(st.text())
def test_topic_level_never_holds_mqtt_specials_and_decodes_back(text: str) -> None:
    level = topic_level(text)
    assert not set(level) & {"/", "+", "#", "\0", "\n"}
    hexdigits = set("0123456789ABCDEF")
    escapes = [level[i + 1 : i + 3] for i, c in enumerate(level) if c == "%"]
    assert all(len(e) == 2 and set(e) <= hexdigits for e in escapes)
    assert unquote(level) == text


def test_topics() -> None:
    assert (
        event_topic("riskmon", "critical", "pmx", PMX_ACCOUNT, "ExcessCapitalLow")
        == "riskmon/events/critical/pmx/firms%2FACME%2Faccounts%2Fmain/ExcessCapitalLow"
    )
    assert (
        alert_topic("acme/riskmon", "pmx", PMX_ACCOUNT, "ExcessCapitalLow")
        == "acme/riskmon/alerts/pmx/firms%2FACME%2Faccounts%2Fmain/ExcessCapitalLow"
    )
    assert status_topic("riskmon", "riskmon-a") == "riskmon/status/riskmon-a"
    assert heartbeat_topic("riskmon", "host/1") == "riskmon/heartbeat/host%2F1"


# -- times ----------------------------------------------------------------------------------


def test_rfc3339() -> None:
    assert rfc3339(T0) == "2026-11-21T10:00:00.000Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(T0 + 0.25) == "2026-11-21T10:00:00.250Z"
    assert rfc3339(T0 + 59.9996) == "2026-11-21T10:01:00.000Z"  # rounds, never ".1000"


# -- payloads -------------------------------------------------------------------------------


def test_firing_payload(validator: jsonschema.Draft202012Validator) -> None:
    payload = event_payload(make_event(), event_id="e-1", instance="riskmon-a")
    assert_valid(validator, payload)
    event = make_event()
    assert payload == {
        "schema": "riskmon.alert.v1",
        "event_id": "e-1",
        "status": "firing",
        "alertname": "BuyingPowerBelowFloor",
        "severity": "critical",
        "venue": "cs-prod",
        "venue_kind": "clearstreet",
        "account": "19816",
        "labels": {"desk": "equities"},
        "annotations": {"summary": "19816 buying power 24000.00 below 25000"},
        "values": {"buying_power": "24000.00"},
        "starts_at": "2026-11-21T10:00:00.000Z",
        "ends_at": None,
        "fingerprint": event.fingerprint,
        "instance": "riskmon-a",
        "pagerduty": {
            "event_action": "trigger",
            "dedup_key": event.fingerprint,
            "payload": {
                "summary": "19816 buying power 24000.00 below 25000",
                "source": "riskmon/riskmon-a",
                "severity": "critical",
                "timestamp": "2026-11-21T10:00:30.000Z",
                "component": "cs-prod",
                "group": "19816",
                "class": "BuyingPowerBelowFloor",
                "custom_details": {
                    "values": {"buying_power": "24000.00"},
                    "labels": {"desk": "equities"},
                    "annotations": {"summary": "19816 buying power 24000.00 below 25000"},
                    "venue": "cs-prod",
                    "venue_kind": "clearstreet",
                    "account": "19816",
                    "starts_at": "2026-11-21T10:00:00.000Z",
                    "ends_at": None,
                    "fingerprint": event.fingerprint,
                    "event_id": "e-1",
                    "instance": "riskmon-a",
                },
            },
        },
    }
    assert "reason" not in payload  # only when set


def test_resolved_payload(validator: jsonschema.Draft202012Validator) -> None:
    recovered = make_event(
        "resolved",
        annotations={"summary": "19816 buying power 44000.00 back above 25000"},
        values={"buying_power": "44000.00"},
        firing_values={"buying_power": "24000.00"},
    )
    payload = event_payload(recovered, event_id="e-2", instance="riskmon-a")
    assert_valid(validator, payload)
    assert payload["status"] == "resolved"
    assert payload["ends_at"] == "2026-11-21T10:01:30.250Z"
    assert payload["values"] == {"buying_power": "44000.00"}
    assert payload["firing_values"] == {"buying_power": "24000.00"}
    body = payload["pagerduty"]
    assert body["event_action"] == "resolve"
    assert body["payload"]["timestamp"] == "2026-11-21T10:01:30.250Z"
    assert body["dedup_key"] == payload["fingerprint"]
    # the resolve keeps a payload, so that the incident's log shows the recovery
    assert body["payload"]["summary"] == "19816 buying power 44000.00 back above 25000"
    details = body["payload"]["custom_details"]
    assert details["values"] == {"buying_power": "44000.00"}
    assert details["firing_values"] == {"buying_power": "24000.00"}


def test_firing_values_only_in_resolved_events(validator: jsonschema.Draft202012Validator) -> None:
    firing = event_payload(make_event(), event_id="e", instance="i")
    assert "firing_values" not in firing  # the firing payload is as it always was
    assert "firing_values" not in firing["pagerduty"]["payload"]["custom_details"]
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**firing, "firing_values": {}})
    resolved = event_payload(make_event("resolved"), event_id="e", instance="i")
    del resolved["firing_values"]
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(resolved)


def test_reason_is_carried_when_set(validator: jsonschema.Draft202012Validator) -> None:
    event = make_event("resolved", reason=REASON_ACCOUNT_GONE)
    payload = event_payload(event, event_id="e", instance="i")
    assert_valid(validator, payload)
    assert payload["reason"] == REASON_ACCOUNT_GONE
    assert payload["pagerduty"]["payload"]["custom_details"]["reason"] == REASON_ACCOUNT_GONE


def test_summary_fallback_and_cut(validator: jsonschema.Draft202012Validator) -> None:
    payload = event_payload(make_event(annotations={}), event_id="e", instance="i")
    assert payload["pagerduty"]["payload"]["summary"] == "BuyingPowerBelowFloor on cs-prod/19816"
    long = make_event(annotations={"summary": "x" * 5000})
    payload = event_payload(long, event_id="e", instance="i")
    assert_valid(validator, payload)
    summary = payload["pagerduty"]["payload"]["summary"]
    assert len(summary) == SUMMARY_LIMIT
    assert summary.endswith("\u2026")
    assert payload["annotations"]["summary"] == "x" * 5000  # the event itself is whole


def test_pagerduty_body_stays_under_512_kb(validator: jsonschema.Draft202012Validator) -> None:
    values = {f"securities.S{i}.market_value": "9" * 2000 for i in range(400)}  # ~800 KB
    payload = event_payload(make_event(values=values), event_id="e", instance="i")
    assert_valid(validator, payload)
    body = payload["pagerduty"]
    assert len(encode(body)) < PAGERDUTY_BODY_LIMIT
    details = body["payload"]["custom_details"]
    assert details["truncated"] is True
    assert details["account"] == "19816"  # the small facts survive
    assert payload["values"] == values  # the event keeps every value
    # a normal event is not touched
    normal = event_payload(make_event(), event_id="e", instance="i")["pagerduty"]
    assert "truncated" not in normal["payload"]["custom_details"]


def test_unknown_severity_maps_to_error_for_pagerduty() -> None:
    payload = event_payload(make_event(severity="page-me"), event_id="e", instance="i")
    assert payload["pagerduty"]["payload"]["severity"] == "error"


def test_schema_is_strict(validator: jsonschema.Draft202012Validator) -> None:
    good = event_payload(make_event(), event_id="e", instance="i")
    bad_cases: list[dict[str, Any]] = []
    for mutate in (
        lambda p: p.update(extra=1),
        lambda p: p.pop("fingerprint"),
        lambda p: p.update(status="pending"),
        lambda p: p.update(ends_at="2026-11-21T10:00:00Z"),  # firing has no end, no ms
        lambda p: p.update(starts_at="2026-11-21 10:00:00"),
        lambda p: p["values"].update(buying_power=24000.0),  # numbers are text
        lambda p: p["pagerduty"].update(routing_key="R0UT1NGKEY"),
        lambda p: p["pagerduty"].update(event_action="resolve"),
        lambda p: p["pagerduty"]["payload"].update(summary="s" * 1025),
        lambda p: p.update(severity="fatal"),
    ):
        case = copy.deepcopy(good)
        mutate(case)
        bad_cases.append(case)
    for case in bad_cases:
        assert not validator.is_valid(case), case


def test_status_payload() -> None:
    online = status_payload("online", instance="a", at=T0 + 5, version="1.2.3", started_at=T0)
    assert online == {
        "status": "online",
        "instance": "a",
        "version": "1.2.3",
        "started_at": "2026-11-21T10:00:00.000Z",
        "at": "2026-11-21T10:00:05.000Z",
    }
    assert status_payload("offline", instance="a", at=T0) == {
        "status": "offline",
        "instance": "a",
        "at": "2026-11-21T10:00:00.000Z",
    }


# -- outbox entries ---------------------------------------------------------------------------


def test_to_entry_firing_and_resolved(validator: jsonschema.Draft202012Validator) -> None:
    firing = to_entry(make_event(account=PMX_ACCOUNT), prefix="riskmon", instance="riskmon-a")
    assert uuid.UUID(firing.event_id).version == 4
    assert firing.alert_key == make_event(account=PMX_ACCOUNT).fingerprint
    assert firing.event_topic == (
        "riskmon/events/critical/cs-prod/firms%2FACME%2Faccounts%2Fmain/BuyingPowerBelowFloor"
    )
    assert firing.alert_topic == (
        "riskmon/alerts/cs-prod/firms%2FACME%2Faccounts%2Fmain/BuyingPowerBelowFloor"
    )
    body = json.loads(firing.event_payload)
    assert_valid(validator, body)
    assert body["event_id"] == firing.event_id
    assert body["account"] == PMX_ACCOUNT
    assert firing.alert_payload == firing.event_payload  # the retained alert: same JSON

    resolved = to_entry(make_event("resolved"), prefix="riskmon", instance="a", event_id="given")
    assert resolved.event_id == "given"
    assert json.loads(resolved.event_payload)["event_id"] == "given"
    assert resolved.alert_payload == b""  # clears the retained alert
    assert to_entry(make_event(), prefix="p", instance="a").event_id != firing.event_id


def test_payload_is_utf8_json_without_escapes() -> None:
    event = make_event(annotations={"summary": "Überschuss < 0 — €"})
    entry = to_entry(event, prefix="riskmon", instance="a")
    assert "Überschuss < 0 — €".encode() in entry.event_payload


def test_a_lifecycle_event_end_to_end(validator: jsonschema.Draft202012Validator) -> None:
    """An event as the lifecycle makes it: Decimal values become exact text."""
    rule = Rule(
        alert="ExcessCapitalLow",
        expr=compile_expression("excess_capital < 1000"),
        group="pmx",
        file="rules/pmx.yaml",
        location=Location("rules/pmx.yaml", 3, 9),
        severity="warning",
    )
    book = AlertBook()
    event = book.observe(
        rule,
        venue="pmx",
        venue_kind="polymarket",
        account=PMX_ACCOUNT,
        labels={},
        obs=Observation(True, values={"excess_capital": Decimal("999.990")}),
        now=T0,
    )
    assert event is not None
    entry = to_entry(event, prefix="riskmon", instance="a")
    body = json.loads(entry.event_payload)
    assert_valid(validator, body)
    assert body["values"] == {"excess_capital": "999.990"}
    assert body["pagerduty"]["payload"]["summary"] == (
        "ExcessCapitalLow on pmx/firms/ACME/accounts/main"
    )
    assert entry.event_topic == (
        "riskmon/events/warning/pmx/firms%2FACME%2Faccounts%2Fmain/ExcessCapitalLow"
    )
