"""Rule files: YAML groups of alerting rules, checked with `path:line:col` and compiled.

    groups:
      - name: capital
        venues: [clearstreet]            # optional: venue kinds or names
        labels: {team: risk}
        rules:
          - alert: BuyingPowerBelowFloor
            expr: buying_power < params.buying_power_floor
            clear: buying_power >= params.buying_power_floor * 1.05
            for: 30s
            keep_firing_for: 0s
            severity: critical           # critical | error | warning | info
            params: {buying_power_floor: 25000}
            on_missing: keep             # keep | resolve | fire
            labels: {page: "true"}
            annotations:
              summary: "{{ account }} buying power {{ buying_power }} below floor"

`load_rules` reads files into a `RuleSet` and raises one SourceError listing every
error of every file (a param default that is not a number where the rule uses it as
one, too); warnings (a `params.x` without a default, with the default it may have
meant; a glob matching nothing) never stop a load and are returned beside it. Every
message points at the line and column of the offending text, inside expressions and
templates too.
"""

from __future__ import annotations

import bisect
import difflib
import glob
import io
import math
import os
import re
import tokenize
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TypeVar

from monitor import schema
from monitor.config.checking import Checker
from monitor.engine.builtin import BUILTIN_ALERTNAMES
from monitor.engine.expr import CompiledExpr, compile_expression, param_uses
from monitor.engine.model import (
    ON_MISSING,
    SEVERITIES,
    InhibitRule,
    Rule,
    RuleGroup,
    RuleSet,
)
from monitor.engine.templates import CompiledTemplate, compile_template
from monitor.yamlsource import (
    KeyPath,
    Location,
    Problem,
    SourceError,
    YamlDocument,
    parse_yaml,
    read_source,
)

__all__ = [
    "IDENTITY_FIELDS",
    "RESERVED_LABELS",
    "LoadedRules",
    "NoDefaultWarning",
    "expand_rule_globs",
    "find_field",
    "load_rules",
    "load_rules_partial",
    "parse_rules",
    "place_in_text",
    "split_lines",
]

#: Labels riskmon sets itself on every alert.
RESERVED_LABELS: Final = frozenset({"alertname", "venue", "account", "severity"})
#: Fields that never change for an account: all a label template may read (plus
#: `labels.*` and `params.*`).
IDENTITY_FIELDS: Final = frozenset({"venue", "venue_kind", "account", "currency"})

_TOP_KEYS: Final = ("groups", "inhibit_rules")
_INHIBIT_KEYS: Final = ("source_matchers", "target_matchers", "equal")
_GROUP_KEYS: Final = ("name", "venues", "labels", "rules")
_RULE_KEYS: Final = (
    "alert",
    "expr",
    "clear",
    "for",
    "keep_firing_for",
    "severity",
    "params",
    "on_missing",
    "labels",
    "annotations",
)
_ALERT_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SKIPPABLE: Final = " \t\n\\'\""  # what may stand between a value's characters in the file
_MAX_SKIP: Final = 256
_T = TypeVar("_T", bound=str)


# ------------------------------------------------------------------------- public API


def load_rules(paths: Sequence[str | Path]) -> tuple[RuleSet, list[Problem]]:
    """Read, check and compile rule files: the RuleSet and the warnings.

    Raises SourceError with every error of every file (each file is checked fully, so
    one run shows all mistakes). A file listed twice is read once.
    """
    loaded = load_rules_partial(paths)
    if loaded.errors:
        raise SourceError(loaded.errors)
    return loaded.rules, loaded.warnings


def parse_rules(text: str, file: str, *, warnings: list[Problem] | None = None) -> list[RuleGroup]:
    """The groups of one rule file's text; SourceError listing all its errors.

    Warnings are appended to `warnings` when given.
    """
    parser = _FileParser(text, file)
    groups = parser.parse()
    if warnings is not None:
        warnings.extend(_sorted(parser.warnings))
    if parser.errors:
        raise SourceError(_sorted(parser.errors))
    return groups


def expand_rule_globs(
    patterns: Sequence[str | Path],
    *,
    locations: Sequence[Location] | None = None,
    warnings: list[Problem] | None = None,
) -> list[Path]:
    """The files the patterns match, sorted, each once.

    A pattern that matches no file is a warning (appended to `warnings`), placed at
    `locations[i]` when given (the config's `rules:` entry), else at the pattern itself.
    """
    found: dict[str, Path] = {}
    for index, pattern in enumerate(patterns):
        text = str(pattern)
        if glob.has_magic(text):
            matches = [m for m in glob.glob(os.path.expanduser(text), recursive=True)]
        else:
            matches = [os.path.expanduser(text)]
        files = [m for m in matches if os.path.isfile(m)]
        if not files and warnings is not None:
            where = (
                locations[index]
                if locations is not None and index < len(locations)
                else Location(text, 1, 1)
            )
            warnings.append(Problem(where, f"no rule file matches {text!r}", "warning"))
        for match in files:
            found.setdefault(os.path.normpath(match), Path(os.path.normpath(match)))
    return [found[key] for key in sorted(found)]


@dataclass(slots=True)
class LoadedRules:
    """What `load_rules_partial` could build, with every problem found on the way."""

    rules: RuleSet
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def load_rules_partial(paths: Sequence[str | Path]) -> LoadedRules:
    """Like `load_rules`, but never raises: the groups and rules that are valid, and the
    problems. `riskmon check` lints what loaded while reporting what did not."""
    groups: list[RuleGroup] = []
    inhibit_rules: list[InhibitRule] = []
    files: list[str] = []
    errors: list[Problem] = []
    warnings: list[Problem] = []
    first_group: dict[str, Location] = {}
    seen_files: set[str] = set()
    for path in paths:
        name = str(path)
        key = os.path.normpath(os.path.abspath(name))
        if key in seen_files:
            continue
        seen_files.add(key)
        files.append(name)
        file_errors: list[Problem] = []
        try:
            text = read_source(name)
            parser = _FileParser(text, name)
        except SourceError as exc:
            errors.extend(exc.problems)
            continue
        built = parser.parse()
        inhibit_rules.extend(parser.inhibit_rules)
        taken: set[str] = set()
        for group_name, where in parser.group_names.items():  # groups with errors too
            first = first_group.get(group_name)
            if first is not None:
                taken.add(group_name)
                file_errors.append(
                    Problem(where, f"duplicate group name {group_name!r} (first at {first})")
                )
            else:
                first_group[group_name] = where
        groups.extend(group for group in built if group.name not in taken)
        errors.extend(_sorted([*parser.errors, *file_errors]))
        warnings.extend(_sorted(parser.warnings))
    warnings.extend(_unknown_alertnames(inhibit_rules, groups))
    rules = RuleSet(tuple(groups), tuple(files), tuple(inhibit_rules))
    return LoadedRules(rules, errors, warnings)


def _unknown_alertnames(
    inhibit_rules: Sequence[InhibitRule], groups: Sequence[RuleGroup]
) -> list[Problem]:
    """Warnings for inhibit rules whose `alertname="..."` names no alert of the loaded
    rule files nor a built-in one: a typo there silently never inhibits."""
    known = {rule.alert for group in groups for rule in group.rules} | BUILTIN_ALERTNAMES
    found: list[Problem] = []
    for inhibit in inhibit_rules:
        for side, matchers in (("source", inhibit.source), ("target", inhibit.target)):
            for matcher in matchers:
                if matcher.name != "alertname" or matcher.op != "=" or matcher.value in known:
                    continue
                close = difflib.get_close_matches(matcher.value, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                found.append(
                    Problem(
                        inhibit.location or Location("<inhibit_rules>", 1, 1),
                        f"inhibit rule: {side} alertname {matcher.value!r} is no alert of "
                        f"these rule files nor a built-in one{hint}",
                        "warning",
                    )
                )
    return found


# ------------------------------------------------------------------------- reading


def _sorted(problems: Iterable[Problem]) -> list[Problem]:
    unique = dict.fromkeys(problems)  # an alias repeats its anchor's problems
    return sorted(unique, key=lambda p: (p.location.line, p.location.col))


class _Placed:
    """Where each character of a scalar's value stands in the file.

    PyYAML records where a scalar node starts (its quote, its `|`, or an `&anchor`);
    expressions and templates need the place of a character inside the value. Plain
    one-line values map directly; quoted, folded and block values are aligned with the
    file's text, skipping indentation, line breaks, quotes and escapes.
    """

    __slots__ = ("_aligned", "_fallback", "_file", "_indent", "_lines", "_start", "_value", "style")

    def __init__(
        self, file: str, lines: Sequence[str], loc: Location, value: str, *, at_text: bool = False
    ) -> None:
        self._file = file
        self._lines = lines
        self._value = value
        self._fallback = loc
        self._aligned: list[Location] | None = None
        self._start: tuple[int, int] | None = None  # 0-based line and column of the text
        self._indent = 0
        #: how the scalar is written: plain, quoted, literal (|), folded (>); None: unknown
        self.style: str | None = None
        li, ci = loc.line - 1, loc.col - 1
        if not 0 <= li < len(lines):
            return
        line = lines[li]
        props = None if at_text else schema.PROPERTIES.match(line, ci)
        if props:
            ci = props.end()
        first = line[ci : ci + 1]
        if at_text:  # `loc` is where the text itself starts, whatever the style
            self.style = "text"
        elif first in ("'", '"'):
            self.style, ci = "quoted", ci + 1
        elif first in ("|", ">"):
            self.style = "literal" if first == "|" else "folded"
            li, ci = li + 1, 0  # a block scalar's text starts on the next line
            body = (text for text in lines[li:] if text.strip())
            content = next(body, "")
            self._indent = len(content) - len(content.lstrip(" "))
        else:
            self.style = "plain"
        self._start = (li, ci)
        if "\n" not in value and line.startswith(value, ci) and self.style != "literal":
            self._aligned = []  # direct: no alignment needed

    def at(self, offset: int) -> Location:
        """The place of character `offset` of the value (its end for len(value))."""
        if self._start is None:
            return self._fallback
        li, ci = self._start
        offset = max(0, min(offset, len(self._value)))
        if self._aligned == []:
            return Location(self._file, li + 1, ci + 1 + offset)
        if self.style == "literal":  # line k of the value is line k of the block, indented
            k = self._value.count("\n", 0, offset)
            column = offset - (self._value.rfind("\n", 0, offset) + 1)
            return Location(self._file, li + k + 1, self._indent + column + 1)
        if self._aligned is None:
            self._aligned = self._align(li, ci)
        if not self._aligned:
            return self._fallback
        return self._aligned[min(offset, len(self._aligned) - 1)]

    def _align(self, li: int, ci: int) -> list[Location]:
        lines = self._lines[li : li + self._value.count("\n") + 2 + len(self._value) // 2]
        raw = "\n".join(lines)
        starts = [0]
        for line in lines[:-1]:
            starts.append(starts[-1] + len(line) + 1)
        offsets: list[int] = []
        p = ci
        for ch in self._value:
            if ch in " \t\n":
                offsets.append(p)
                if p < len(raw) and raw[p] in " \t\n":
                    p += 1
                continue
            q = raw.find(ch, p, p + _MAX_SKIP)
            if q < 0 or raw[p:q].strip(_SKIPPABLE):
                break  # an escape we do not follow: later characters map to here
            offsets.append(q)
            p = q + 1
        offsets.append(p)

        def place(offset: int) -> Location:
            k = bisect.bisect_right(starts, offset) - 1
            return Location(self._file, li + k + 1, offset - starts[k] + 1)

        return [place(o) for o in offsets]


def place_in_text(lines: Sequence[str], where: Location, text: str, offset: int) -> Location:
    """Where character `offset` of an expression or template that starts at `where`
    (its `.where`) stands in a file whose lines are `lines`."""
    return _Placed(where.file, lines, where, text, at_text=True).at(offset)


def split_lines(text: str) -> list[str]:
    """A file's lines as YAML counts them (for `place_in_text`)."""
    return schema.split_lines(text)


def find_field(text: str, path: str) -> int:
    """Where a dotted path is written in an expression or template (0 if not found)."""
    parts = [re.escape(p) for p in path.split(".")]
    pattern = r"\s*(?:\.\s*|\[\s*['\"]?)".join(parts)
    m = re.search(rf"(?<![\w.]){pattern}(?!\w)", text)
    return m.start() if m else 0


def _relocate(
    problems: Iterable[Problem], where: Location, text: str, placed: _Placed, shift: int = 0
) -> list[Problem]:
    """Problems located from `where` (as compile_expression/compile_template place them)
    moved to the true place of that character in the file."""
    lines = text.split("\n")
    out = []
    for problem in problems:
        loc = problem.location
        if loc.file != where.file:
            out.append(problem)
            continue
        n = loc.line - where.line + 1
        column = loc.col - where.col if n == 1 else loc.col - 1
        if not 1 <= n <= len(lines):
            out.append(problem)
            continue
        offset = sum(len(line) + 1 for line in lines[: n - 1]) + max(column, 0) - shift
        out.append(Problem(placed.at(offset), problem.message, problem.severity))
    return out


def _describe(value: Any) -> str:
    """A value as a person would recognise it from the YAML."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _suggest(word: str, choices: Collection[str]) -> str:
    return schema.did_you_mean(word.lower(), choices)


# ------------------------------------------------------------------------- the parser


@dataclass(slots=True)
class _Compiled:
    """A compiled expression or template and where its text stands."""

    text: str
    placed: _Placed


class _FileParser:
    def __init__(self, text: str, file: str) -> None:
        self.file = file
        self.text = text
        self.lines = schema.split_lines(text)
        self.inhibit_rules: list[InhibitRule] = []
        self.doc: YamlDocument = parse_yaml(text, file)  # SourceError on invalid YAML
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []
        #: every group's name (those with errors too) and where it stands
        self.group_names: dict[str, Location] = {}

    # -- reporting -------------------------------------------------------------------

    def error(self, path: KeyPath, message: str, *, key: bool = False) -> None:
        self.errors.append(self.doc.problem(path, message, key=key))

    def error_at(self, loc: Location, message: str) -> None:
        self.errors.append(Problem(loc, message))

    def warn_at(self, loc: Location, message: str) -> None:
        self.warnings.append(Problem(loc, message, "warning"))

    def placed(self, path: KeyPath, value: str) -> _Placed:
        return _Placed(self.file, self.lines, self.doc.at(path), value)

    # -- structure ---------------------------------------------------------------------

    def mapping(
        self,
        path: KeyPath,
        value: Any,
        where: str,
        known: Sequence[str],
        required: Sequence[str] = (),
    ) -> dict[str, Any] | None:
        """A mapping with its unknown keys reported (and dropped) and required ones checked."""
        if not isinstance(value, dict):
            self.error(path, f"{where}: expected a mapping, got {_describe(value)}")
            return None
        for key in value:
            if key in known:
                continue
            hint = schema.did_you_mean(key, known) or f" (known keys: {', '.join(known)})"
            self.error((*path, key), f"unknown key {key!r} in {where}{hint}", key=True)
        for key in required:
            if key not in value:
                self.error(path, f"missing required key {key!r} in {where}")
        return {k: v for k, v in value.items() if k in known}

    def parse(self) -> list[RuleGroup]:
        value = self.doc.value
        if value is None:
            self.warn_at(Location(self.file, 1, 1), "empty rule file: no groups")
            return []
        top = self.mapping(
            (),
            value,
            "the rule file",
            _TOP_KEYS,
            () if isinstance(value, dict) and "inhibit_rules" in value else ("groups",),
        )
        if top is not None and "inhibit_rules" in top:
            self.inhibit_rules = self.inhibitions(("inhibit_rules",), top["inhibit_rules"])
        if top is None or "groups" not in top:
            return []
        groups = top["groups"]
        if groups is None:
            return []
        if not isinstance(groups, list):
            self.error(
                ("groups",),
                f"groups: expected a list of groups (- name: ...), got {_describe(groups)}",
            )
            return []
        built: list[RuleGroup] = []
        for index, item in enumerate(groups):
            group = self.group(("groups", index), item)
            if group is not None:
                built.append(group)
        return built

    def inhibitions(self, path: KeyPath, value: Any) -> list[InhibitRule]:
        """`inhibit_rules`: Alertmanager's `source_matchers`, `target_matchers`, `equal`."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(
                path,
                "inhibit_rules: expected a list (- source_matchers: [...]), "
                f"got {_describe(value)}",
            )
            return []
        checker = Checker(self.doc, self.text, Path(self.file).parent, {}, expand_env=False)
        built: list[InhibitRule] = []
        for index, item in enumerate(value):
            where = (*path, index)
            data = self.mapping(
                where,
                item,
                f"inhibit rule {index + 1}",
                _INHIBIT_KEYS,
                ("source_matchers", "target_matchers"),
            )
            if data is None:
                continue
            sides: list[tuple[schema.Matcher, ...]] = []
            for key in ("source_matchers", "target_matchers"):
                raw = data.get(key)
                if not isinstance(raw, list) or not raw:
                    if key in data:
                        self.error(
                            (*where, key),
                            f"{key}: expected a list of label matchers such as "
                            f"['alertname=\"VenueDown\"'], got {_describe(raw)}",
                        )
                    sides.append(())
                    continue
                found = [checker.matcher((*where, key, i), text) for i, text in enumerate(raw)]
                sides.append(tuple(m for m in found if m is not None))
            equal = data.get("equal", [])
            names: list[str] = []
            if not isinstance(equal, list):
                self.error(
                    (*where, "equal"),
                    f"equal: expected a list of label names, got {_describe(equal)}",
                )
            else:
                for i, name in enumerate(equal):
                    if not isinstance(name, str) or not schema.LABEL_NAME.fullmatch(name):
                        self.error(
                            (*where, "equal", i),
                            f"equal: {_describe(name)} is not a label name "
                            "(letters, digits and _, not starting with a digit)",
                        )
                    else:
                        names.append(name)
            built.append(InhibitRule(sides[0], sides[1], tuple(names), self.doc.at(where)))
        self.errors.extend(checker.problems)
        return [rule for rule in built if rule.source and rule.target]

    def group(self, path: KeyPath, value: Any) -> RuleGroup | None:
        raw_name = value.get("name") if isinstance(value, dict) else None
        where = f"group {raw_name!r}" if isinstance(raw_name, str) else f"group {_position(path)}"
        data = self.mapping(path, value, where, _GROUP_KEYS, ("name", "rules"))
        if data is None:
            return None
        before = len(self.errors)
        name = self.group_name((*path, "name"), data) if "name" in data else None
        venues = self.venues((*path, "venues"), data.get("venues", []))
        labels = self.labels((*path, "labels"), data.get("labels", {}))
        rules: list[Rule] = []
        alerts: dict[str, Location] = {}
        raw_rules = data.get("rules")
        if "rules" in data and not isinstance(raw_rules, list):
            self.error(
                (*path, "rules"),
                f"rules: expected a list of rules (- alert: ...), got {_describe(raw_rules)}",
            )
        elif isinstance(raw_rules, list):
            for index, item in enumerate(raw_rules):
                rule = self.rule(
                    (*path, "rules", index), item, name or "", alerts, venues or (), labels
                )
                if rule is not None:
                    rules.append(rule)
        location = self.doc.key_at((*path, "name"))
        if name is None or labels is None or venues is None:
            return None
        if len(self.errors) > before and not rules:
            return None
        return RuleGroup(
            name=name,
            file=self.file,
            location=location,
            rules=tuple(rules),
            venues=venues,
            labels={k: t.source for k, (t, _) in labels.items()},
        )

    def group_name(self, path: KeyPath, data: Mapping[str, Any]) -> str | None:
        value = data["name"]
        if not isinstance(value, str) or not value.strip():
            self.error(path, f"name: expected the group's name as text, got {_describe(value)}")
            return None
        first = self.group_names.get(value)
        here = self.doc.key_at(path)
        if first is not None:
            self.error_at(here, f"duplicate group name {value!r} (first at line {first.line})")
            return None
        self.group_names[value] = here
        return value

    def venues(self, path: KeyPath, value: Any) -> tuple[str, ...] | None:
        if not isinstance(value, list):
            self.error(
                path,
                "venues: expected a list of venue kinds or names such as [clearstreet], "
                f"got {_describe(value)}",
            )
            return None
        result: list[str] = []
        ok = True
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.error(
                    (*path, index),
                    f"venues[{index}]: expected a venue kind or name, got {_describe(item)}",
                )
                ok = False
            else:
                result.append(item)
        return tuple(dict.fromkeys(result)) if ok else None

    # -- rules ---------------------------------------------------------------------------

    def rule(
        self,
        path: KeyPath,
        value: Any,
        group: str,
        alerts: dict[str, Location],
        venues: tuple[str, ...],
        group_labels: Mapping[str, tuple[CompiledTemplate, _Compiled]] | None,
    ) -> Rule | None:
        raw_alert = value.get("alert") if isinstance(value, dict) else None
        where = f"rule {raw_alert!r}" if isinstance(raw_alert, str) else f"rule {_position(path)}"
        data = self.mapping(path, value, where, _RULE_KEYS, ("alert", "expr"))
        if data is None:
            return None
        before = len(self.errors)
        alert = (
            self.alert_name((*path, "alert"), data["alert"], alerts) if "alert" in data else None
        )
        expr = self.condition((*path, "expr"), data["expr"], "expr") if "expr" in data else None
        clear = (
            self.condition((*path, "clear"), data["clear"], "clear") if "clear" in data else None
        )
        for_ = self.duration((*path, "for"), data.get("for", "0s"), "for")
        keep = self.duration(
            (*path, "keep_firing_for"), data.get("keep_firing_for", "0s"), "keep_firing_for"
        )
        severity = self.choice((*path, "severity"), data.get("severity", "warning"), SEVERITIES)
        on_missing = self.choice((*path, "on_missing"), data.get("on_missing", "keep"), ON_MISSING)
        params = self.params((*path, "params"), data.get("params", {}))
        labels = self.labels((*path, "labels"), data.get("labels", {}))
        annotations = self.annotations((*path, "annotations"), data.get("annotations", {}))
        if params is not None:
            self.check_params((*path, "params"), params, expr, clear, labels, annotations)
        if (
            len(self.errors) > before
            or alert is None
            or expr is None
            or for_ is None
            or keep is None
            or severity is None
            or on_missing is None
            or params is None
            or labels is None
            or annotations is None
            or group_labels is None
        ):
            return None
        return Rule(
            alert=alert,
            expr=expr[0],
            group=group,
            file=self.file,
            location=self.doc.key_at((*path, "alert")),
            clear=clear[0] if clear is not None else None,
            for_=for_,
            keep_firing_for=keep,
            severity=severity,
            on_missing=on_missing,
            params=params,
            labels={k: t for k, (t, _) in {**group_labels, **labels}.items()},
            annotations={k: t for k, (t, _) in annotations.items()},
            venues=venues,
        )

    def alert_name(self, path: KeyPath, value: Any, seen: dict[str, Location]) -> str | None:
        if not isinstance(value, str) or not _ALERT_NAME.fullmatch(value):
            self.error(
                path,
                f"alert: invalid alert name {_describe(value)}: use letters, digits and _, "
                "not starting with a digit (e.g. BuyingPowerBelowFloor)",
            )
            return None
        first = seen.get(value)
        if first is not None:
            self.error(
                path, f"duplicate alert name {value!r} in this group (first at line {first.line})"
            )
            return None
        seen[value] = self.doc.at(path)
        return value

    def condition(
        self, path: KeyPath, value: Any, key: str
    ) -> tuple[CompiledExpr, _Compiled] | None:
        if not isinstance(value, str) or not value.strip():
            hint = ' (write it as text, e.g. "True")' if isinstance(value, bool) else ""
            self.error(path, f"{key}: expected an expression, got {_describe(value)}{hint}")
            return None
        placed = self.placed(path, value)
        where = placed.at(0)
        text, shift = value, 0
        if "\n" in value.strip("\n"):  # line breaks end an expression unless in parentheses
            text, shift = f"({value}\n)", 1
        compile_at = Location(where.file, where.line, where.col - shift)
        try:
            compiled = compile_expression(text, where=compile_at)
        except SourceError as exc:
            self.errors.extend(_relocate(exc.problems, compile_at, text, placed, shift))
            return None
        if shift:  # show and locate it as written
            compiled.source, compiled.where = value, where
        hidden = _hiding_comment(value, placed)
        if hidden is not None:
            self.error_at(
                placed.at(hidden),
                "this # comment hides the rest of the expression: YAML joins the lines of a "
                "folded (>) or plain multi-line value into one line; use a literal block "
                f"({key}: |)",
            )
            return None
        if compiled.kind not in ("bool", "any"):
            what = {"number": "a number", "string": "text", "none": "None"}.get(
                compiled.kind, compiled.kind
            )
            example = ""
            if compiled.kind == "number":
                example = f"; compare it, e.g. `{' '.join(value.split())[:60]} > 0`"
            self.error_at(
                where, f"{key} must be a condition (true/false), but this is {what}{example}"
            )
            return None
        return compiled, _Compiled(value, placed)

    def duration(self, path: KeyPath, value: Any, key: str) -> float | None:
        try:
            return schema.duration(value, allow_zero=True)
        except schema.Invalid as exc:
            self.error(path, f"{key}: {exc}")
            return None

    def choice(self, path: KeyPath, value: Any, choices: Sequence[_T]) -> _T | None:
        key = str(path[-1])
        for choice in choices:
            if value == choice:
                return choice
        hint = _suggest(value, choices) if isinstance(value, str) else ""
        self.error(
            path,
            f"{key}: {_describe(value)} is not one of {', '.join(choices)}{hint}",
        )
        return None

    def params(self, path: KeyPath, value: Any) -> dict[str, schema.ParamValue] | None:
        if not isinstance(value, dict):
            self.error(
                path,
                "params: expected a mapping of name: value such as {buying_power_floor: 25000}, "
                f"got {_describe(value)}",
            )
            return None
        result: dict[str, schema.ParamValue] = {}
        ok = True
        for key, item in value.items():
            item_path = (*path, key)
            try:
                schema.param_name(key)
            except schema.Invalid as exc:
                self.error(item_path, str(exc), key=True)
                ok = False
                continue
            try:
                result[key] = schema.param_value(item, written=self._written(item_path))
            except schema.Invalid as exc:
                self.error(item_path, f"params.{key}: {exc}")
                ok = False
        return result if ok else None

    def exact(self, path: KeyPath, value: float) -> Decimal:
        """The number as written in the file (0.1 stays 0.1), else via repr()."""
        return schema.written_number(self.lines, self.doc.at(path), value)

    def _written(self, path: KeyPath) -> Callable[[float], Decimal]:
        return lambda value: self.exact(path, value)

    def labels(
        self, path: KeyPath, value: Any
    ) -> dict[str, tuple[CompiledTemplate, _Compiled]] | None:
        entries, ok = self.templates(path, value, "labels", '{page: "true"}')
        result: dict[str, tuple[CompiledTemplate, _Compiled]] = {}
        for name, (template, text) in entries.items():
            if name in RESERVED_LABELS:
                self.error(
                    (*path, name),
                    f"label {name!r} is reserved: riskmon sets alertname, venue, account and "
                    "severity itself",
                    key=True,
                )
                ok = False
                continue
            changing = sorted(f for f in template.fields if not _is_identity(f))
            if changing:
                offset = find_field(text.text, changing[0])
                self.error_at(
                    text.placed.at(offset),
                    "label values must not change between evaluations; move "
                    f"{{{{ {changing[0]} }}}} to an annotation",
                )
                ok = False
                continue
            result[name] = (template, text)
        return result if ok else None

    def annotations(
        self, path: KeyPath, value: Any
    ) -> dict[str, tuple[CompiledTemplate, _Compiled]] | None:
        entries, ok = self.templates(path, value, "annotations", "{summary: ...}")
        return entries if ok else None

    def templates(
        self, path: KeyPath, value: Any, key: str, example: str
    ) -> tuple[dict[str, tuple[CompiledTemplate, _Compiled]], bool]:
        """The valid entries of a labels or annotations mapping, and whether all were."""
        if not isinstance(value, dict):
            self.error(
                path,
                f"{key}: expected a mapping of name: text such as {example}, "
                f"got {_describe(value)}",
            )
            return {}, False
        result: dict[str, tuple[CompiledTemplate, _Compiled]] = {}
        ok = True
        for name, item in value.items():
            item_path = (*path, name)
            try:
                schema.label_name(name, what=key[:-1])
            except schema.Invalid as exc:
                self.error(item_path, str(exc), key=True)
                ok = False
                continue
            text = self.template_text(item_path, name, item, key[:-1])
            if text is None:
                ok = False
                continue
            placed = self.placed(item_path, text)
            where = placed.at(0)
            try:
                template = compile_template(text, where=where)
            except SourceError as exc:
                self.errors.extend(_relocate(exc.problems, where, text, placed))
                ok = False
                continue
            result[name] = (template, _Compiled(text, placed))
        return result, ok

    def template_text(self, path: KeyPath, name: str, value: Any, what: str) -> str | None:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, float) and math.isfinite(value):
            return format(self.exact(path, value), "f")
        hint = "; put it in quotes" if isinstance(value, bool) else ""
        self.error(path, f"{what} {name}: expected text, got {_describe(value)}{hint}")
        return None

    def check_params(
        self,
        path: KeyPath,
        params: Mapping[str, Any],
        expr: tuple[CompiledExpr, _Compiled] | None,
        clear: tuple[CompiledExpr, _Compiled] | None,
        labels: Mapping[str, tuple[CompiledTemplate, _Compiled]] | None,
        annotations: Mapping[str, tuple[CompiledTemplate, _Compiled]] | None,
    ) -> None:
        """Warn where a rule reads `params.x` that has no default in its `params` (with
        the default it may have meant); refuse a default that is not a number where the
        rule uses the param as one."""
        reads: list[tuple[frozenset[str], _Compiled]] = []
        numeric: set[str] = set()
        for compiled in (expr, clear):
            if compiled is not None:
                reads.append((compiled[0].fields, compiled[1]))
                numeric.update(name for name, used in param_uses(compiled[0]).items() if used)
        for templates in (labels, annotations):
            for template, text in (templates or {}).values():
                reads.append((template.fields, text))
        read_names = {
            field.partition(".")[2].partition(".")[0]
            for fields, _ in reads
            for field in fields
            if field.startswith("params.")
        }
        warned: set[str] = set()
        for fields, text in reads:
            for field_path in sorted(fields):
                head, _, rest = field_path.partition(".")
                name = rest.partition(".")[0]
                if head != "params" or not name or name in params or name in warned:
                    continue
                warned.add(name)
                unread = [default for default in params if default not in read_names]
                close = difflib.get_close_matches(name, unread, n=1, cutoff=0.7)
                hint = (
                    f"did you mean params.{close[0]}, a default of this rule? If not, accounts "
                    "must set it"
                    if close
                    else "accounts must set it"
                )
                self.warnings.append(
                    NoDefaultWarning(
                        text.placed.at(find_field(text.text, field_path)),
                        f"params.{name} has no default; {hint} "
                        f"(or add params: {{{name}: ...}} to the rule)",
                        "warning",
                    )
                )
        for name in sorted(numeric & params.keys()):
            value = params[name]
            if not schema.is_number(value):
                self.error(
                    (*path, name),
                    f"params.{name}: {_describe(value)} is not a number, but this rule "
                    "compares it with a number or computes with it",
                )


@dataclass(frozen=True, slots=True)
class NoDefaultWarning(Problem):
    """A rule reads `params.x` that has no default: a warning in a check of rule files
    alone; a check against a config replaces it by what the accounts set."""


def _hiding_comment(text: str, placed: _Placed) -> int | None:
    """The offset of a `#` comment that YAML line folding made swallow later lines."""
    if "#" not in text or placed.style == "literal":
        return None
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return None
    lines = text.split("\n")
    end_line = placed.at(len(text.rstrip())).line
    for token in tokens:
        if token.type == tokenize.COMMENT:
            row, col = token.start
            offset = sum(len(line) + 1 for line in lines[: row - 1]) + col
            if placed.at(offset).line != end_line:
                return offset
    return None


def _position(path: KeyPath) -> str:
    """`3` for the third item of a list (messages count from 1)."""
    last = path[-1] if path else 0
    return str(last + 1) if isinstance(last, int) else str(last)


def _is_identity(path: str) -> bool:
    head = path.partition(".")[0]
    return path in IDENTITY_FIELDS or head in ("labels", "params")
