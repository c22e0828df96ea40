"""Lint rules against the venue kinds they apply to (`riskmon check`, and the daemon at
every load). What each kind sends is passed in (`KindFields`, built from the venue
registry by `monitor.venue_fields`): the engine knows no venue.

Lints are warnings:
- a rule reads a field that a venue kind its group selects never sends (a typo, or a
  rule meant for another venue kind), with a "did you mean";
- a rule reads a field the venue kind has deprecated (Clear Street's pattern-day-trader
  fields since 2026-06-04): where the venue no longer sends it the field is missing, and
  the rule's `on_missing` decides; not where the rule tests the field with `present()`
  or `coalesce()` itself;
- a rule can never fire on a venue kind (every field its `expr` needs is unknown there
  and `on_missing` is not `fire`);
- a group's `venues` entry that is neither a venue kind nor a configured venue.

The daemon runs the same checks at start and at every reload (`config_problems`);
the command itself is `monitor.check_cmd`.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from monitor import schema
from monitor.engine.expr import CompiledExpr, guarded_paths
from monitor.engine.model import Rule, RuleSet
from monitor.engine.params_check import ParamPlaces, check_account_params
from monitor.engine.rulefile import (
    IDENTITY_FIELDS,
    NoDefaultWarning,
    find_field,
    place_in_text,
    split_lines,
)
from monitor.engine.runbook import ALERT_CONTEXT
from monitor.engine.templates import ALERT_FIELDS
from monitor.snapshot import FieldSchema
from monitor.yamlsource import Location, Problem

if TYPE_CHECKING:
    from monitor.config.model import Config

__all__ = [
    "KindFields",
    "config_problems",
    "lint_rules",
]


# ------------------------------------------------------------------------- what a kind sends


_REMOVING = "the venue is removing these fields"


@dataclass(frozen=True, slots=True)
class KindFields:
    """The field paths one venue kind can send, from its adapter's schema."""

    kind: str
    patterns: frozenset[str]  # with `*` for map keys and list items
    deprecated: frozenset[str]  # patterns the venue deprecated
    #: normalized field -> the deprecated venue field it comes from
    deprecated_normalized: Mapping[str, str]
    #: why the venue deprecated fields, for the warning
    deprecation_note: str = _REMOVING
    #: the field that replaces the deprecated ones, when there is one
    successor: str | None = None

    @classmethod
    def of(
        cls,
        kind: str,
        schema: FieldSchema,
        normalized: Iterable[str],
        deprecated_normalized: Mapping[str, str],
        *,
        deprecation_note: str | None = None,
        successor: str | None = None,
    ) -> KindFields:
        """What a kind whose adapter parses with `schema` and adds the `normalized`
        fields sends (each prefix of a schema path too)."""
        patterns: set[str] = set(normalized)
        for pattern in schema.types:
            parts = pattern.split(".")
            patterns.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        return cls(
            kind=kind,
            patterns=frozenset(patterns),
            deprecated=frozenset(schema.deprecated),
            deprecated_normalized=dict(deprecated_normalized),
            deprecation_note=deprecation_note or _REMOVING,
            successor=successor,
        )

    def often_absent(self) -> frozenset[str]:
        """The fields deprecated here: absent from nearly every snapshot, so the rules'
        fast path treats them as optional rather than falling back whenever missing."""
        plain = {p for p in self.deprecated if "*" not in p}
        return (
            frozenset(self.deprecated_normalized)
            | frozenset(self.deprecated_normalized.values())
            | plain
        )

    def knows(self, path: str) -> bool:
        if _always_known(path):
            return True
        return any(_matches(path, pattern) for pattern in self._candidates(path))

    def deprecation(self, path: str) -> str | None:
        """The deprecated venue field behind `path`, or None if it is not deprecated."""
        if path in self.deprecated_normalized:
            return self.deprecated_normalized[path]
        for pattern in self.deprecated:
            if _matches(path, pattern):
                return pattern
        return None

    def suggest(self, path: str) -> str | None:
        """The known path closest to `path` (`*` filled from `path` where it fits)."""
        parts = path.split(".")
        candidates = set()
        for pattern in self.patterns:
            pattern_parts = pattern.split(".")
            if len(pattern_parts) == len(parts):
                filled = [p if q == "*" else q for p, q in zip(parts, pattern_parts, strict=True)]
                candidates.add(".".join(filled))
            elif "*" not in pattern:
                candidates.add(pattern)
        close = difflib.get_close_matches(path, sorted(candidates), n=1, cutoff=0.7)
        return close[0] if close else None

    def _candidates(self, path: str) -> Iterable[str]:
        depth = path.count(".")
        return (p for p in self.patterns if p.count(".") == depth)


def _always_known(path: str) -> bool:
    head = path.partition(".")[0]
    return path in IDENTITY_FIELDS or head in ("labels", "params") or head in ALERT_FIELDS


def _matches(path: str, pattern: str) -> bool:
    parts, pattern_parts = path.split("."), pattern.split(".")
    if len(parts) != len(pattern_parts):
        return False
    return all(q in ("*", p) for p, q in zip(parts, pattern_parts, strict=True))


# ------------------------------------------------------------------------- lints


@dataclass(slots=True)
class _Read:
    """A field path a rule reads, and where (an expression's or template's text)."""

    path: str
    text: str
    where: Location | None


class _Linter:
    def __init__(
        self, venues: Sequence[tuple[str, str]] | None, kinds: Mapping[str, KindFields]
    ) -> None:
        self.venues = venues
        self.fields = kinds
        self.kinds = list(kinds)
        self.problems: list[Problem] = []
        self._lines: dict[str, list[str]] = {}

    def warn(self, where: Location, message: str) -> None:
        self.problems.append(Problem(where, message, "warning"))

    def place(self, read: _Read, fallback: Location) -> Location:
        if read.where is None:
            return fallback
        lines = self._lines.get(read.where.file)
        if lines is None:
            try:
                lines = split_lines(Path(read.where.file).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                lines = []
            self._lines[read.where.file] = lines
        return place_in_text(lines, read.where, read.text, find_field(read.text, read.path))

    def kinds_for(self, rule: Rule) -> list[str]:
        if self.venues is not None:
            kinds = (kind for name, kind in self.venues if rule.applies_to(name, kind))
            return sorted({k for k in kinds if k in self.kinds})
        return [k for k in self.kinds if not rule.venues or k in rule.venues]

    def lint(self, rules: RuleSet) -> list[Problem]:
        for group in rules.groups:
            self.lint_venues(group.venues, group.location)
        for rule in rules.rules:
            self.lint_rule(rule)
        return self.problems

    def lint_venues(self, entries: Sequence[str], where: Location) -> None:
        if self.venues is None:
            return  # without a config an entry may name a venue we cannot see
        names = [name for name, _ in self.venues]
        for entry in entries:
            if entry in self.kinds or entry in names:
                continue
            hint = schema.did_you_mean(entry, [*self.kinds, *names])
            self.warn(
                where,
                f"venues: {entry!r} is neither a venue kind ({', '.join(self.kinds)}) "
                f"nor a venue of the config{hint}",
            )

    def lint_rule(self, rule: Rule) -> None:
        reads = _reads(rule)
        # a field the rule tests with present() or coalesce(): it has said what its
        # absence means, so a deprecation (the field going missing) needs no warning
        guarded = {p for e in (rule.expr, rule.clear) if e is not None for p in guarded_paths(e)}
        for kind in self.kinds_for(rule):
            known = self.fields[kind]
            reported: set[str] = set()
            for read in reads:
                if read.path in reported:
                    continue
                if not known.knows(read.path):
                    reported.add(read.path)
                    self.unknown(rule, read, kind, known)
                    continue
                source = known.deprecation(read.path)
                if source is not None and read.path not in guarded:
                    reported.add(read.path)
                    self.deprecated(rule, read, kind, source)
            self.never_fires(rule, kind, known)

    def unknown(self, rule: Rule, read: _Read, kind: str, known: KindFields) -> None:
        message = f"{kind} never sends {read.path}"
        suggestion = known.suggest(read.path)
        if suggestion is not None:
            message += f"; did you mean {suggestion}?"
        others = [k for k in self.kinds if k != kind and self.fields[k].knows(read.path)]
        if others and not rule.venues:
            message += (
                f" ({' and '.join(others)} sends it: limit group {rule.group!r} with "
                f"venues: [{', '.join(others)}])"
            )
        self.warn(self.place(read, rule.location), message)

    def deprecated(self, rule: Rule, read: _Read, kind: str, source: str) -> None:
        behind = f" (from {source})" if source != read.path else ""
        known = self.fields[kind]
        successor = known.successor
        instead = (
            f"; for the intraday framework see {successor}"
            if successor is not None and known.knows(successor) and read.path != successor
            else ""
        )
        self.warn(
            self.place(read, rule.location),
            f"{read.path}{behind} is deprecated by {kind}: {known.deprecation_note}; "
            "where the venue no longer sends it the field is missing, so this rule's "
            f"on_missing ({rule.on_missing}) decides{instead}",
        )

    def never_fires(self, rule: Rule, kind: str, known: KindFields) -> None:
        if rule.on_missing == "fire" or _tolerates_missing(rule.expr):
            return
        needed = sorted(p for p in rule.expr.fields if not _always_known(p))
        if not needed or any(known.knows(p) for p in needed):
            return
        self.warn(
            rule.location,
            f"{rule.alert} can never fire on {kind}: {kind} sends none of the fields its expr "
            f"needs ({', '.join(needed)}) and on_missing is {rule.on_missing}",
        )


def _reads(rule: Rule) -> list[_Read]:
    reads: list[_Read] = []
    for expr in (rule.expr, rule.clear):
        if expr is not None:
            reads.extend(_Read(p, expr.source, expr.where) for p in sorted(expr.fields))
    templates = [(t, frozenset[str]()) for t in rule.labels.values()]
    templates += [(t, ALERT_CONTEXT) for t in rule.annotations.values()]
    for template, also_known in templates:
        where = getattr(template, "where", None)
        reads.extend(
            _Read(p, template.source, where if isinstance(where, Location) else None)
            for p in sorted(template.fields - also_known)
        )
    return [r for r in reads if not _always_known(r.path)]


def _tolerates_missing(expr: CompiledExpr) -> bool:
    """Whether the expression tests for missing fields itself (present, coalesce)."""
    try:
        tree = ast.parse(f"({expr.source}\n)", mode="eval")
    except SyntaxError:
        return True
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("present", "coalesce")
        for node in ast.walk(tree)
    )


def lint_rules(
    rules: RuleSet,
    venues: Sequence[tuple[str, str]] | None = None,
    *,
    kinds: Mapping[str, KindFields],
) -> list[Problem]:
    """Warnings about rules against the venue kinds they apply to.

    `venues`: the config's (name, kind) pairs; None lints each rule against every known
    kind its group selects. `kinds`: what each known venue kind sends.
    """
    problems = _Linter(venues, kinds).lint(rules)
    return list(dict.fromkeys(problems))


def config_problems(
    config: Config,
    rules: RuleSet,
    rule_warnings: Sequence[Problem],
    places: ParamPlaces,
    *,
    kinds: Mapping[str, KindFields],
    unread: bool = True,
) -> list[Problem]:
    """What checking `rules` against `config` finds beside the errors of loading them:
    the rule files' warnings, the lints against the config's venues, and the errors of
    the account params (`params_check`). A param without a default is no warning here:
    the accounts that lack it are errors, and where every account sets it all is well.
    `unread`: see `check_account_params`."""
    venues = [(venue.name, venue.kind) for venue in config.venues]
    problems = [w for w in rule_warnings if not isinstance(w, NoDefaultWarning)]
    problems += lint_rules(rules, venues, kinds=kinds)
    problems += check_account_params(config, rules, places, unread=unread)
    return problems
