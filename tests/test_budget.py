"""The venue's request budget: Retry-After pauses every request, then AIMD recovery."""

from __future__ import annotations

import pytest
from test_poller import fast, running

from monitor.config import AccountConfig, VenueConfig
from monitor.errors import VenueRateLimited, VenueUnavailable
from monitor.metrics import Metrics
from monitor.simulator import Simulator
from monitor.venues.budget import RECOVERY_STEP, RequestBudget
from monitor.venues.http import HttpClient

# A request already on its way when the 429 came back may arrive just after it.
IN_FLIGHT = 0.05


async def test_retry_after_pauses_every_request_to_the_venue_across_polls(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    accounts = tuple(AccountConfig(str(100000 + i)) for i in range(8))
    for account in accounts:
        simulator.add_account("clearstreet", account.id)
    # 8 accounts every 0.4 s: 20 requests a second, some 40 in the pause before the fix.
    # A timeout past the pause lets the throttled poll retry after it and succeed.
    config = fast(cs_config, accounts=accounts, timeout=3.0)
    async with running(config, http_client) as (poller, recorder):
        await poller.first_cycle_done.wait()
        simulator.add_fault(
            {"venue": "clearstreet", "kind": "status", "status": 429, "retry_after": "2"}
            | {"count": 1}
        )

        def throttled() -> list[float]:
            return [r["t"] for r in simulator.requests() if r["status"] == 429]

        await recorder.until(lambda: bool(throttled()))
        at = throttled()[0]
        await recorder.until(lambda: any(r["t"] > at + 2.5 for r in simulator.requests()))
    during = [r for r in simulator.requests() if at + IN_FLIGHT < r["t"] < at + 2.0]
    assert during == []
    assert recorder.failures == []  # the polls due meanwhile waited; the 429'd one retried
    assert recorder.skips == []
    budget = poller.adapter.limits.budget
    assert budget.throttled_total == 1
    assert budget.rate(budget.paused_until) == config.max_requests_per_second / 2


@pytest.mark.parametrize(
    ("events", "at", "expected"),
    [
        ([], 0.0, 20.0),  # never throttled: the configured budget
        ([(10.0, 3.0)], 11.0, 0.0),  # paused until 13
        ([(10.0, 3.0)], 13.0, 10.0),  # then half
        ([(10.0, 3.0)], 14.0, 10.0 + RECOVERY_STEP * 20),  # + 5% of 20 a second
        ([(10.0, 3.0)], 23.0, 20.0),  # whole again after 10 s
        ([(10.0, 3.0)], 100.0, 20.0),
        ([(10.0, 3.0), (11.0, 5.0)], 16.0, 10.0),  # a second answer in the pause: once
        ([(10.0, 3.0), (14.0, 1.0)], 15.0, 5.5),  # throttled again while recovering
    ],
)
def test_the_budget_halves_after_a_pause_and_recovers_additively(
    events: list[tuple[float, float]], at: float, expected: float
) -> None:
    budget = RequestBudget(20.0)
    for now, seconds in events:
        budget.throttle(seconds, now)
    assert budget.rate(at) == pytest.approx(expected)


def test_only_throttling_answers_with_a_hint_pause_the_venue() -> None:
    budget = RequestBudget(20.0)
    assert not budget.note(VenueRateLimited("slow down"), 0.0)  # no hint: backoff only
    assert not budget.note(VenueUnavailable("down", status=500, retry_after=1.0), 0.0)
    assert budget.note(VenueRateLimited("slow down", status=429, retry_after=1.0), 0.0)
    assert budget.note(VenueUnavailable("busy", status=503, retry_after=0.5), 0.2)
    assert budget.paused_until == 1.0
    assert budget.throttled_total == 1


def test_budget_metrics_are_rendered_per_venue() -> None:
    metrics = Metrics(start_time=0.0)
    metrics.set_venue_budget("cs", 12.5, 2)
    text = metrics.render().decode()
    assert 'riskmon_venue_request_budget{venue="cs"} 12.5' in text
    assert 'riskmon_venue_throttled_total{venue="cs"} 2' in text
