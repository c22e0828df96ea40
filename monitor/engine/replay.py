"""`riskmon replay`: recorded snapshots through rules, printing the alert transitions.

Threshold what-ifs: `--set params.buying_power_floor=40000` overrides a parameter for
every account, so "how often would a 40k floor have paged us last week?" is one command.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from monitor import schema
from monitor.engine.evaluate import Evaluator
from monitor.engine.lifecycle import AlertEvent
from monitor.engine.model import RuleSet
from monitor.engine.param_usage import ParamRead, closest
from monitor.recording import read_records


def parse_overrides(items: Sequence[str]) -> dict[str, schema.ParamValue]:
    """`params.NAME=VALUE` items as a params mapping, each VALUE read as a param written
    as text in riskmon.yaml would be (`monitor.schema`); ValueError for a bad one."""
    params: dict[str, schema.ParamValue] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("params.") or len(name) <= len("params."):
            raise ValueError(f"--set takes params.NAME=VALUE, got {item!r}")
        try:
            key = schema.param_name(name.removeprefix("params."))
            params[key] = schema.param_value(value)
        except schema.Invalid as exc:
            raise ValueError(f"--set {name}: {exc}") from None
    return params


def override_problems(
    overrides: Mapping[str, Any], reads: Mapping[str, Sequence[ParamRead]]
) -> list[str]:
    """Why `--set` overrides cannot mean what they say, given the params the rules read
    (`param_usage.params_read`): a NAME no rule reads (a typo would replay the defaults
    and report "nothing fired"), or a value that is not a number where a rule uses one."""
    problems = []
    for name, value in overrides.items():
        if name not in reads:
            meant = closest(name, reads)
            hint = f"; did you mean params.{meant}?" if meant else ""
            known = f" (they read {', '.join(sorted(reads))})" if reads and not meant else ""
            problems.append(f"params.{name}: no rule of the rule files reads it{hint}{known}")
            continue
        numeric = [read for read in reads[name] if read.numeric]
        if numeric and not schema.is_number(value):
            rule = numeric[0].rule
            problems.append(
                f"params.{name}={value}: not a number, but {rule.alert} ({rule.location}) "
                "compares it with a number or computes with it"
            )
    return problems


class Replay:
    """Recorded snapshots through a rule set; `snapshots` counts what was read."""

    def __init__(
        self,
        rules: RuleSet,
        overrides: Mapping[str, Any],
        often_absent: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.evaluator = Evaluator(rules, often_absent=often_absent)
        self.overrides = dict(overrides)
        self.snapshots = 0

    def events(self, files: Iterable[Path]) -> Iterator[AlertEvent]:
        """Every alert event, in the order of the snapshots."""
        for path in files:
            for snapshot in read_records(path):
                self.snapshots += 1
                if self.overrides:
                    snapshot = replace(snapshot, params={**snapshot.params, **self.overrides})
                yield from self.evaluator.evaluate(snapshot, snapshot.taken_at)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


def run_replay(
    files: Sequence[str],
    rules: RuleSet,
    overrides: Mapping[str, Any],
    out: TextIO,
    often_absent: Mapping[str, frozenset[str]] | None = None,
) -> int:
    transitions = firing = 0
    active: set[str] = set()
    run = Replay(rules, overrides, often_absent)
    for event in run.events(Path(f) for f in files):
        transitions += 1
        values = " ".join(f"{k}={v}" for k, v in event.values.items())
        out.write(
            f"{_when(event.at)}  {event.status:<8}  {event.severity:<8}  {event.alertname}  "
            f"{event.venue}/{event.account}  {values}\n"
        )
        if event.status == "firing":
            firing += 1
            active.add(event.fingerprint)
        else:
            active.discard(event.fingerprint)
    out.write(
        f"{run.snapshots} snapshot(s), {transitions} transition(s), {firing} firing, "
        f"{len(active)} still firing at the end\n"
    )
    return 0
