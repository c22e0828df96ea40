"""A scenario with `loop` plays its timeline again and again: the demo's breach recurs
in every cycle, for whoever looks in late. Time is a fake clock moved by the test."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import FakeClock, SimCredentials

from monitor.demo import SCENARIO
from monitor.simulator import Scenario, Simulator
from monitor.simulator.keys import ensure_demo_credentials
from monitor.yamlsource import SourceError, load_yaml, parse_yaml

FLOOR = Decimal(50000)  # 19816's buying_power_floor in the demo's config
CLEARS_AT = FLOOR * Decimal("1.05")  # BuyingPowerBelowFloor's `clear`


def demo_simulator(folder: Path, clock: FakeClock) -> Simulator:
    ensure_demo_credentials(folder / "secrets")
    return Simulator(Scenario.from_document(load_yaml(SCENARIO), folder), clock=clock)


def test_the_demo_breaches_its_floor_long_enough_to_page_in_every_cycle(
    tmp_path: Path,
) -> None:
    clock = FakeClock(1_000_000.0)
    sim = demo_simulator(tmp_path, clock)
    loop = sim.scenario.loop
    assert loop is not None
    assert loop <= 60
    start = clock.now

    def at(seconds: float) -> dict[str, Any]:
        clock.now = start + seconds
        return sim.balance("clearstreet", "19816")

    for cycle in range(3):
        t0 = cycle * loop
        assert Decimal(at(t0 + 1)["buying_power"]) > FLOOR
        # below the floor for longer than the rule's `for: 30s`, then back above `clear`
        below = [t0 + s for s in range(5, 36)]
        assert all(Decimal(at(t)["buying_power"]) < FLOOR for t in below), cycle
        assert Decimal(at(t0 + 39)["buying_power"]) >= CLEARS_AT
        # the margin call comes and goes
        assert Decimal(at(t0 + 5)["margin_details"]["maintenance_margin_excess"]) < 0
        assert Decimal(at(t0 + 13)["margin_details"]["maintenance_margin_excess"]) > 0


async def test_timeline_faults_recur_in_every_cycle(
    sim_scenario_data: dict[str, Any], sim_credentials: SimCredentials
) -> None:
    sim_scenario_data["loop"] = "60s"
    sim_scenario_data["timeline"] = [
        {"at": "20s", "fault": {"venue": "clearstreet", "kind": "status", "status": 503,
                                "for": "15s"}},
        # open-ended: one copy at a time, not one more per cycle
        {"at": "50s", "fault": {"venue": "clearstreet", "account": "19817",
                                "kind": "status", "status": 500}},
    ]  # fmt: skip
    clock = FakeClock(1_000_000.0)
    sim = Simulator(Scenario.from_dict(sim_scenario_data), clock=clock)
    await sim.start()
    start = clock.now
    headers = {"Authorization": f"Bearer {sim_credentials.api_key}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:

            async def status(seconds: float, account: str = "19816") -> int:
                clock.now = start + seconds
                url = f"{sim.clearstreet_url}/v1/accounts/{account}/balances"
                async with http.get(url) as response:
                    return response.status

            for cycle in range(3):
                t0 = cycle * 60
                got = [await status(t0 + s) for s in (10, 25, 34, 40)]
                assert got == [200, 503, 503, 200], (cycle, got)
                assert await status(t0 + 55, "19817") == 500
                assert len(sim.faults()) <= 2
    finally:
        await sim.stop()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("loop: 0s\n", "scenario.yaml:1:7: loop must be more than 0s"),
        ("loop: soon\n", "scenario.yaml:1:7: invalid duration 'soon'"),
        (
            "loop: 1m\nclearstreet:\n  accounts: [{id: 1}]\ntimeline:\n"
            "  - {at: 75s, venue: clearstreet, account: 1, set: {buying_power: 1}}\n",
            "scenario.yaml:5:10: at 1m15s is not within the loop of 1m: it would never happen",
        ),
    ],
)
def test_loop_errors_name_their_place(text: str, message: str) -> None:
    with pytest.raises(SourceError) as caught:
        Scenario.from_document(parse_yaml(text, "scenario.yaml"))
    assert message in str(caught.value)


def test_a_scenario_without_loop_plays_once() -> None:
    scenario = Scenario.from_dict({})
    assert scenario.loop is None
    assert scenario.timeline_time(125.0) == 125.0
    assert Scenario.from_dict({"loop": "1m"}).timeline_time(125.0) == 5.0
