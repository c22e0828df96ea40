"""How often each account can be polled under its venue's request budget.

Pure arithmetic with the time passed in: the poller asks it for each account's interval,
`riskmon check` for the numbers it prints.
"""

from __future__ import annotations

from dataclasses import dataclass

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
