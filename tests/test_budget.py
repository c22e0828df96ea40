"""The venue's request budget: Retry-After pauses every request, then AIMD recovery."""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import aiohttp
import pytest
from conftest import MqttCollector
from test_daemon import RULES, RiskmonProcess, events, subscriber
from test_poller import fast, running

from monitor.check_cmd import run_check
from monitor.config import AccountConfig, VenueConfig
from monitor.config.loader import parse_config
from monitor.errors import VenueRateLimited, VenueUnavailable
from monitor.metrics import Metrics
from monitor.simulator import Simulator
from monitor.venues.budget import RECOVERY_STEP, RequestBudget
from monitor.venues.http import HttpClient
from monitor.yamlsource import SourceError

__all__ = ["subscriber"]  # the fixture of test_daemon, used here as it is

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


@pytest.mark.parametrize("hint", [301.0, 1e20, float("inf")])
def test_a_hint_past_the_cap_pauses_the_venue_five_minutes_not_for_ever(hint: float) -> None:
    # a broken or hostile venue's `Retry-After: 99999999999` must not stop its polls for
    # good: after 300 s riskmon asks again (and AccountDataStale says so meanwhile)
    budget = RequestBudget(20.0)
    assert budget.note(VenueRateLimited("slow down", status=429, retry_after=hint), 10.0)
    assert budget.paused_until == 310.0
    assert budget.rate(310.0) == pytest.approx(10.0)


def test_budget_metrics_are_rendered_per_venue() -> None:
    metrics = Metrics(start_time=0.0)
    metrics.set_venue_budget("cs", 12.5, 2)
    text = metrics.render().decode()
    assert 'riskmon_venue_request_budget{venue="cs"} 12.5' in text
    assert 'riskmon_venue_throttled_total{venue="cs"} 2' in text


async def test_an_over_subscribed_venue_stretches_its_cycle_instead_of_failing(
    tmp_path: Path,
    riskmon_config: Callable[..., tuple[Path, int]],
    simulator: Simulator,
    subscriber: MqttCollector,
) -> None:
    """200 accounts every 500 ms want 400 requests/s of a 20/s budget: each is polled
    every 200 / (20 x 0.95) = 10.5 s instead, with no failure, no staleness, no VenueDown."""
    ids = [str(200000 + i) for i in range(200)]
    for account in ids:
        simulator.add_account("clearstreet", account)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "capital.yaml").write_text(RULES)
    config, port = riskmon_config(
        instance="budget",
        rules="rules/*.yaml",
        stale_after="30s",
        cs_accounts=[{"id": i} for i in ids],
        venue_settings={"max_requests_per_second": 20},
    )
    config.write_text(
        config.read_text().replace("poll_interval: 200ms", "poll_interval: 500ms", 1)
        + "builtin_alerts:\n  VenueDown: {for: 1s}\n"
    )
    riskmon = RiskmonProcess(tmp_path, config, port)
    try:
        riskmon.start()
        await riskmon.ready()

        async def every_account_polled_twice() -> bool:
            polls = Counter(r["account"] for r in simulator.requests(endpoint="balances"))
            return all(polls[i] >= 2 for i in ids)

        await riskmon.until(every_account_polled_twice, "a second cycle", timeout=40)
        metrics = await riskmon.metrics()
    finally:
        riskmon.stop()
    cs = (("venue", "cs"),)
    outcomes = {
        dict(labels)["outcome"]: value
        for (name, labels), value in metrics.items()
        if name == "riskmon_polls_total" and ("venue", "cs") in labels
    }
    assert set(outcomes) == {"ok"}, outcomes
    assert metrics[("riskmon_venue_up", cs)] == 1
    intervals = [
        value
        for (name, labels), value in metrics.items()
        if name == "riskmon_account_poll_interval_seconds" and ("venue", "cs") in labels
    ]
    assert len(intervals) == 200
    # 200 / 19 = 10.5 s spread alike; the risk-aware plan keeps 5% for early polls (and
    # these accounts' balances stand still: none is nearer a threshold than another)
    assert all(200 / 19 <= value <= 200 / 19 / 0.95 + 0.01 for value in intervals), intervals
    assert metrics[("riskmon_venue_request_budget", cs)] == 20
    assert [e for e in events(subscriber) if e["venue"] == "cs"] == []  # no stale, no down
    gaps = [
        b - a
        for account in ids
        for a, b in pairwise(
            r["t"] for r in simulator.requests(account=account, endpoint="balances")
        )
    ]
    assert min(gaps) > 200 / 19 * 0.8  # no account polled sooner than the budget allows
    per_second = Counter(int(r["t"]) for r in simulator.requests(venue="clearstreet"))
    assert max(per_second.values()) <= 20


def _venue(settings: str, accounts: int, *, discover: bool = False) -> str:
    listed = ", ".join(f'{{id: "{100000 + i}"}}' for i in range(accounts))
    if discover:
        listed += ", {discover: true}"
    return f"""\
venues:
  - name: cs
    kind: clearstreet
    base_url: https://api.clearstreet.com
    api_key: k
{settings}    accounts: [{listed}]
"""


def _config_errors(text: str) -> list[str]:
    with pytest.raises(SourceError) as info:
        parse_config(text, "riskmon.yaml", base_dir=Path("."), environ={})
    return [str(p) for p in info.value.problems]


def test_max_poll_interval_defaults_to_half_of_stale_after() -> None:
    config = parse_config(_venue("", 3), "riskmon.yaml", base_dir=Path("."), environ={})
    assert config.venue("cs").max_poll_interval == 15.0


@pytest.mark.parametrize(
    ("settings", "accounts", "expected"),
    [
        (
            "    max_requests_per_second: 10\n",
            300,
            "riskmon.yaml:6:30: 300 accounts at 10 requests/s can be polled only every 31.6s, "
            "slower than max_poll_interval (15s); at most 142 accounts fit: raise "
            "max_requests_per_second or max_poll_interval, or split the accounts",
        ),
        (
            "    poll_interval: 2s\n    max_poll_interval: 1s\n",
            1,
            "riskmon.yaml:7:24: max_poll_interval (1s) is shorter than poll_interval (2s); "
            "it is the slowest an account may go",
        ),
        (
            "    max_poll_interval: 30s\n",
            1,
            "riskmon.yaml:6:24: max_poll_interval (30s) must be shorter than stale_after "
            "(30s), or accounts polled that slowly turn stale",
        ),
    ],
)
def test_a_budget_that_cannot_meet_max_poll_interval_is_an_error(
    settings: str, accounts: int, expected: str
) -> None:
    assert _config_errors(_venue(settings, accounts)) == [expected]


def test_check_prints_each_venues_budget_arithmetic(tmp_path: Path) -> None:
    (tmp_path / "riskmon.yaml").write_text(
        _venue("    poll_interval: 500ms\n", 200)
        + _venue("    max_requests_per_second: 5\n", 2, discover=True)
        .replace("venues:\n", "")
        .replace("name: cs", "name: cs2")
    )
    out = io.StringIO()
    with contextlib.chdir(tmp_path):
        code = run_check(None, [], out, io.StringIO())
    assert code == 0, out.getvalue()
    assert out.getvalue().splitlines() == [
        "venue cs: 200 accounts, 20 requests/s: each polled every 10.5s (poll_interval 0.5s); "
        "285 fit at max_poll_interval 15s",
        "venue cs2: 2 configured accounts and those discovery finds (unknown until riskmon "
        "runs), 5 requests/s: 71 fit at max_poll_interval 15s",
        "ok: 0 rules in 0 files",
    ]


async def test_the_simulator_tells_where_its_clock_is(simulator: Simulator) -> None:
    """bench/budget.py times the crossings of its scenario against it."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(simulator.base_url + "/_sim/clock") as response,
    ):
        clock = await response.json()
    assert clock["elapsed"] == pytest.approx(simulator.elapsed(), abs=1.0)
    assert clock["timeline"] == pytest.approx(simulator.timeline_time(), abs=1.0)
