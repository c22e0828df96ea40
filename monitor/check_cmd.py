"""`riskmon check`: validate a config and its rule files, and lint rules against venues.

Errors (a file that would not load; against a config, the account params that
`params_check` refuses) make the exit status 1, and with `--strict` warnings do too.
The lints themselves are `monitor.engine.check`'s, against the registered venue kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

from monitor.config import Config, load_config
from monitor.engine.check import config_problems, lint_rules
from monitor.engine.params_check import ParamPlaces
from monitor.engine.rulefile import expand_rule_globs, load_rules_partial
from monitor.schedule import BudgetArithmetic
from monitor.venue_fields import kind_fields_map
from monitor.yamlsource import Location, Problem, SourceError, YamlDocument

__all__ = ["DEFAULT_CONFIG", "run_check"]

DEFAULT_CONFIG: Final = "riskmon.yaml"


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
        problems.extend(lint_rules(loaded.rules, None, kinds=kind_fields_map()))
    else:
        # "no rule reads it" needs every rule of the config, loaded
        whole = not rule_files and not loaded.errors
        places = ParamPlaces(config, config.document)
        problems.extend(
            config_problems(
                config,
                loaded.rules,
                loaded.warnings,
                places,
                kinds=kind_fields_map(),
                unread=whole,
            )
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
