"""Which params each rule reads, and which it uses as numbers.

A rule reads `params.NAME` in its `expr`, its `clear` and its templates (labels,
annotations). The expressions are analysed statically (`expr.param_uses`): a param
compared with a number or computed with must hold one, or the rule fails at every
evaluation. Templates only show params, so their reads are never numeric here.
`riskmon check`, the daemon (at start and at each reload), `riskmon replay --set` and
`riskmon_account_param` all read params through this module.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from monitor.engine.expr import param_uses
from monitor.engine.model import Rule

__all__ = [
    "ParamRead",
    "closest",
    "params_read",
    "rule_params",
]


@dataclass(frozen=True, slots=True)
class ParamRead:
    """One param a rule reads."""

    rule: Rule
    name: str
    numeric: bool  # compared with a number or computed with, in `expr` or `clear`

    @property
    def has_default(self) -> bool:
        return self.name in self.rule.params


def rule_params(rule: Rule) -> dict[str, ParamRead]:
    """The params `rule` reads, by name."""
    numeric: dict[str, bool] = {}
    for expr in (rule.expr, rule.clear):
        if expr is not None:
            for name, used in param_uses(expr).items():
                numeric[name] = numeric.get(name, False) or used
    for template in (*rule.labels.values(), *rule.annotations.values()):
        for path in template.fields:
            head, _, rest = path.partition(".")
            name = rest.partition(".")[0]
            if head == "params" and name:
                numeric.setdefault(name, False)
    return {name: ParamRead(rule, name, used) for name, used in sorted(numeric.items())}


def params_read(rules: Iterable[Rule]) -> dict[str, list[ParamRead]]:
    """Every param some rule of `rules` reads, with the reads (in rule order)."""
    found: dict[str, list[ParamRead]] = {}
    for rule in rules:
        for name, read in rule_params(rule).items():
            found.setdefault(name, []).append(read)
    return found


def closest(name: str, choices: Iterable[str] | Mapping[str, Any]) -> str | None:
    """The choice a misspelt `name` most likely meant, or None."""
    found = difflib.get_close_matches(name, sorted(set(choices) - {name}), n=1, cutoff=0.7)
    return found[0] if found else None
