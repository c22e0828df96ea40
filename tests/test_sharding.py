"""`riskmon run --shard K/N`: N instances against one simulator split its accounts, and
going from 3 instances to 4 moves about a quarter of the accounts, not all of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MosquittoBroker, SimCredentials, _free_port
from test_daemon import RiskmonProcess

from monitor.shard import shard_of
from monitor.simulator import Simulator

ADDED = [str(20000 + i) for i in range(300)]  # Clear Street accounts added to the simulator
SCENARIO = ["19816", "19817", "19818"]  # the `simulator` fixture's own


class ShardProcess(RiskmonProcess):
    """`riskmon run -c CONFIG --shard K/N`."""

    def __init__(self, folder: Path, config: Path, http_port: int, shard: str) -> None:
        super().__init__(folder, config, http_port)
        self.shard = shard

    def start(self) -> None:
        self.runs += 1
        with (self.folder / f"riskmon-{self.runs}.log").open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "monitor",
                    "run",
                    "-c",
                    str(self.config),
                    "--shard",
                    self.shard,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "RISKMON_LOG_LEVEL": "info"},
            )

    async def accounts(self) -> dict[str, int]:
        """The accounts it monitors: id -> polls so far."""
        _, body = await self.get("/api/v1/accounts")
        return {a["account"]: a["polls"] for a in json.loads(body)["accounts"]}


@pytest.fixture
def shards(
    tmp_path: Path,
    simulator: Simulator,
    mosquitto: MosquittoBroker,
    sim_credentials: SimCredentials,
) -> Iterator[dict[int, list[ShardProcess]]]:
    """For N = 3 and N = 4: N instances `--shard K/N` (not started), each with its own
    state_dir, HTTP port and instance name, discovering the simulator's accounts."""
    for account in ADDED:
        simulator.add_account("clearstreet", account)
    (tmp_path / "cs-key").write_text(sim_credentials.api_key)
    groups: dict[int, list[ShardProcess]] = {}
    for count in (3, 4):
        for index in range(count):
            folder = tmp_path / f"shard-{index}-of-{count}"
            folder.mkdir()
            port = _free_port()
            config = folder / "riskmon.yaml"
            config.write_text(f"""\
instance: shard-{index}-of-{count}
state_dir: state
http: {{listen: "127.0.0.1:{port}"}}
mqtt: {{url: "{mosquitto.url}", topic_prefix: riskmon}}
rules: []
venues:
  - name: cs
    kind: clearstreet
    base_url: {simulator.clearstreet_url}
    api_key_file: {tmp_path / "cs-key"}
    poll_interval: 2s
    timeout: 2s
    max_requests_per_second: 1000
    accounts: [{{discover: true}}]
""")
            groups.setdefault(count, []).append(
                ShardProcess(folder, config, port, f"{index}/{count}")
            )
    try:
        yield groups
    finally:
        for group in groups.values():
            for process in group:
                process.stop()


async def monitored(group: list[ShardProcess], every: set[str]) -> list[set[str]]:
    """Each instance's accounts, once the instances together list `every` account and
    each has polled all of its own."""

    async def complete() -> list[set[str]] | None:
        found = [await process.accounts() for process in group]
        listed = set().union(*found)
        if listed == every and all(polls > 0 for f in found for polls in f.values()):
            return [set(f) for f in found]
        return None

    result: list[set[str]] = await group[0].until(
        complete, f"{len(every)} accounts polled by {len(group)} shards", timeout=25
    )
    return result


async def test_shards_split_the_accounts_and_a_fourth_moves_a_quarter(
    shards: dict[int, list[ShardProcess]],
) -> None:
    every = set(SCENARIO) | set(ADDED)
    for group in shards.values():
        for process in group:
            process.start()

    by_count: dict[int, dict[str, int]] = {}  # N -> account -> its shard K
    for count, group in shards.items():
        sets = await monitored(group, every)
        # every account is monitored by exactly one instance
        assert sum(len(s) for s in sets) == len(every), "an account is monitored twice"
        assert set().union(*sets) == every
        for index, accounts in enumerate(sets):
            assert accounts, f"shard {index}/{count} monitors nothing"
            assert accounts == {a for a in every if shard_of("cs", a, count) == index}
        by_count[count] = {account: i for i, accounts in enumerate(sets) for account in accounts}
        metrics = [await process.metrics() for process in group]
        assert sum(m[("riskmon_venue_accounts", (("venue", "cs"),))] for m in metrics) == len(every)

    # 3 -> 4: about a quarter of the accounts move, all of them to the new shard
    moved = {a for a in every if by_count[3][a] != by_count[4][a]}
    assert 0.15 <= len(moved) / len(every) <= 0.35, f"{len(moved)} of {len(every)} moved"
    assert {by_count[4][a] for a in moved} == {3}
