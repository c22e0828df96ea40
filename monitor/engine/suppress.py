"""What suppresses a firing alert: inhibit rules and silences, with Alertmanager's meaning.

An alert's labels, as matchers see them, are its static labels plus `alertname`,
`venue`, `account` and `severity` (`alert_labels`).

- An `InhibitRule` inhibits a *target* alert (all `target` matchers match it) while a
  *source* alert fires (all `source` matchers match it) whose `equal` labels have the
  same values as the target's (a label both lack counts as equal, as in Alertmanager).
  An alert never inhibits itself, and an alert that matches both sides of a rule is
  inhibited only by sources that do not match the target side too (Alertmanager's rule,
  so that two alerts of one band do not hold each other back). Sources inhibit whether
  or not they are suppressed themselves.
- A `Silence` silences every alert all its matchers match while `starts_at <= now <
  ends_at`.

`suppressions` computes both for a set of alerts at once: the sources of each inhibit
rule are indexed by their `equal` values first, so the cost is one pass over the
alerts per rule. `suppression_of` computes them for one alert (an event's, as it
fires): one pass over the firing alerts per rule whose target side matches it. Both
reject an alert by its alertname before building its labels when a side has an
`alertname="..."` matcher, as most do. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from monitor.engine.lifecycle import Alert, AlertPhase
from monitor.engine.model import InhibitRule
from monitor.schema import Matcher, parse_matcher

__all__ = [
    "BUILTIN_INHIBIT_RULES",
    "NOT_SUPPRESSED",
    "InhibitRule",
    "Silence",
    "SilenceState",
    "Suppression",
    "alert_labels",
    "suppression_of",
    "suppressions",
]

SilenceState = Literal["pending", "active", "expired"]


def alert_labels(alert: Alert) -> dict[str, str]:
    """The labels matchers see: static labels, then riskmon's own (which win)."""
    return {
        **alert.labels,
        "alertname": alert.alertname,
        "venue": alert.venue,
        "account": alert.account,
        "severity": alert.severity,
    }


def _built_in(source: str, target: str) -> InhibitRule:
    return InhibitRule((parse_matcher(source),), (parse_matcher(target),), ("venue",))


#: SPEC's storm inhibitions: an outage is one page, not one per account. `equal: [venue]`
#: only, so the venue-wide source (account `*`) inhibits every account of its venue.
BUILTIN_INHIBIT_RULES: Final = (
    _built_in('alertname="VenueAuthFailed"', 'alertname=~"VenueDown|AccountDataStale"'),
    _built_in('alertname="VenueDown"', 'alertname="AccountDataStale"'),
)


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    updated_at: float

    def state(self, now: float) -> SilenceState:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(matcher.matches(labels) for matcher in self.matchers)


@dataclass(frozen=True, slots=True)
class Suppression:
    """Why an alert is suppressed: the fingerprints of the alerts that inhibit it and
    the ids of the silences that silence it (both sorted); empty: it is not."""

    inhibited_by: tuple[str, ...] = ()
    silenced_by: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.inhibited_by or self.silenced_by)


NOT_SUPPRESSED: Final = Suppression()


def _may_match(matchers: Sequence[Matcher], alertname: str) -> bool:
    """False when an `alertname="..."` matcher rules `alertname` out (a cheap test
    before the labels are built); True when the labels must decide."""
    return all(m.name != "alertname" or m.op != "=" or m.value == alertname for m in matchers)


def _matches(matchers: Sequence[Matcher], alert: Alert, labels: Mapping[str, str]) -> bool:
    return _may_match(matchers, alert.alertname) and all(m.matches(labels) for m in matchers)


def suppression_of(
    target: Alert,
    alerts: Iterable[Alert],
    rules: Iterable[InhibitRule],
    silences: Iterable[Silence],
    now: float,
) -> Suppression:
    """What suppresses the firing alert `target`, the source alerts taken from the
    firing ones of `alerts` (see `suppressions`, which this agrees with)."""
    labels = alert_labels(target)
    applying = [rule for rule in rules if _matches(rule.target, target, labels)]
    by: set[str] = set()
    if applying:
        firing = [a for a in alerts if a.phase is AlertPhase.FIRING and a is not target]
        for rule in applying:
            want = tuple(labels.get(name, "") for name in rule.equal)
            two_sided = _matches(rule.source, target, labels)
            for alert in firing:
                if not _may_match(rule.source, alert.alertname):
                    continue
                theirs = alert_labels(alert)
                if not all(m.matches(theirs) for m in rule.source):
                    continue
                if tuple(theirs.get(name, "") for name in rule.equal) != want:
                    continue
                if two_sided and _matches(rule.target, alert, theirs):
                    continue
                if alert.fingerprint != target.fingerprint:
                    by.add(alert.fingerprint)
    silenced = sorted(s.id for s in silences if s.state(now) == "active" and s.matches(labels))
    return Suppression(tuple(sorted(by)), tuple(silenced))


def suppressions(
    alerts: Sequence[Alert],
    rules: Iterable[InhibitRule],
    silences: Iterable[Silence],
    now: float,
) -> dict[str, Suppression]:
    """By fingerprint, the suppression of each firing alert of `alerts` that is
    suppressed (firing alerts alone are sources and targets; pending ones page no one)."""
    firing = [(alert, alert_labels(alert)) for alert in alerts if alert.phase is AlertPhase.FIRING]
    if not firing:
        return {}
    inhibited: dict[str, set[str]] = {}
    for rule in rules:
        sources: dict[tuple[str, ...], list[tuple[str, bool]]] = {}
        for alert, labels in firing:
            if _matches(rule.source, alert, labels):
                key = tuple(labels.get(name, "") for name in rule.equal)
                also_target = _matches(rule.target, alert, labels)
                sources.setdefault(key, []).append((alert.fingerprint, also_target))
        if not sources:
            continue
        for alert, labels in firing:
            if not _matches(rule.target, alert, labels):
                continue
            found = sources.get(tuple(labels.get(name, "") for name in rule.equal))
            if not found:
                continue
            two_sided = _matches(rule.source, alert, labels)
            by = {
                fp
                for fp, also_target in found
                if fp != alert.fingerprint and not (two_sided and also_target)
            }
            if by:
                inhibited.setdefault(alert.fingerprint, set()).update(by)
    active = [silence for silence in silences if silence.state(now) == "active"]
    result: dict[str, Suppression] = {}
    for alert, labels in firing:
        silenced = sorted(s.id for s in active if s.matches(labels))
        by_alerts = sorted(inhibited.get(alert.fingerprint, ()))
        if silenced or by_alerts:
            result[alert.fingerprint] = Suppression(tuple(by_alerts), tuple(silenced))
    return result
