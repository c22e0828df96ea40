"""Rule files that reload themselves: on demand (SIGHUP) and when a file changes.

A new rule set is taken whole or not at all: if any file has an error (or the daemon's
`validate`, the checks against its config, finds one), the running rules stay, the
reload is reported failed (with every problem's location) and
`riskmon_config_last_reload_successful` drops to 0 until a good set loads.

Reading and compiling rule files takes long with many rules (YAML, expressions, Jinja2
templates): a running daemon does it in a thread (`reload_in_thread`), so that polls
and /healthz go on meanwhile. The thread only reads files and builds a new, unshared
rule set; what it found is taken in (the RuleSource's own state changed) back on the
event loop. Every warning is logged (`check warning`) each time a set is taken in.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from monitor.engine.model import RuleSet
from monitor.engine.rulefile import expand_rule_globs, load_rules
from monitor.yamlsource import Problem, SourceError

log = structlog.get_logger("riskmon.rules")

Stamp = tuple[int, int, int]  # inode, size, mtime in ns
#: Checks a loaded rule set against what it runs on (the daemon's config): given the
#: rules and the rule files' warnings, every problem (warnings, and errors that refuse
#: the set). Runs where the files are compiled: in a thread while the daemon runs.
Validate = Callable[[RuleSet, list[Problem]], list[Problem]]


@dataclass(frozen=True, slots=True)
class _Compiled:
    """What reading the rule files found: the rules, or the problems that refuse them."""

    stamps: dict[Path, Stamp]
    rules: RuleSet | None
    warnings: list[Problem]
    problems: list[Problem]


@dataclass(slots=True)
class ReloadStatus:
    successful: bool = True
    last_attempt: float | None = None
    last_success: float | None = None
    problems: list[Problem] = field(default_factory=list)  # of the last failed attempt
    warnings: list[Problem] = field(default_factory=list)


class RuleSource:
    """The rule files a set of glob patterns names, and whether they changed on disk."""

    def __init__(
        self,
        patterns: Sequence[str],
        *,
        clock: Callable[[], float] = time.time,
        validate: Validate | None = None,
    ) -> None:
        self.patterns = tuple(patterns)
        self.clock = clock
        self.validate = validate
        self.rules = RuleSet()
        self.status = ReloadStatus()
        self._stamps: dict[Path, Stamp] = {}

    def _scan(self) -> dict[Path, Stamp]:
        stamps = {}
        for path in expand_rule_globs(self.patterns):
            try:
                st = os.stat(path)
            except OSError:
                continue
            stamps[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
        return stamps

    def changed(self) -> bool:
        """Whether a rule file appeared, vanished or changed since the last load."""
        return self._scan() != self._stamps

    def _compile(self) -> _Compiled:
        """Read and compile every file; changes nothing (it may run in a thread)."""
        stamps = self._scan()
        unmatched: list[Problem] = []  # patterns that match no file
        try:
            rules, warnings = load_rules(expand_rule_globs(self.patterns, warnings=unmatched))
        except SourceError as exc:
            return _Compiled(stamps, None, [], exc.problems)
        problems = unmatched + warnings
        if self.validate is not None:
            problems = self.validate(rules, problems)
            errors = [p for p in problems if p.severity != "warning"]
            if errors:
                return _Compiled(stamps, None, [], errors)
        return _Compiled(stamps, rules, problems, [])

    def load(self) -> RuleSet:
        """Load every file now; raise SourceError (and keep the old set) on any error."""
        return self._take(self._compile(), self.clock())

    async def load_in_thread(self) -> RuleSet:
        """`load()`, with the files read and compiled in a thread (off the event loop)."""
        attempted = self.clock()
        return self._take(await asyncio.to_thread(self._compile), attempted)

    def _take(self, compiled: _Compiled, attempted: float) -> RuleSet:
        """The compiled rules become the running ones; SourceError when they failed."""
        self.status.last_attempt = attempted
        self._stamps = compiled.stamps  # a broken set is not retried until it changes
        if compiled.rules is None:
            self.status.successful = False
            self.status.problems = compiled.problems
            raise SourceError(compiled.problems)
        rules = self.rules = compiled.rules
        self.status = ReloadStatus(
            successful=True,
            last_attempt=attempted,
            last_success=attempted,
            warnings=compiled.warnings,
        )
        for warning in self.status.warnings:  # at start and at every reload, as check does
            log.warning("check warning", problem=str(warning))
        if not rules.rules:
            # Allowed (a shard may have only the built-in alerts), but far more often a
            # wrong glob: say so loudly, at start and at every reload.
            log.warning(
                "no rules loaded: nothing is being evaluated",
                patterns=list(self.patterns),
                files=len(compiled.stamps),
                warnings=[str(w) for w in self.status.warnings],
            )
        return rules

    def reload(self) -> RuleSet | None:
        """Try a reload; the new set, or None when it failed (the old set stays)."""
        try:
            rules = self.load()
        except SourceError as exc:
            self._reload_failed(exc)
            return None
        return self._reload_worked(rules)

    async def reload_in_thread(self) -> RuleSet | None:
        """`reload()`, compiling in a thread (`load_in_thread`)."""
        try:
            rules = await self.load_in_thread()
        except SourceError as exc:
            self._reload_failed(exc)
            return None
        return self._reload_worked(rules)

    def _reload_failed(self, exc: SourceError) -> None:
        log.error(
            "rule reload failed; the running rules stay",
            problems=[str(p) for p in exc.problems],
        )

    def _reload_worked(self, rules: RuleSet) -> RuleSet:
        log.info(
            "rules loaded",
            files=len(self._stamps),
            rules=len(rules.rules),
            warnings=[str(w) for w in self.status.warnings],
        )
        return rules
