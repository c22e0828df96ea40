"""Field values as pure functions of simulated time.

An account's body is its template, then its static overrides, then, per field, the
events that reached it (set, remove, ramp, walk) folded in order. Nothing runs in the
background: a value is computed when a request asks for it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from monitor.simulator.templates import (
    FieldPath,
    Template,
    format_number,
    to_decimal,
)


class Event:
    """Something that changes one field from time `at` (seconds since start) on."""

    __slots__ = ("at", "kind", "seq")

    def __init__(self, at: float, seq: int, kind: str) -> None:
        self.at = at
        self.seq = seq
        self.kind = kind  # the field's wire kind, for formatting computed numbers

    def value(self, t: float, before: _Before) -> Any:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget cached results (the events before this one changed)."""


class _Before:
    """The value a field had just before one event, at that event's start (lazy)."""

    __slots__ = ("base", "events", "index")

    def __init__(self, events: list[Event], index: int, base: Any) -> None:
        self.events = events
        self.index = index
        self.base = base

    def at_start(self) -> Any:
        event = self.events[self.index]
        return fold(self.events[: self.index], event.at, self.base)


class SetEvent(Event):
    """The field takes `new` (MISSING removes it)."""

    __slots__ = ("new",)

    def __init__(self, at: float, seq: int, kind: str, new: Any) -> None:
        super().__init__(at, seq, kind)
        self.new = new

    def value(self, t: float, before: _Before) -> Any:
        return self.new


class RampEvent(Event):
    """Linear change from `start` (default: the value at the ramp's start) to `end`."""

    __slots__ = ("_start", "end", "over", "start")

    def __init__(
        self, at: float, seq: int, kind: str, start: Decimal | None, end: Decimal, over: float
    ) -> None:
        super().__init__(at, seq, kind)
        self.start = start
        self.end = end
        self.over = over
        self._start: Decimal | None = None

    def reset(self) -> None:
        self._start = None

    def value(self, t: float, before: _Before) -> Any:
        elapsed = t - self.at
        if self.over <= 0 or elapsed >= self.over:
            return format_number(self.end, self.kind)
        start = self.start
        if start is None:
            if self._start is None:
                self._start = to_decimal(before.at_start())
            start = self._start
        fraction = Decimal(repr(elapsed / self.over))
        return format_number(start + (self.end - start) * fraction, self.kind)


class WalkEvent(Event):
    """A random walk of +/-`step` every `every` seconds, kept within [low, high].

    The steps come from a generator seeded with the scenario seed and the event's
    identity, so the same scenario gives the same values at the same times.
    """

    __slots__ = ("_cache", "_start", "every", "high", "low", "rng_seed", "step")

    def __init__(
        self,
        at: float,
        seq: int,
        kind: str,
        *,
        step: Decimal,
        every: float,
        low: Decimal | None,
        high: Decimal | None,
        rng_seed: str,
    ) -> None:
        super().__init__(at, seq, kind)
        self.step = step
        self.every = every
        self.low = low
        self.high = high
        self.rng_seed = rng_seed
        self._start: Decimal | None = None
        self._cache: tuple[int, Decimal, random.Random] | None = None

    def reset(self) -> None:
        self._start = None
        self._cache = None

    def _clamp(self, value: Decimal) -> Decimal:
        if self.low is not None and value < self.low:
            return self.low
        if self.high is not None and value > self.high:
            return self.high
        return value

    def value(self, t: float, before: _Before) -> Any:
        if self._start is None:
            self._start = self._clamp(to_decimal(before.at_start()))
        steps = int((t - self.at) // self.every) if self.every > 0 else 0
        cache = self._cache
        if cache is None or cache[0] > steps:
            rng = random.Random(self.rng_seed)
            n, current = 0, self._start
        else:
            n, current, rng = cache
        step = self.step
        while n < steps:
            current = self._clamp(current + step if rng.random() < 0.5 else current - step)
            n += 1
        self._cache = (n, current, rng)
        return format_number(current, self.kind)


def fold(events: list[Event], t: float, base: Any) -> Any:
    """A field's value at time t: `base`, then every event that has started, in order."""
    value = base
    for i, event in enumerate(events):
        if event.at > t:
            break
        value = event.value(t, _Before(events, i, base))
    return value


@dataclass(slots=True)
class Account:
    """A simulated account: a template and only what differs from it."""

    id: str
    template: Template
    status: str = "ACTIVE"
    info: dict[str, str] = field(default_factory=dict)  # listing fields (names, subtype)
    patch: dict[FieldPath, Any] = field(default_factory=dict)  # static overrides, maybe shared
    events: dict[FieldPath, list[Event]] | None = None

    @property
    def pristine(self) -> bool:
        return not self.patch and not self.events

    def base(self, path: FieldPath) -> Any:
        if path in self.patch:
            return self.patch[path]
        return self.template.get(path)

    def patches_at(self, t: float) -> Iterable[tuple[FieldPath, Any]]:
        """Every (path, value) that differs from the template at time t."""
        if not self.events:
            return self.patch.items()
        merged = dict(self.patch)
        for path, events in self.events.items():
            if not events or events[0].at > t:
                continue
            merged[path] = fold(events, t, self.base(path))
        return merged.items()

    def add_event(self, path: FieldPath, event: Event) -> None:
        """Insert a timeline event, keeping (at, seq) order."""
        if self.events is None:
            self.events = {}
        events = self.events.setdefault(path, [])
        events.append(event)
        events.sort(key=lambda e: (e.at, e.seq))
        for e in events:
            e.reset()

    def set_now(self, path: FieldPath, now: float, seq: int, kind: str, value: Any) -> None:
        """A change made now: it supersedes whatever came before for this field.

        Events that started at or before `now` are dropped (the clock is assumed not to
        go back across control calls); later timeline events still apply after it.
        """
        if self.events is None:
            self.events = {}
        old = self.events.get(path, [])
        events: list[Event] = [SetEvent(now, seq, kind, value)]
        events.extend(e for e in old if e.at > now)
        for e in events:
            e.reset()
        self.events[path] = events

    def value_at(self, path: FieldPath, t: float) -> Any:
        events = self.events.get(path) if self.events else None
        base = self.base(path)
        return fold(events, t, base) if events else base
