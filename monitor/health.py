"""What keeps riskmon from alerting right now, by component: `/healthz` is 503 while any
problem is held, and says which.

SPEC: healthy means riskmon can still do its job (the loop turns, evaluations and outbox
writes succeed). Each part that can fail in a way that leaves riskmon blind reports here
(`fail`) and clears its own report when it works again (`recover`); the daemon adds the
checks that it makes itself (the tick is late) when asked.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HealthProblems"]


@dataclass(slots=True)
class _Problem:
    reason: str
    since: float


class HealthProblems:
    """The problems currently held, one per component (a name such as `outbox`)."""

    def __init__(self) -> None:
        self._problems: dict[str, _Problem] = {}

    def fail(self, component: str, reason: str, now: float) -> bool:
        """Hold `component` as failing for `reason`; True when it was not failing yet
        (the caller logs the start of a burst once, not every failure)."""
        held = self._problems.get(component)
        if held is None:
            self._problems[component] = _Problem(reason, now)
            return True
        held.reason = reason
        return False

    def recover(self, component: str) -> bool:
        """`component` works again; True when it had been failing."""
        return self._problems.pop(component, None) is not None

    def failing(self, component: str) -> bool:
        return component in self._problems

    def since(self, component: str) -> float | None:
        held = self._problems.get(component)
        return None if held is None else held.since

    def reasons(self) -> dict[str, str]:
        """Every problem held: component -> reason."""
        return {name: problem.reason for name, problem in self._problems.items()}

    def __bool__(self) -> bool:
        return bool(self._problems)
