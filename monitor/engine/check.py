"""`riskmon check`: validate a config and its rule files, and lint rules against venues.

Errors (a file that would not load; against a config, the account params that
`params_check` refuses) make the exit status 1, and with `--strict` warnings do too.
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

The daemon runs the same checks at start and at every reload (`config_problems`).
"""

from __future__ import annotations

import ast
import difflib
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from monitor.engine.expr import CompiledExpr, guarded_paths
from monitor.engine.model import Rule, RuleSet
from monitor.engine.params_check import ParamPlaces, check_account_params
from monitor.engine.rulefile import (
    IDENTITY_FIELDS,
    NoDefaultWarning,
    expand_rule_globs,
    find_field,
    load_rules_partial,
    place_in_text,
    split_lines,
)
from monitor.engine.runbook import ALERT_CONTEXT
from monitor.engine.templates import ALERT_FIELDS
from monitor.snapshot import NORMALIZED_FIELDS, snake_case
from monitor.yamlsource import Location, Problem, SourceError, YamlDocument

if TYPE_CHECKING:
    from monitor.config.model import Config

__all__ = [
    "DEFAULT_CONFIG",
    "KindFields",
    "config_problems",
    "kind_fields",
    "lint_rules",
    "run_check",
]

DEFAULT_CONFIG: Final = "riskmon.yaml"
_INTRADAY: Final = "margin_details.intraday_details.buying_power"


# ------------------------------------------------------------------------- what a kind sends


@dataclass(frozen=True, slots=True)
class KindFields:
    """The field paths one venue kind can send, from its adapter's schema."""

    kind: str
    patterns: frozenset[str]  # with `*` for map keys and list items
    deprecated: frozenset[str]  # patterns the venue deprecated
    #: normalized field -> the deprecated venue field it comes from
    deprecated_normalized: dict[str, str]

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


@functools.cache
def kind_fields(kind: str) -> KindFields:
    """What venue kind `kind` sends (KeyError for an unknown kind)."""
    from monitor.venues.base import adapter_class  # imports the adapter: only when linting

    adapter = adapter_class(kind)
    schema = adapter.schema
    patterns: set[str] = set()
    for pattern in schema.types:
        parts = pattern.split(".")
        patterns.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    deprecated_normalized: dict[str, str] = {}
    for name, source in adapter.normalized_from.items():
        if name not in NORMALIZED_FIELDS:
            continue
        patterns.add(name)
        primary = source.split(",")[0].split(" else ")[0]
        path = ".".join(
            snake_case(p) for p in primary.replace("(deprecated)", "").strip().split(".")
        )
        if "(deprecated)" in primary or path in schema.deprecated:
            deprecated_normalized[name] = path
    return KindFields(
        kind=kind,
        patterns=frozenset(patterns),
        deprecated=frozenset(schema.deprecated),
        deprecated_normalized=deprecated_normalized,
    )


def _known_kinds() -> list[str]:
    from monitor.venues.base import known_kinds

    return known_kinds()


# ------------------------------------------------------------------------- lints


@dataclass(slots=True)
class _Read:
    """A field path a rule reads, and where (an expression's or template's text)."""

    path: str
    text: str
    where: Location | None


class _Linter:
    def __init__(self, venues: Sequence[tuple[str, str]] | None) -> None:
        self.venues = venues
        self.kinds = _known_kinds()
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
            close = difflib.get_close_matches(entry, [*self.kinds, *names], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
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
            known = kind_fields(kind)
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
        others = [k for k in self.kinds if k != kind and kind_fields(k).knows(read.path)]
        if others and not rule.venues:
            message += (
                f" ({' and '.join(others)} sends it: limit group {rule.group!r} with "
                f"venues: [{', '.join(others)}])"
            )
        self.warn(self.place(read, rule.location), message)

    def deprecated(self, rule: Rule, read: _Read, kind: str, source: str) -> None:
        behind = f" (from {source})" if source != read.path else ""
        intraday = (
            f"; for the intraday framework see {_INTRADAY}"
            if kind_fields(kind).knows(_INTRADAY) and read.path != _INTRADAY
            else ""
        )
        self.warn(
            self.place(read, rule.location),
            f"{read.path}{behind} is deprecated by {kind}: the FINRA pattern-day-trader rule "
            "was replaced by intraday margin in 2026 and venues are removing these fields; "
            "where the venue no longer sends it the field is missing, so this rule's "
            f"on_missing ({rule.on_missing}) decides{intraday}",
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


def lint_rules(rules: RuleSet, venues: Sequence[tuple[str, str]] | None = None) -> list[Problem]:
    """Warnings about rules against the venue kinds they apply to.

    `venues`: the config's (name, kind) pairs; None lints each rule against every known
    kind its group selects.
    """
    problems = _Linter(venues).lint(rules)
    return list(dict.fromkeys(problems))


# ------------------------------------------------------------------------- the command


def config_problems(
    config: Config,
    rules: RuleSet,
    rule_warnings: Sequence[Problem],
    places: ParamPlaces,
    *,
    unread: bool = True,
) -> list[Problem]:
    """What checking `rules` against `config` finds beside the errors of loading them:
    the rule files' warnings, the lints against the config's venues, and the errors of
    the account params (`params_check`). A param without a default is no warning here:
    the accounts that lack it are errors, and where every account sets it all is well.
    `unread`: see `check_account_params`."""
    venues = [(venue.name, venue.kind) for venue in config.venues]
    problems = [w for w in rule_warnings if not isinstance(w, NoDefaultWarning)]
    problems += lint_rules(rules, venues)
    problems += check_account_params(config, rules, places, unread=unread)
    return problems


def run_check(
    config_path: str | None,
    rule_files: Sequence[str],
    out: TextIO,
    err: TextIO,
    *,
    strict: bool = False,
) -> int:
    """`riskmon check [-c FILE] [--strict] [RULEFILE...]`: 0 clean or warnings only (with
    `strict`: clean only), 1 otherwise.

    With rule files, checks just those (against the config's venues and accounts when
    `-c` is given too); otherwise loads the config (default riskmon.yaml) and checks its
    rule files and its account params against them.
    """
    from monitor.config import load_config

    problems: list[Problem] = []
    config: Config | None = None
    files: list[str | Path] = []
    order: list[str] = []
    if config_path is not None or not rule_files:
        path = config_path or DEFAULT_CONFIG
        order.append(path)
        try:
            config = load_config(path)
        except SourceError as exc:
            from monitor.pagerduty.check import pagerduty_config_hint

            hint = pagerduty_config_hint(path)  # its errors would all be beside the point
            problems.extend(exc.problems if hint is None else [hint])
        else:
            if not rule_files:
                files.extend(_config_rule_files(config.rules, config.document, problems))
    for name in rule_files:
        if any(ch in name for ch in "*?["):
            files.extend(expand_rule_globs([name], warnings=problems))
        else:
            files.append(name)
    loaded = load_rules_partial(files)
    problems.extend(loaded.errors)
    if config is None:
        problems.extend(loaded.warnings)
        problems.extend(lint_rules(loaded.rules, None))
    else:
        # "no rule reads it" needs every rule of the config, loaded
        whole = not rule_files and not loaded.errors
        places = ParamPlaces(config, config.document)
        problems.extend(
            config_problems(config, loaded.rules, loaded.warnings, places, unread=whole)
        )
    order.extend(str(f) for f in files)
    rank = {name: i for i, name in reversed(list(enumerate(order)))}
    problems = sorted(
        dict.fromkeys(problems),
        key=lambda p: (rank.get(p.location.file, len(rank)), p.location.line, p.location.col),
    )
    for problem in problems:
        print(problem, file=out)
    if config is not None:
        print_budgets(config, out)
    errors = sum(p.severity != "warning" for p in problems)
    warnings = len(problems) - errors
    if problems:
        print(f"{_count(errors, 'error')}, {_count(warnings, 'warning')}", file=out)
    else:
        rules = len(loaded.rules.rules)
        print(f"ok: {_count(rules, 'rule')} in {_count(len(loaded.rules.files), 'file')}", file=out)
    if config_path is None and not rule_files and not Path(DEFAULT_CONFIG).exists():
        print(
            f"riskmon check: no {DEFAULT_CONFIG} here; give a config with -c FILE "
            "or the rule files to check",
            file=err,
        )
    if strict and warnings and not errors:
        print("riskmon check: --strict: warnings count as errors", file=err)
    return 1 if errors or (strict and warnings) else 0


def print_budgets(config: Config, out: TextIO) -> None:
    """The request budget against the accounts of each venue where it binds: the
    accounts do not all fit at poll_interval, or discovery adds an unknown number (SPEC
    "Polling under a request budget"). `load_config` has already erred where even
    max_poll_interval is missed; a venue with room to spare is not worth a line."""
    from monitor.schedule import BudgetArithmetic

    for venue in config.venues:
        numbers = BudgetArithmetic(
            venue.name,
            len(venue.accounts),
            venue.discovery is not None,
            venue.max_requests_per_second,
            venue.poll_interval,
            venue.max_poll_interval,
        )
        if numbers.discovery or numbers.cycle > numbers.poll_interval:
            print(numbers.describe(), file=out)


def _config_rule_files(
    patterns: Sequence[str], document: YamlDocument | None, problems: list[Problem]
) -> list[Path]:
    locations: list[Location] | None = None
    if document is not None:
        raw = document.value.get("rules") if isinstance(document.value, dict) else None
        if isinstance(raw, list) and len(raw) == len(patterns):
            locations = [document.at(("rules", i)) for i in range(len(patterns))]
    return expand_rule_globs(patterns, locations=locations, warnings=problems)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
