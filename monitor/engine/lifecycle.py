"""The alert lifecycle: rule results in, alert states and events out.

One `Alert` per (rule, venue, account) that is pending or firing; `step` moves it on by
one evaluation, `AlertBook` holds the alerts of a process and is what the daemon calls.
Pure: no I/O, no clock (`now`, in seconds since the epoch, is always passed in), no
randomness; the same inputs give the same states and events, in `riskmon test` and
`riskmon replay` as in the daemon. States and timestamps are explicit, as in Prometheus'
`rules/alerting.go`:

- `active_at`: when the condition began to hold (the alert's `starts_at`);
- `fired_at`: when it went from pending to firing;
- `keep_firing_since`: when the clear condition began to hold while firing;
- `resolved_at`: when it resolved.

Transitions, per evaluation (`step`)

    INACTIVE --cond--> PENDING --cond held `for`--> FIRING --cleared held
    `keep_firing_for`--> resolved (INACTIVE). With `for: 0` an inactive alert fires in
    the step that sees the condition (`active_at == fired_at`); with
    `keep_firing_for: 0` a firing alert resolves in the first cleared step.

- A pending alert whose condition turns false goes back to INACTIVE silently.
- A firing alert is *cleared* when the rule has a `clear` expression and it is true, or
  when the rule has none and the condition is false. With a `clear` expression only the
  clear result counts while firing: a false condition alone keeps the alert firing
  (the hysteresis band), and so does a true condition with a false clear. Any step that
  is not cleared resets `keep_firing_since`.
- *Missing*: a result that is not `True` or `False` (MISSING, an `EvalError`, any other
  value) is missing. The result that decides is the condition, except for a firing alert
  of a rule with a `clear` expression, where it is the clear result. A missing result
  is handled by the rule's `on_missing`:

  * `keep`: nothing changes: no progress toward firing or resolving, and no timer is
    reset (a pending alert keeps its `active_at`, a firing one its
    `keep_firing_since`);
  * `resolve`: as if the condition were false and the clear true;
  * `fire`: as if the condition were true and the clear false.

- Events are emitted when an alert fires and when it resolves, never for pending.
  `Observation.render` (the annotation templates, which are costly) is called exactly
  once when an alert becomes pending, when it fires (so pending alerts shown by the
  API carry annotations) and when it resolves, and never on a step that changes no
  phase. Unlike Prometheus, whose resolved alert repeats the text it fired with
  ("buying power 20000 below floor 30000" next to a value of 44000), a resolved event
  renders its annotations with the values that resolved it, telling the templates so
  (`resolved`, and the `firing_values`, in `monitor.engine.templates`); `values` are
  the values at that evaluation and `firing_values` the ones it fired with (kept
  across a restart). An alert resolved without an evaluation (its account or rule is
  gone: `REASON_*`) has no current values: its event says so in its summary and
  description and carries empty `values`. Field values are kept at every step, by
  reference, and turned into exact strings only when read (`Alert.values`, events,
  `to_dict`).

Suppression (inhibit rules, silences) is not decided here: `monitor.engine.announce`
marks each event `announced` or not, keeps `Alert.announced` (whether the firing reached
the pager) and what suppresses a firing alert (`inhibited_by`, `silenced_by`), and a
resolved event made here is announced exactly when its firing was.

Restarts: `AlertBook.to_json` / `AlertBook.from_json` carry the pending and firing
alerts across a restart. A restored firing alert whose condition still holds is not
announced again; one that cleared while the daemon was down resolves at its first
evaluation, with `keep_firing_for` measured from that evaluation (a `keep_firing_since`
from before the restart is dropped: nobody watched in between). A restored pending
alert keeps its `active_at`.

Identity: an alert belongs to (rule key, venue, account). Its labels, severity and
`fingerprint` are fixed when it becomes pending; a reload that changes a rule's
expression keeps the state, and a changed severity or label applies from the alert's
next activation, so that a firing and its resolved event always share a fingerprint.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from monitor.engine.expr import MISSING
from monitor.engine.model import Rule

__all__ = [
    "REASON_ACCOUNT_GONE",
    "REASON_RULE_REMOVED",
    "Alert",
    "AlertBook",
    "AlertEvent",
    "AlertPhase",
    "AlertRender",
    "EventStatus",
    "Observation",
    "fingerprint",
    "firing_event",
    "format_value",
    "step",
]

EventStatus = Literal["firing", "resolved"]

#: `AlertEvent.reason` of an alert resolved because its account is no longer monitored.
REASON_ACCOUNT_GONE: Final = "account no longer monitored"
#: `AlertEvent.reason` of an alert resolved because a reload removed its rule.
REASON_RULE_REMOVED: Final = "rule removed"


class AlertPhase(enum.Enum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


_INACTIVE: Final = AlertPhase.INACTIVE
_PENDING: Final = AlertPhase.PENDING
_FIRING: Final = AlertPhase.FIRING


def fingerprint(alertname: str, venue: str, account: str, labels: Mapping[str, str]) -> str:
    """An alert's dedup key: 32 hex characters, the same in every process and release.

    The first 128 bits of the SHA-256 of the UTF-8 JSON text of
    `["riskmon.alert.v1", alertname, venue, account, {labels, keys sorted}]`, written
    compactly (`separators=(",", ":")`) and without ASCII escaping. `labels` are the
    alert's static labels with `severity` among them (the caller adds it), so the same
    rule at another severity is another alert. Neither the rule's expression nor its
    group, file or position count: two replicas of a shard, a restart and a reload give
    the same fingerprint.
    """
    text = json.dumps(
        ["riskmon.alert.v1", alertname, venue, account, dict(labels)],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def format_value(value: Any) -> str:
    """A field value as the exact text a payload carries.

    Decimals and ints as `str` (`Decimal("24000.00")` -> `"24000.00"`), floats as their
    shortest round-trip `repr`, booleans as `true`/`false`, `None` as `null`, strings
    unchanged, anything else as `str`.
    """
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _texts(values: Mapping[str, Any]) -> dict[str, str]:
    """Field values as exact strings; MISSING fields are left out."""
    return {
        name: value if type(value) is str else format_value(value)
        for name, value in values.items()
        if value is not MISSING
    }


#: Renders a rule's annotations for the lifecycle: `resolved` is true when the alert is
#: resolving, `firing_values` the values it fired with (empty while pending).
AlertRender = Callable[[bool, Mapping[str, str]], dict[str, str]]


def _no_annotations(resolved: bool, firing_values: Mapping[str, str]) -> dict[str, str]:
    return {}


@dataclass(frozen=True, slots=True)
class Observation:
    """One evaluation of a rule for one account, as the lifecycle needs it.

    `condition` and `clear` are expression results: `True`, `False`, or anything else
    (MISSING, an EvalError, a non-boolean value), which counts as missing. `clear` is
    None when the rule has no clear expression; an evaluator may also leave it None
    while the alert is not firing, since it is read only then. `values` are the field
    values worth showing (kept by reference: do not mutate it afterwards); `render`
    renders the annotations (`AlertRender`) and is called only when the alert changes
    phase.
    """

    condition: Any
    clear: Any = None
    values: Mapping[str, Any] = field(default_factory=dict)
    render: AlertRender = _no_annotations


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An alert fired or resolved: everything a payload needs, copied at `at`."""

    status: EventStatus
    at: float  # when the transition happened
    rule_key: str
    alertname: str
    severity: str
    venue: str
    venue_kind: str
    account: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]  # rendered at `at`, with `values`
    values: Mapping[str, str]  # at `at`; empty when the alert resolved for a `reason`
    starts_at: float  # the alert's active_at
    ends_at: float | None  # None when firing; the resolution time when resolved
    fingerprint: str
    #: Why an alert resolved other than by its condition (`REASON_*`); None otherwise.
    reason: str | None = None
    #: The values the alert fired with (equal to `values` in a firing event).
    firing_values: Mapping[str, str] = field(default_factory=dict)
    #: Whether the event reaches the pager: False for a firing event of a suppressed
    #: alert, and for the resolved event of an alert whose firing was never announced
    #: (`monitor.engine.announce`).
    announced: bool = True
    #: What suppresses the alert (`monitor.engine.suppress`): the fingerprints of the
    #: alerts that inhibit it, the ids of the silences that silence it.
    inhibited_by: tuple[str, ...] = ()
    silenced_by: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (for an outbox); `AlertEvent.from_dict` reads it back."""
        return {
            "status": self.status,
            "at": self.at,
            "rule_key": self.rule_key,
            "alertname": self.alertname,
            "severity": self.severity,
            "venue": self.venue,
            "venue_kind": self.venue_kind,
            "account": self.account,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "values": dict(self.values),
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "fingerprint": self.fingerprint,
            "reason": self.reason,
            "firing_values": dict(self.firing_values),
            "announced": self.announced,
            "inhibited_by": list(self.inhibited_by),
            "silenced_by": list(self.silenced_by),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AlertEvent:
        """Read `to_dict`'s output; ValueError naming the field when it is malformed."""
        what = "alert event"
        status = _str(d, "status", what)
        if status not in ("firing", "resolved"):
            raise ValueError(f"{what}: status must be 'firing' or 'resolved', not {status!r}")
        starts_at = _opt_time(d, "starts_at", what)
        if starts_at is None:
            raise ValueError(f"{what}: starts_at must be a number")
        reason = d.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ValueError(f"{what}: reason must be a string or null")
        return cls(
            status="firing" if status == "firing" else "resolved",
            at=_time(d, "at", what),
            rule_key=_str(d, "rule_key", what),
            alertname=_str(d, "alertname", what),
            severity=_str(d, "severity", what),
            venue=_str(d, "venue", what),
            venue_kind=_str(d, "venue_kind", what),
            account=_str(d, "account", what),
            labels=_strmap(d, "labels", what),
            annotations=_strmap(d, "annotations", what),
            values=_strmap(d, "values", what),
            starts_at=starts_at,
            ends_at=_opt_time(d, "ends_at", what),
            fingerprint=_str(d, "fingerprint", what),
            reason=reason,
            firing_values=_strmap(d, "firing_values", what),
            announced=d.get("announced", True) is not False,
            inhibited_by=_strs(d, "inhibited_by", what),
            silenced_by=_strs(d, "silenced_by", what),
        )


@dataclass(slots=True)
class Alert:
    """The mutable state of one (rule, venue, account); see the module docstring."""

    rule_key: str
    alertname: str
    severity: str
    venue: str
    venue_kind: str
    account: str
    labels: dict[str, str]  # rendered static labels, without severity
    fingerprint: str
    phase: AlertPhase = AlertPhase.INACTIVE
    active_at: float | None = None  # when the condition began to hold: starts_at
    fired_at: float | None = None
    resolved_at: float | None = None
    keep_firing_since: float | None = None  # when the clear began to hold while firing
    last_evaluated_at: float | None = None
    #: The field values of the last evaluation as observed (Decimals...), by reference;
    #: `values` gives them as strings.
    raw_values: Mapping[str, Any] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)  # rendered at the last transition
    #: The field values of the evaluation that fired it, as strings; empty while pending.
    firing_values: dict[str, str] = field(default_factory=dict)
    #: Whether its firing reached the pager (`monitor.engine.announce` decides).
    announced: bool = False
    #: What suppresses it now (`monitor.engine.suppress`); kept by the announcer.
    inhibited_by: tuple[str, ...] = ()
    silenced_by: tuple[str, ...] = ()

    @property
    def suppressed(self) -> bool:
        return bool(self.inhibited_by or self.silenced_by)

    @property
    def values(self) -> dict[str, str]:
        """The field values of the last evaluation, as exact strings (`format_value`)."""
        return _texts(self.raw_values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict, for persistence; `Alert.from_dict` reads it back."""
        return {
            "rule_key": self.rule_key,
            "alertname": self.alertname,
            "severity": self.severity,
            "venue": self.venue,
            "venue_kind": self.venue_kind,
            "account": self.account,
            "labels": dict(self.labels),
            "fingerprint": self.fingerprint,
            "phase": self.phase.value,
            "active_at": self.active_at,
            "fired_at": self.fired_at,
            "resolved_at": self.resolved_at,
            "keep_firing_since": self.keep_firing_since,
            "last_evaluated_at": self.last_evaluated_at,
            "values": self.values,
            "annotations": dict(self.annotations),
            "firing_values": dict(self.firing_values),
            "announced": self.announced,
            "inhibited_by": list(self.inhibited_by),
            "silenced_by": list(self.silenced_by),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Alert:
        """Read `to_dict`'s output as it was; ValueError naming the field if malformed.

        State saved before `firing_values` existed has none: a firing alert's last
        `values` stand in for them, as the values it was still firing with."""
        what = "alert state"
        phase = _str(d, "phase", what)
        try:
            alert_phase = AlertPhase(phase)
        except ValueError:
            raise ValueError(
                f"{what}: phase must be inactive, pending or firing, not {phase!r}"
            ) from None
        alert = cls(
            rule_key=_str(d, "rule_key", what),
            alertname=_str(d, "alertname", what),
            severity=_str(d, "severity", what),
            venue=_str(d, "venue", what),
            venue_kind=_str(d, "venue_kind", what),
            account=_str(d, "account", what),
            labels=_strmap(d, "labels", what),
            fingerprint=_str(d, "fingerprint", what),
            phase=alert_phase,
            active_at=_opt_time(d, "active_at", what),
            fired_at=_opt_time(d, "fired_at", what),
            resolved_at=_opt_time(d, "resolved_at", what),
            keep_firing_since=_opt_time(d, "keep_firing_since", what),
            last_evaluated_at=_opt_time(d, "last_evaluated_at", what),
            raw_values=_strmap(d, "values", what),
            annotations=_strmap(d, "annotations", what),
            # state saved before suppression existed: its firing alerts were announced
            announced=d.get("announced", True) is not False,
            inhibited_by=_strs(d, "inhibited_by", what),
            silenced_by=_strs(d, "silenced_by", what),
        )
        if "firing_values" in d:
            alert.firing_values = _strmap(d, "firing_values", what)
        elif alert_phase is _FIRING:
            alert.firing_values = dict(alert.raw_values)
        if alert_phase is not _INACTIVE and alert.active_at is None:
            raise ValueError(f"{what}: a {phase} alert needs active_at")
        if alert_phase is _FIRING and alert.fired_at is None:
            raise ValueError(f"{what}: a firing alert needs fired_at")
        return alert


def _event(alert: Alert, status: EventStatus, now: float, reason: str | None = None) -> AlertEvent:
    values = _texts(alert.raw_values) if reason is None else {}
    return AlertEvent(
        status=status,
        at=now,
        rule_key=alert.rule_key,
        alertname=alert.alertname,
        severity=alert.severity,
        venue=alert.venue,
        venue_kind=alert.venue_kind,
        account=alert.account,
        labels=dict(alert.labels),
        annotations=dict(alert.annotations),
        values=values,
        starts_at=now if alert.active_at is None else alert.active_at,
        ends_at=None if status == "firing" else now,
        fingerprint=alert.fingerprint,
        reason=reason,
        firing_values=dict(alert.firing_values),
        # a resolve reaches the pager exactly when its firing did
        announced=status == "firing" or alert.announced,
        inhibited_by=alert.inhibited_by,
        silenced_by=alert.silenced_by,
    )


def firing_event(alert: Alert, now: float) -> AlertEvent:
    """A firing event of `alert` as it stands, made at `now` (annotations as rendered
    when it fired): for an alert announced late, when its suppression ended, and for a
    destination that is sent the alerts still firing again (Alertmanager)."""
    return _event(alert, "firing", now)


def _resolve(alert: Alert, now: float, reason: str | None = None) -> AlertEvent:
    """Firing -> INACTIVE; the resolved event (annotations as they are on `alert`)."""
    alert.phase = _INACTIVE
    alert.resolved_at = now
    alert.keep_firing_since = None
    return _event(alert, "resolved", now, reason)


def _unevaluated(alert: Alert, reason: str) -> dict[str, str]:
    """The annotations of an alert resolved for `reason`, without an evaluation: the
    text it fired with would claim the condition still holds, and one rendered from
    its last values that it cleared; neither is known, so it says that."""
    fired = ", ".join(f"{name} {value}" for name, value in alert.firing_values.items())
    return {
        **alert.annotations,
        "summary": (
            f"{alert.venue}/{alert.account} {alert.alertname} ended without a new "
            f"evaluation: {reason}; no current values"
        ),
        "description": (
            f"riskmon stopped evaluating this alert ({reason}), so whether its condition "
            f"still holds is unknown. It fired with {fired or 'no field values'}."
        ),
    }


def step(alert: Alert, rule: Rule, obs: Observation, now: float) -> AlertEvent | None:
    """Move `alert` on by one evaluation of `rule` at `now`; the event, if one is due.

    Mutates `alert` in place (no copy on the hot path): its phase, timestamps, values
    and, at a transition, its annotations. `rule` gives `for_`, `keep_firing_for`,
    whether there is a `clear` expression, and `on_missing`; its identity is not
    checked. See the module docstring for the semantics.
    """
    alert.last_evaluated_at = now
    alert.raw_values = obs.values

    if alert.phase is _FIRING:
        decisive = obs.condition if rule.clear is None else obs.clear
        if decisive is True:
            cleared = rule.clear is not None
        elif decisive is False:
            cleared = rule.clear is None
        else:  # missing
            mode = rule.on_missing
            if mode == "keep":
                return None
            cleared = mode == "resolve"
        if not cleared:
            alert.keep_firing_since = None
            return None
        since = alert.keep_firing_since
        if since is None:
            alert.keep_firing_since = since = now
        if now - since < rule.keep_firing_for:
            return None
        alert.annotations = obs.render(True, alert.firing_values)
        return _resolve(alert, now)

    condition = obs.condition
    if condition is not True:
        if condition is not False:  # missing
            mode = rule.on_missing
            if mode == "keep":
                return None
            if mode == "fire":
                condition = True
        if condition is not True:
            if alert.phase is _PENDING:
                alert.phase = _INACTIVE
                alert.active_at = None
            return None

    if alert.phase is _INACTIVE:
        alert.phase = _PENDING
        alert.active_at = now
        alert.fired_at = alert.resolved_at = alert.keep_firing_since = None
        alert.firing_values = {}
        if rule.for_ > 0:
            alert.annotations = obs.render(False, alert.firing_values)
            return None
    else:
        active_at = alert.active_at
        if active_at is None:  # a hand-made pending alert: it starts now
            alert.active_at = active_at = now
        if now - active_at < rule.for_:
            return None
    alert.phase = _FIRING
    alert.fired_at = now
    alert.firing_values = _texts(obs.values)
    alert.annotations = obs.render(False, alert.firing_values)
    return _event(alert, "firing", now)


AlertKey = tuple[str, str, str]  # (rule key, venue, account)


class AlertBook:
    """The pending and firing alerts of a process, keyed by (rule key, venue, account).

    Inactive alerts are not kept: an (rule, account) pair whose condition is false costs
    one dictionary look-up per evaluation and no memory, and an account with no alert at
    all one look-up for all its rules (`holds_any`). Pure like `step`: every method that
    can resolve alerts takes `now` and returns the events.
    """

    __slots__ = ("_accounts", "_alerts")

    def __init__(self) -> None:
        self._alerts: dict[AlertKey, Alert] = {}
        self._accounts: dict[tuple[str, str], int] = {}  # (venue, account) -> alerts held

    def __len__(self) -> int:
        return len(self._alerts)

    def observe(
        self,
        rule: Rule,
        *,
        venue: str,
        venue_kind: str,
        account: str,
        labels: Mapping[str, str],
        obs: Observation,
        now: float,
    ) -> AlertEvent | None:
        """Step the alert of (`rule`, `venue`, `account`) with `obs`; the event, if any.

        An alert is created when it first becomes pending, with `labels` (the rule's
        rendered static labels) and its fingerprint over alertname, venue, account and
        `labels` plus `severity`; later calls ignore `labels` and `venue_kind`. When no
        alert is held and the condition is false (or missing and `on_missing` is not
        `fire`), nothing happens, so a caller may skip building the Observation then.
        """
        key = (rule.key, venue, account)
        alerts = self._alerts
        alert = alerts.get(key)
        if alert is None:
            condition = obs.condition
            if condition is not True and (condition is False or rule.on_missing != "fire"):
                return None
            static = dict(labels)
            alert = Alert(
                rule_key=key[0],
                alertname=rule.alert,
                severity=rule.severity,
                venue=venue,
                venue_kind=venue_kind,
                account=account,
                labels=static,
                fingerprint=fingerprint(
                    rule.alert, venue, account, {**static, "severity": rule.severity}
                ),
            )
            event = step(alert, rule, obs, now)
            self._add(key, alert)
            return event
        event = step(alert, rule, obs, now)
        if alert.phase is _INACTIVE:
            self._remove(key)
        return event

    def get(self, rule_key: str, venue: str, account: str) -> Alert | None:
        """The pending or firing alert of (rule key, venue, account), if any."""
        return self._alerts.get((rule_key, venue, account))

    def holds_any(self, venue: str, account: str) -> bool:
        """Whether some alert of the account is pending or firing."""
        return (venue, account) in self._accounts

    def accounts(self) -> list[tuple[str, str]]:
        """The (venue, account) pairs that hold a pending or firing alert."""
        return list(self._accounts)

    def _add(self, key: AlertKey, alert: Alert) -> None:
        self._alerts[key] = alert
        account = (key[1], key[2])
        self._accounts[account] = self._accounts.get(account, 0) + 1

    def _remove(self, key: AlertKey) -> None:
        del self._alerts[key]
        account = (key[1], key[2])
        left = self._accounts[account] - 1
        if left:
            self._accounts[account] = left
        else:
            del self._accounts[account]

    def active(self) -> list[Alert]:
        """Every pending and firing alert, oldest first."""
        return list(self._alerts.values())

    def firing(self) -> list[Alert]:
        return [alert for alert in self._alerts.values() if alert.phase is _FIRING]

    def pending(self) -> list[Alert]:
        return [alert for alert in self._alerts.values() if alert.phase is _PENDING]

    def forget_account(self, venue: str, account: str, now: float) -> list[AlertEvent]:
        """Drop the alerts of an account that left the config or discovery.

        Firing alerts resolve (reason `REASON_ACCOUNT_GONE`); pending ones vanish.
        """
        return self._drop(
            lambda alert: alert.venue == venue and alert.account == account,
            now,
            REASON_ACCOUNT_GONE,
        )

    def retain_rules(self, keys: Iterable[str], now: float) -> list[AlertEvent]:
        """After a reload: drop the alerts of rules whose key is not in `keys`.

        Firing alerts of removed rules resolve (reason `REASON_RULE_REMOVED`); pending
        ones vanish; the alerts of the remaining rules keep their state, even if the
        rule's expression or `for` changed.
        """
        kept = set(keys)
        return self._drop(lambda alert: alert.rule_key not in kept, now, REASON_RULE_REMOVED)

    def _drop(self, doomed: Callable[[Alert], bool], now: float, reason: str) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        for key, alert in list(self._alerts.items()):
            if doomed(alert):
                self._remove(key)
                if alert.phase is _FIRING:
                    alert.annotations = _unevaluated(alert, reason)
                    events.append(_resolve(alert, now, reason))
        return events

    def to_json(self) -> list[dict[str, Any]]:
        """The pending and firing alerts as JSON-safe dicts, for persistence."""
        return [alert.to_dict() for alert in self._alerts.values()]

    @classmethod
    def from_json(cls, items: Iterable[Mapping[str, Any]]) -> AlertBook:
        """The book of a restarted process, from `to_json`'s output.

        Inactive items are skipped, and `keep_firing_since` is dropped: `keep_firing_for`
        counts again from the first evaluation after the restart. ValueError (naming the
        item) for a malformed item or one that appears twice.
        """
        book = cls()
        for index, item in enumerate(items):
            try:
                alert = Alert.from_dict(item)
            except (ValueError, TypeError, AttributeError) as exc:
                raise ValueError(f"alert state item {index}: {exc}") from None
            if alert.phase is _INACTIVE:
                continue
            alert.keep_firing_since = None
            key = (alert.rule_key, alert.venue, alert.account)
            if key in book._alerts:
                raise ValueError(f"alert state item {index}: {key} appears twice")
            book._add(key, alert)
        return book


# ------------------------------------------------------------------ reading JSON back


def _str(d: Mapping[str, Any], name: str, what: str) -> str:
    value = d.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{what}: {name} must be a string")
    return value


def _strmap(d: Mapping[str, Any], name: str, what: str) -> dict[str, str]:
    value = d.get(name, {})
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{what}: {name} must map strings to strings")
    return dict(value)


def _strs(d: Mapping[str, Any], name: str, what: str) -> tuple[str, ...]:
    value = d.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what}: {name} must be a list of strings")
    return tuple(value)


def _opt_time(d: Mapping[str, Any], name: str, what: str) -> float | None:
    value = d.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what}: {name} must be a number or null")
    return float(value)


def _time(d: Mapping[str, Any], name: str, what: str) -> float:
    value = _opt_time(d, name, what)
    if value is None:
        raise ValueError(f"{what}: {name} must be a number")
    return value
