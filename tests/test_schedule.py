"""The risk-aware schedule: pure, time passed in, table-tested."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import statistics
from collections import Counter
from collections.abc import Callable

import pytest
from test_poller import Recorder

from monitor.config import AccountConfig, VenueConfig
from monitor.engine.model import RuleSet
from monitor.engine.proximity import RuleProximity
from monitor.engine.rulefile import parse_rules
from monitor.poller import VenuePoller
from monitor.schedule import (
    PLANNING_SHARE,
    RiskTrack,
    plan_intervals,
    uniform_cycle,
    wanted_interval,
)
from monitor.simulator import Simulator
from monitor.venues.base import create_adapter
from monitor.venues.http import HttpClient


def test_uniform_cycle_is_poll_interval_until_the_budget_binds() -> None:
    assert uniform_cycle(9, 20, 0.5) == 0.5
    assert uniform_cycle(200, 20, 0.5) == pytest.approx(200 / 19)


@pytest.mark.parametrize(
    ("observations", "expected"),
    [
        ([], None),
        ([(0.0, [100.0])], None),  # one measurement: no speed yet
        ([(0.0, [100.0]), (2.0, [80.0])], 8.0),  # 10/s, 80 left
        ([(0.0, [100.0]), (2.0, [120.0])], 12.0),  # moving away may come back as fast
        ([(0.0, [100.0]), (1.0, [100.0])], math.inf),  # still
        ([(0.0, [100.0, 5.0]), (1.0, [90.0, 4.0])], 4.0),  # the nearest comparison
        ([(0.0, [100.0, None]), (1.0, [90.0, 3.0])], 9.0),  # unmeasurable before
        ([(0.0, [100.0]), (1.0, [90.0]), (2.0, [88.0])], 88.0 / 6.0),  # mean 0.5 * (10+2)
        ([(0.0, [100.0]), (1.0, [0.0])], 0.0),  # on the threshold
        ([(0.0, [100.0]), (1.0, [90.0, 1.0])], None),  # rules changed: start again
    ],
)
def test_time_to_cross(
    observations: list[tuple[float, list[float | None]]], expected: float | None
) -> None:
    track = RiskTrack()
    for at, gaps in observations:
        track.observe(at, gaps)
    found = track.time_to_cross()
    assert found == (pytest.approx(expected) if expected not in (None, math.inf) else expected)


@pytest.mark.parametrize(
    ("time_to_cross", "alerting", "expected"),
    [
        (None, False, None),
        (None, True, 1.0),
        (math.inf, False, 60.0),
        (1000.0, False, 60.0),
        (40.0, False, 10.0),
        (2.0, False, 1.0),
        (400.0, True, 1.0),
    ],
)
def test_wanted_interval(
    time_to_cross: float | None, alerting: bool, expected: float | None
) -> None:
    assert wanted_interval(time_to_cross, alerting, 1.0, 60.0) == expected


RATE = 50 / PLANNING_SHARE  # plans 50 requests/s, 47.5 with the pull-in room


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        # everything fits at poll_interval: everyone gets it
        ({"a": 60.0, "b": None}, {"a": 1.0, "b": 1.0}),
        # 1,000 with no opinion: alike, every 1,000 / 47.5 s
        ({str(i): None for i in range(1000)}, dict.fromkeys(map(str, range(1000)), 21.05)),
        # 10 urgent at 1 s take 10/s; 990 others share 37.5/s: every 26.4 s
        (
            {**{f"u{i}": 1.0 for i in range(10)}, **{str(i): 60.0 for i in range(990)}},
            {**{f"u{i}": 1.0 for i in range(10)}, **{str(i): 26.4 for i in range(990)}},
        ),
        # 100 wanting 1 s cannot all have it beside 900 at 60 s (15/s): 32.5/s for them
        (
            {**{f"u{i}": 1.0 for i in range(100)}, **{str(i): 60.0 for i in range(900)}},
            {**{f"u{i}": 100 / 32.5 for i in range(100)}, **{str(i): 60.0 for i in range(900)}},
        ),
        # 4,000 do not fit even at 60 s: all at 80 s
        ({str(i): 1.0 for i in range(4000)}, dict.fromkeys(map(str, range(4000)), 80.0)),
    ],
)
def test_plan_intervals(wanted: dict[str, float | None], expected: dict[str, float]) -> None:
    planned = plan_intervals(wanted, RATE, 1.0, 60.0)
    assert planned == pytest.approx(expected, rel=0.01)
    assert sum(1 / v for v in planned.values()) <= 50 * 1.0001 or min(planned.values()) > 60


# -- the poller spending a venue's budget where the rules say the risk is (real sockets) --


async def until(recorder: Recorder, condition: Callable[[], bool]) -> None:
    """`recorder.until`, for up to 20 s."""
    async with asyncio.timeout(20):
        while not condition():
            recorder._changed.clear()
            await recorder._changed.wait()


RULES = """\
groups:
  - name: capital
    rules:
      - alert: BuyingPowerBelowFloor
        expr: buying_power < params.floor
        params: {floor: 89000}
"""


async def test_the_budget_goes_to_the_accounts_nearing_a_threshold_and_the_alerting_ones(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    """30 accounts every 250 ms want 120 requests/s of a budget of 10: one account
    drifting toward its floor (89,800 -> 89,000 at 80/s) and one with a firing alert
    are polled far more often than the 28 calm ones, and the budget still holds."""
    ids = [str(300000 + i) for i in range(30)]
    for account in ids:
        simulator.add_account("clearstreet", account)  # buying_power 90,000.00
    hot, alerting = ids[0], ids[1]
    rules = RuleSet(tuple(parse_rules(RULES, "capital.yaml")))
    proximity = RuleProximity(lambda: rules, lambda venue, account: account == alerting)
    config = dataclasses.replace(
        cs_config,
        accounts=tuple(AccountConfig(a) for a in ids),
        poll_interval=0.25,
        max_poll_interval=10.0,
        stale_after=30.0,
        max_requests_per_second=10,
    )
    recorder = Recorder()
    poller = VenuePoller(config, create_adapter(config, http_client), recorder, risk=proximity)
    task = asyncio.create_task(poller.run())
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def drift() -> None:
        while True:
            value = 89800 - 80 * (loop.time() - started)
            simulator.set_fields("clearstreet", hot, {"buying_power": f"{value:.2f}"})
            await asyncio.sleep(0.05)

    drifting = asyncio.create_task(drift())
    try:
        # until the hot account's answer is under its floor (the rule would fire)
        await until(
            recorder,
            lambda: any(
                s.account == hot and s.fields["buying_power"] < 89000 for s in recorder.snapshots
            ),
        )
    finally:
        drifting.cancel()
        poller.stop()
        await task
    # the last 5 s before the crossing: the hot account's speed is known by then
    last = recorder.snapshots[-1].taken_at - 5
    polls = Counter(s.account for s in recorder.snapshots if s.taken_at >= last)
    calm = statistics.median(polls[a] for a in ids[2:])
    assert polls[hot] >= 3 * calm, polls
    assert polls[alerting] >= 5 * calm, polls
    assert poller.intervals[alerting] < 0.5  # poll_interval, stretched to fit the budget
    per_second = Counter(int(r["t"]) for r in simulator.requests(venue="clearstreet"))
    assert max(per_second.values()) <= 10
    assert recorder.failures == []
