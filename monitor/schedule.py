"""How often each account is polled under its venue's request budget.

Pure arithmetic with the time passed in: the poller asks it for each account's interval,
`riskmon check` for the numbers it prints.

When every account fits at `poll_interval`, every account gets it. When they do not, the
budget is spent where the risk is (README "Polling under a request budget"):

- the engine measures, on each snapshot, the gap between each rule comparison's value
  and its threshold (`monitor/engine/proximity.py`); `RiskTrack` keeps, per account,
  how fast those gaps have been moving (an exponentially weighted mean of |change| per
  second: a random walk moves both ways, and either way may cross);
- the estimated time to cross is the smallest gap / speed; an account is wanted again
  after a `CROSSING_SHARE` of it (so it is polled several times as it closes in), and
  at once when an alert of it is pending or firing (its resolution matters too);
- `plan_intervals` fits those wishes to the budget: wishes below `poll_interval` get
  `poll_interval`, and every account is polled at least every `common` seconds, the
  shortest that the budget allows after the wishes (so spare budget is spent on all);
  when even the wishes do not fit, they are all stretched alike, never past
  `max_poll_interval` unless the accounts do not fit at it at all. `PULL_IN_ROOM` of the
  budget is left for the polls made sooner than planned when an account closes in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# The share of `max_requests_per_second` a schedule plans for: the rest is room for
# discovery, token requests and retries, so polls do not queue behind them.
PLANNING_SHARE = 0.95


def uniform_cycle(accounts: int, requests_per_second: float, poll_interval: float) -> float:
    """The interval at which `accounts` polls fit in the budget: `poll_interval`, or
    longer when they do not all fit in it."""
    if requests_per_second <= 0:
        return float("inf") if accounts else poll_interval
    return max(poll_interval, accounts / (requests_per_second * PLANNING_SHARE))


@dataclass(frozen=True, slots=True)
class BudgetArithmetic:
    """A venue's request budget against its accounts, as `riskmon check` prints it."""

    venue: str
    accounts: int  # configured; discovered ones are unknown until riskmon runs
    discovery: bool
    requests_per_second: float
    poll_interval: float
    max_poll_interval: float

    @property
    def cycle(self) -> float:
        """The interval every configured account gets when all are polled alike."""
        return uniform_cycle(self.accounts, self.requests_per_second, self.poll_interval)

    @property
    def capacity(self) -> int:
        """How many accounts fit when each is polled every `max_poll_interval`."""
        return int(self.requests_per_second * PLANNING_SHARE * self.max_poll_interval)

    @property
    def fits(self) -> bool:
        return self.cycle <= self.max_poll_interval

    def describe(self) -> str:
        """One line for `riskmon check`."""
        rate = f"{self.requests_per_second:g} requests/s"
        room = f"{self.capacity} fit at max_poll_interval {_seconds(self.max_poll_interval)}"
        if self.discovery:
            return (
                f"venue {self.venue}: {self.accounts} configured accounts and those discovery "
                f"finds (unknown until riskmon runs), {rate}: {room}"
            )
        at = (
            f"every {_seconds(self.cycle)} (poll_interval {_seconds(self.poll_interval)})"
            if self.cycle > self.poll_interval
            else f"every poll_interval, {_seconds(self.poll_interval)}"
        )
        return f"venue {self.venue}: {self.accounts} accounts, {rate}: each polled {at}; {room}"


def _seconds(value: float) -> str:
    return f"{value:.3g}s"


CROSSING_SHARE = 0.25  # an account is polled again after this share of its time to cross
# Of the planned budget, the share the risk-aware plan hands out: an account whose
# interval shrinks is polled before its planned turn, and those extra polls need room.
PULL_IN_ROOM = 0.05
SPEED_WEIGHT = 0.5  # of the newest observation in the weighted mean speed of a gap


@dataclass(slots=True)
class RiskTrack:
    """One account's recent gaps to its thresholds and how fast they move."""

    at: float | None = None  # when the last gaps were measured
    gaps: tuple[float | None, ...] = ()  # per comparison; None: not measurable
    speeds: list[float | None] = field(default_factory=list)  # |gap change| per second

    def observe(self, at: float, gaps: Sequence[float | None]) -> None:
        """The gaps measured at `at` (same comparisons, same order, as before)."""
        if self.at is None or len(gaps) != len(self.gaps) or at <= self.at:
            self.at, self.gaps = at, tuple(gaps)
            self.speeds = [None] * len(gaps)
            return
        elapsed = at - self.at
        for i, (old, new) in enumerate(zip(self.gaps, gaps, strict=True)):
            if old is None or new is None:
                continue
            speed = abs(new - old) / elapsed
            before = self.speeds[i]
            self.speeds[i] = (
                speed if before is None else SPEED_WEIGHT * speed + (1 - SPEED_WEIGHT) * before
            )
        self.at, self.gaps = at, tuple(gaps)

    def time_to_cross(self) -> float | None:
        """Seconds until the nearest threshold may be crossed at the recent speed; inf
        when nothing moves, None when not known yet (one measurement or none)."""
        known = False
        nearest = math.inf
        for gap, speed in zip(self.gaps, self.speeds, strict=True):
            if gap is None or speed is None:
                continue
            known = True
            if gap == 0:
                return 0.0
            if speed > 0:
                nearest = min(nearest, abs(gap) / speed)
        return nearest if known else None


def wanted_interval(
    time_to_cross: float | None, alerting: bool, poll_interval: float, max_poll_interval: float
) -> float | None:
    """How soon an account should be polled again for its risk alone (None: no opinion,
    it gets the common interval)."""
    if alerting:
        return poll_interval
    if time_to_cross is None:
        return None
    return min(max(time_to_cross * CROSSING_SHARE, poll_interval), max_poll_interval)


def plan_intervals(
    wanted: Mapping[str, float | None],
    requests_per_second: float,
    poll_interval: float,
    max_poll_interval: float,
) -> dict[str, float]:
    """Each account's interval: its wish where the budget allows, the rest of the budget
    spread over the others (see the module docstring). Never more than the budget asks
    for (at PLANNING_SHARE)."""
    n = len(wanted)
    budget = requests_per_second * PLANNING_SHARE
    if n == 0:
        return {}
    if budget <= 0:
        return dict.fromkeys(wanted, math.inf)
    if n / poll_interval <= budget:
        return dict.fromkeys(wanted, poll_interval)
    floor = n / budget
    if floor >= max_poll_interval:  # not even max_poll_interval fits: all alike
        return dict.fromkeys(wanted, floor)
    budget *= 1 - PULL_IN_ROOM
    wishes = {a: max_poll_interval if w is None else w for a, w in wanted.items()}
    if sum(1 / w for w in wishes.values()) <= budget:
        common = _common_interval(sorted(wishes.values()), budget, poll_interval)
        return {a: min(w, common) for a, w in wishes.items()}
    scale = _stretch(list(wishes.values()), budget, max_poll_interval)
    return {a: min(w * scale, max_poll_interval) for a, w in wishes.items()}


def _common_interval(wishes: Sequence[float], budget: float, poll_interval: float) -> float:
    """The shortest `c` >= poll_interval with sum(1 / min(w, c)) <= budget, for sorted
    `wishes` whose own sum fits: those wishing less than c keep their wish."""
    n = len(wishes)
    prefix = 0.0  # sum of 1/w over the wishes below the candidate c
    for k in range(n):
        # the wishes[:k] keep theirs; the other n - k get c
        left = budget - prefix
        if left > 0:
            c = (n - k) / left
            if (wishes[k - 1] if k else 0.0) <= c <= wishes[k]:
                return max(c, poll_interval)
        prefix += 1 / wishes[k]
    return wishes[-1]  # exactly the budget: every account at its wish


def _stretch(wishes: Sequence[float], budget: float, max_poll_interval: float) -> float:
    """The smallest factor s >= 1 with sum(1 / min(w s, max)) <= budget."""
    low, high = 1.0, max_poll_interval / min(wishes)
    for _ in range(40):
        mid = (low + high) / 2
        if sum(1 / min(w * mid, max_poll_interval) for w in wishes) <= budget:
            high = mid
        else:
            low = mid
    return high
