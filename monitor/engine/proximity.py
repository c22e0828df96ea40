"""How close each account is to changing an alert's state, for the risk-aware schedule.

The rules themselves say what matters: every ordering of a rule (and of its `clear`)
between a snapshot value and a threshold of params and constants (`expr.comparisons`)
gives a gap, value - threshold, measured on each snapshot. The poller keeps how fast
the gaps move (`monitor.schedule.RiskTrack`) and asks whether an alert of the account is
pending or firing; it imports none of this, and this nothing of venues.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from monitor.engine.evaluate import merged_params
from monitor.engine.expr import Comparison, comparisons
from monitor.engine.model import Rule, RuleSet
from monitor.snapshot import Snapshot


class RuleProximity:
    """`gaps(snapshot)` and `alerting(venue, account)` for `VenuePoller(risk=...)`."""

    def __init__(self, rules: Callable[[], RuleSet], alerting: Callable[[str, str], bool]) -> None:
        """`rules`: the rules running now (read at each call: reloads change them);
        `alerting`: whether an alert of the account is pending or firing."""
        self._rules = rules
        self._alerting = alerting
        self._cache: dict[tuple[str, str], tuple[RuleSet, list[tuple[Rule, Comparison]]]] = {}

    def comparisons_for(self, venue: str, venue_kind: str) -> list[tuple[Rule, Comparison]]:
        rules = self._rules()
        cached = self._cache.get((venue, venue_kind))
        if cached is not None and cached[0] is rules:
            return cached[1]
        found = [
            (rule, comparison)
            for rule in rules.rules_for(venue, venue_kind)
            for expr in (rule.expr, rule.clear)
            if expr is not None
            for comparison in comparisons(expr)
        ]
        self._cache[(venue, venue_kind)] = (rules, found)
        return found

    def gaps(self, snapshot: Snapshot) -> list[float | None]:
        """value - threshold of each comparison (None where either is not a number)."""
        out: list[float | None] = []
        for rule, comparison in self.comparisons_for(snapshot.venue, snapshot.venue_kind):
            params = merged_params(rule, snapshot.params)
            value = comparison.value.evaluate(snapshot, params)
            threshold = comparison.threshold.evaluate(snapshot, params)
            if type(value) is Decimal and type(threshold) is Decimal and value.is_finite():
                out.append(float(value - threshold))
            else:
                out.append(None)
        return out

    def alerting(self, venue: str, account: str) -> bool:
        return self._alerting(venue, account)
