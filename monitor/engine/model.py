"""What a loaded rule file is: groups of rules with compiled expressions and templates.

`monitor.engine.rulefile` builds these from YAML; the evaluator, the lifecycle and the
`check`, `test` and `replay` commands read them. Durations are seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from monitor.engine.expr import CompiledExpr
from monitor.schema import Matcher
from monitor.yamlsource import Location

Severity = Literal["critical", "error", "warning", "info"]
OnMissing = Literal["keep", "resolve", "fire"]
SEVERITIES: tuple[Severity, ...] = ("critical", "error", "warning", "info")
ON_MISSING: tuple[OnMissing, ...] = ("keep", "resolve", "fire")


class Template(Protocol):
    """A compiled label or annotation template."""

    source: str
    #: Every field path the template reads (`buying_power`, `labels.desk`, `params.x`).
    fields: frozenset[str]

    def render(self, context: Mapping[str, Any]) -> str:
        """The text; never raises (a failing template renders a readable fallback)."""
        ...


@dataclass(frozen=True, slots=True)
class Rule:
    alert: str  # the alertname
    expr: CompiledExpr
    group: str
    file: str
    location: Location  # of the rule's `alert:` key
    clear: CompiledExpr | None = None  # hysteresis: what must hold to resolve
    for_: float = 0.0  # seconds the expr must hold before firing
    keep_firing_for: float = 0.0
    severity: Severity = "warning"
    on_missing: OnMissing = "keep"
    params: Mapping[str, Any] = field(default_factory=dict)  # defaults; accounts override
    #: Static labels: group labels, then the rule's; templates may read only identity
    #: (venue, venue_kind, account, labels.*, params.*), so an alert's labels never change.
    labels: Mapping[str, Template] = field(default_factory=dict)
    annotations: Mapping[str, Template] = field(default_factory=dict)
    venues: tuple[str, ...] = ()  # the group's venue kinds or names; empty: every venue

    @property
    def key(self) -> str:
        """The rule's identity across reloads: its group and alertname."""
        return f"{self.group}/{self.alert}"

    def applies_to(self, venue: str, venue_kind: str) -> bool:
        return not self.venues or venue in self.venues or venue_kind in self.venues


@dataclass(frozen=True, slots=True)
class RuleGroup:
    name: str
    file: str
    location: Location
    rules: tuple[Rule, ...]
    venues: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InhibitRule:
    """While a source alert fires, target alerts with the same `equal` labels are
    inhibited (Alertmanager's meaning; `monitor.engine.suppress` applies it)."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()
    location: Location | None = None  # in its rule file; None for the built-in ones


@dataclass(frozen=True, slots=True)
class RuleSet:
    groups: tuple[RuleGroup, ...] = ()
    files: tuple[str, ...] = ()
    inhibit_rules: tuple[InhibitRule, ...] = ()

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(rule for group in self.groups for rule in group.rules)

    def rules_for(self, venue: str, venue_kind: str) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules if rule.applies_to(venue, venue_kind))
