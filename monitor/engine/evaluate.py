"""Runs a rule set over snapshots and feeds what it finds to the alert lifecycle.

Pure: no I/O and no clock of its own (`now` is passed in), so the daemon, `riskmon
test` and `riskmon replay` all use it unchanged. Each venue gets one generated function
evaluating all its rules (and their clear conditions) per snapshot; each account's
params are prepared once per rule set (once for all the accounts that set none). The
common case, conditions that are false for an account with no active alert, costs a
few C-level scans of the results and no allocation at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from monitor.engine.expr import MISSING, CompiledRules, EvalError, PreparedParams, compile_rules
from monitor.engine.lifecycle import AlertBook, AlertEvent, AlertRender, Observation
from monitor.engine.model import Rule, RuleSet, Template
from monitor.engine.runbook import add_alert_context, runbook_template
from monitor.engine.templates import alert_context, render_context
from monitor.snapshot import Snapshot

IDENTITY = frozenset({"venue", "venue_kind", "account", "currency"})
EvalFailureHook = Callable[[Rule, Snapshot, EvalError], None]


@dataclass(frozen=True, slots=True)
class _Program:
    """Everything needed to evaluate one venue's rules."""

    rules: tuple[Rule, ...]
    compiled: CompiledRules
    clear_at: tuple[int | None, ...]  # where each rule's clear result is, if it has one
    value_fields: tuple[tuple[str, ...], ...]  # venue fields each rule reports in `values`
    defaults: PreparedParams  # the params of every account that sets none of its own
    fires_on_missing: bool  # some rule has `on_missing: fire`


def _prepare(
    rules: tuple[Rule, ...],
    clear_at: tuple[int | None, ...],
    compiled: CompiledRules,
    account_params: Mapping[str, Any],
) -> PreparedParams:
    """The rules' params under an account's own, for `compiled.run`."""
    per_rule = [merged_params(rule, account_params) for rule in rules]
    for rule, clear in zip(rules, clear_at, strict=True):
        if clear is not None:
            per_rule.append(merged_params(rule, account_params))
    return compiled.prepare(per_rule)


def _value_fields(rule: Rule) -> tuple[str, ...]:
    fields = set(rule.expr.fields) | (set(rule.clear.fields) if rule.clear else set())
    return tuple(
        sorted(f for f in fields if f not in IDENTITY and not f.startswith(("params.", "labels.")))
    )


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Evaluator:
    """Evaluates rules over snapshots; alert state lives in the `AlertBook` it feeds."""

    def __init__(
        self,
        rules: RuleSet,
        book: AlertBook | None = None,
        *,
        on_eval_failure: EvalFailureHook | None = None,
        runbook_url: Template | None = None,
        often_absent: Mapping[str, frozenset[str]] | None = None,
        decimal_fields: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.rules = rules
        #: per venue kind, the fields the fast path treats as optional (its deprecated
        #: ones: absent from nearly every snapshot); `monitor.venue_fields` builds it
        self.often_absent = often_absent if often_absent is not None else {}
        #: per venue kind, the fields its parser guarantees are Decimals wherever present
        #: (`FieldSchema.decimal_paths`, which its snapshots carry): the fast path checks
        #: their types only in snapshots that do not carry that guarantee
        self.decimal_fields = decimal_fields if decimal_fields is not None else {}
        #: `{{ runbook_url }}` of the annotations (`builtin_alerts.runbook_url`)
        self.runbook_url = runbook_url if runbook_url is not None else runbook_template()
        self.book = book if book is not None else AlertBook()
        self.on_eval_failure = on_eval_failure
        self.evaluation_failures = 0
        self._programs: dict[tuple[str, str], _Program] = {}
        self._prepared: dict[tuple[str, str], tuple[Mapping[str, Any], PreparedParams]] = {}
        self._labels: dict[tuple[str, str, str], dict[str, str]] = {}
        # account -> the inputs of its last run that started nothing: (venue, fields,
        # prepared params, labels, currency, program). The generated rules read nothing
        # else, so the same objects again (an unchanged answer shares its fields,
        # `monitor.venues.unchanged`) give the same results, and the run is skipped. Keyed
        # by the account's id alone, which the snapshot holds anyway: the same id in two
        # venues takes turns.
        self._quiet: dict[
            str,
            tuple[str, Mapping[str, Any], PreparedParams, Mapping[str, str], str | None, _Program],
        ] = {}

    def replace_rules(
        self, rules: RuleSet, now: float, *, also_keep: RuleSet | None = None
    ) -> list[AlertEvent]:
        """Swap in a new rule set (a reload); alerts of rules that are gone resolve.
        `also_keep`: the rules of another Evaluator sharing the book (the built-in
        ones), whose alerts a reload leaves alone."""
        self.rules = rules
        self._programs.clear()
        self._prepared.clear()
        self._quiet.clear()
        self._labels.clear()
        keys = {rule.key for rule in rules.rules}
        if also_keep is not None:
            keys.update(rule.key for rule in also_keep.rules)
        return self.book.retain_rules(keys, now)

    def forget_account(self, venue: str, account: str, now: float) -> list[AlertEvent]:
        """An account left the config or discovery: its alerts resolve, its caches go."""
        self._prepared.pop((venue, account), None)
        quiet = self._quiet.get(account)
        if quiet is not None and quiet[0] == venue:
            del self._quiet[account]
        for key in [k for k in self._labels if k[1] == venue and k[2] == account]:
            del self._labels[key]
        return self.book.forget_account(venue, account, now)

    def _program(self, venue: str, venue_kind: str) -> _Program:
        program = self._programs.get((venue, venue_kind))
        if program is None:
            rules = self.rules.rules_for(venue, venue_kind)
            exprs = [rule.expr for rule in rules]
            clear_at: list[int | None] = []
            for rule in rules:
                if rule.clear is None:
                    clear_at.append(None)
                else:
                    clear_at.append(len(exprs))
                    exprs.append(rule.clear)
            compiled = compile_rules(
                exprs,
                optional=self.often_absent.get(venue_kind, frozenset()),
                decimal_fields=self.decimal_fields.get(venue_kind, frozenset()),
            )
            program = _Program(
                rules,
                compiled,
                tuple(clear_at),
                tuple(_value_fields(rule) for rule in rules),
                _prepare(rules, tuple(clear_at), compiled, {}),
                any(rule.on_missing == "fire" for rule in rules),
            )
            self._programs[(venue, venue_kind)] = program
        return program

    def _params(self, program: _Program, snapshot: Snapshot) -> PreparedParams:
        if not snapshot.params:  # most accounts: the defaults, prepared once for all
            return program.defaults
        key = (snapshot.venue, snapshot.account)
        cached = self._prepared.get(key)
        if cached is not None and cached[0] is snapshot.params:
            return cached[1]
        prepared = _prepare(program.rules, program.clear_at, program.compiled, snapshot.params)
        self._prepared[key] = (snapshot.params, prepared)
        return prepared

    def evaluate(self, snapshot: Snapshot, now: float) -> list[AlertEvent]:
        """Every rule of the snapshot's venue over it; the events of alerts that changed."""
        program = self._program(snapshot.venue, snapshot.venue_kind)
        if not program.rules:
            return []
        book = self.book
        venue, account = snapshot.venue, snapshot.account
        params = self._params(program, snapshot)
        quiet = self._quiet.get(account)
        if (
            quiet is not None
            and quiet[1] is snapshot.fields
            and quiet[2] is params
            and quiet[3] is snapshot.labels
            and quiet[5] is program
            and quiet[0] == venue
            and quiet[4] == snapshot.currency
            and not book.holds_any(venue, account)
        ):
            return []  # the inputs of the last quiet run again: the same results
        results = program.compiled.run(snapshot, params)
        rules = program.rules
        if (
            # the conditions (the clears after them do not start anything); a result
            # equal to True without being it, such as Decimal(1), takes the loop
            True not in results[: len(rules)]
            and EvalError not in map(type, results)
            and not program.fires_on_missing
            and not book.holds_any(venue, account)
        ):
            # nothing starts, nothing failed, nothing active: the hot path
            self._quiet[account] = (
                venue,
                snapshot.fields,
                params,
                snapshot.labels,
                snapshot.currency,
                program,
            )
            return []
        self._quiet.pop(account, None)
        events: list[AlertEvent] = []
        for index, rule in enumerate(rules):
            condition = results[index]
            clear_at = program.clear_at[index]
            clear = results[clear_at] if clear_at is not None else None
            if isinstance(condition, EvalError):
                self._failed(rule, snapshot, condition)
            if isinstance(clear, EvalError):
                self._failed(rule, snapshot, clear)
            starts = condition is True or (condition is not False and rule.on_missing == "fire")
            if not starts and book.get(rule.key, venue, account) is None:
                continue  # nothing active and nothing to start
            event = book.observe(
                rule,
                venue=venue,
                venue_kind=snapshot.venue_kind,
                account=account,
                labels=self._alert_labels(rule, snapshot),
                obs=Observation(
                    condition=condition,
                    clear=clear,
                    values=_values(snapshot, program.value_fields[index]),
                    render=_renderer(rule, snapshot, self.runbook_url),
                ),
                now=now,
            )
            if event is not None:
                events.append(event)
        return events

    def _failed(self, rule: Rule, snapshot: Snapshot, error: EvalError) -> None:
        self.evaluation_failures += 1
        if self.on_eval_failure is not None:
            self.on_eval_failure(rule, snapshot, error)

    def _alert_labels(self, rule: Rule, snapshot: Snapshot) -> Mapping[str, str]:
        if not rule.labels:
            return snapshot.labels
        key = (rule.key, snapshot.venue, snapshot.account)
        labels = self._labels.get(key)
        if labels is None:
            context = render_context(snapshot, merged_params(rule, snapshot.params))
            labels = dict(snapshot.labels)
            labels.update({name: t.render(context) for name, t in rule.labels.items()})
            self._labels[key] = labels
        return labels


def merged_params(rule: Rule, account_params: Mapping[str, Any]) -> Mapping[str, Any]:
    """The rule's default params under the account's overrides."""
    if not rule.params:
        return account_params
    if not account_params:
        return rule.params
    return {**rule.params, **account_params}


def _values(snapshot: Snapshot, names: tuple[str, ...]) -> dict[str, str]:
    fields = snapshot.fields
    out = {}
    for name in names:
        value = fields.get(name, MISSING)
        if value is not MISSING and not isinstance(value, dict | list):
            out[name] = _text(value)
    return out


def _renderer(rule: Rule, snapshot: Snapshot, runbook_url: Template) -> AlertRender:
    def render(resolved: bool, firing_values: Mapping[str, str]) -> dict[str, str]:
        if not rule.annotations:
            return {}
        context = render_context(snapshot, merged_params(rule, snapshot.params))
        context.update(alert_context(resolved=resolved, firing_values=firing_values))
        needed = any("runbook_url" in t.fields for t in rule.annotations.values())
        add_alert_context(context, rule.alert, runbook_url, needed=needed)
        return {name: t.render(context) for name, t in rule.annotations.items()}

    return render


__all__ = ["Evaluator", "merged_params"]
