"""Rule files that reload themselves: on demand (SIGHUP) and when a file changes.

A new rule set is taken whole or not at all: if any file has an error, the running
rules stay, the reload is reported failed (with every problem's location) and
`riskmon_config_last_reload_successful` drops to 0 until a good set loads.
"""

from __future__ import annotations

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


@dataclass(slots=True)
class ReloadStatus:
    successful: bool = True
    last_attempt: float | None = None
    last_success: float | None = None
    problems: list[Problem] = field(default_factory=list)  # of the last failed attempt
    warnings: list[Problem] = field(default_factory=list)


class RuleSource:
    """The rule files a set of glob patterns names, and whether they changed on disk."""

    def __init__(self, patterns: Sequence[str], *, clock: Callable[[], float] = time.time) -> None:
        self.patterns = tuple(patterns)
        self.clock = clock
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

    def load(self) -> RuleSet:
        """Load every file now; raise SourceError (and keep the old set) on any error."""
        stamps = self._scan()
        self.status.last_attempt = self.clock()
        unmatched: list[Problem] = []  # patterns that match no file
        try:
            rules, warnings = load_rules(expand_rule_globs(self.patterns, warnings=unmatched))
        except SourceError as exc:
            self.status.successful = False
            self.status.problems = exc.problems
            self._stamps = stamps  # do not retry the same broken files in a loop
            raise
        self.rules = rules
        self._stamps = stamps
        self.status = ReloadStatus(
            successful=True,
            last_attempt=self.status.last_attempt,
            last_success=self.status.last_attempt,
            warnings=unmatched + warnings,
        )
        if not rules.rules:
            # Allowed (a shard may have only the built-in alerts), but far more often a
            # wrong glob: say so loudly, at start and at every reload.
            log.warning(
                "no rules loaded: nothing is being evaluated",
                patterns=list(self.patterns),
                files=len(stamps),
                warnings=[str(w) for w in self.status.warnings],
            )
        return rules

    def reload(self) -> RuleSet | None:
        """Try a reload; the new set, or None when it failed (the old set stays)."""
        try:
            rules = self.load()
        except SourceError as exc:
            log.error(
                "rule reload failed; the running rules stay",
                problems=[str(p) for p in exc.problems],
            )
            return None
        log.info(
            "rules loaded",
            files=len(self._stamps),
            rules=len(rules.rules),
            warnings=[str(w) for w in self.status.warnings],
        )
        return rules
