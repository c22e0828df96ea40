"""The poller against the simulator: spreading, overruns, staleness, discovery, shards."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from conftest import RsaKeyPair, SimCredentials

from monitor.config import AccountConfig, DiscoveryConfig, Secret, VenueConfig
from monitor.config.secret import digest_of
from monitor.errors import VenueAuthError, VenueError, VenueUnavailable
from monitor.poller import AccountState, PollListener, VenuePoller, phase_of
from monitor.shard import Shard
from monitor.simulator import Simulator
from monitor.snapshot import Snapshot
from monitor.venues.base import create_adapter
from monitor.venues.http import HttpClient


class Recorder(PollListener):
    """Keeps what the poller reported; tests wait on conditions over it."""

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []
        self.failures: list[tuple[AccountState, VenueError]] = []
        self.skips: list[tuple[str, str]] = []
        self.changes: list[tuple[list[str], list[str]]] = []
        self._changed = asyncio.Event()

    def on_snapshot(self, snapshot: Snapshot, duration: float) -> None:
        self.snapshots.append(snapshot)
        self._changed.set()

    def on_failure(self, state: AccountState, error: VenueError, duration: float) -> None:
        self.failures.append((state, error))
        self._changed.set()

    def on_skipped(self, state: AccountState, reason: str) -> None:
        self.skips.append((state.id, reason))
        self._changed.set()

    def on_accounts_changed(self, venue: str, added: list[str], removed: list[str]) -> None:
        self.changes.append((added, removed))
        self._changed.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


@asynccontextmanager
async def running(
    config: VenueConfig, http: HttpClient, shard: Shard | None = None
) -> AsyncIterator[tuple[VenuePoller, Recorder]]:
    recorder = Recorder()
    poller = VenuePoller(config, create_adapter(config, http), recorder, shard=shard)
    task = asyncio.create_task(poller.run())
    try:
        yield poller, recorder
    finally:
        poller.stop()
        await task


def fast(config: VenueConfig, **changes: object) -> VenueConfig:
    settings: dict[str, object] = {"poll_interval": 0.4, "timeout": 1.0, **changes}
    return dataclasses.replace(config, **settings)  # type: ignore[arg-type]


async def test_every_account_is_polled_each_interval_spread_over_it(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    accounts = tuple(AccountConfig(str(100000 + i)) for i in range(30))
    for account in accounts:
        simulator.add_account("clearstreet", account.id)
    # stale_after under three intervals: even the first turn keeps the phases
    config = fast(cs_config, accounts=accounts, stale_after=1.0)
    async with running(config, http_client) as (poller, recorder):
        await poller.first_cycle_done.wait()
        await recorder.until(lambda: len(recorder.snapshots) >= 90)
    per_account = {a.id: 0 for a in accounts}
    for snap in recorder.snapshots:
        per_account[snap.account] += 1
    assert min(per_account.values()) >= 2
    times = sorted(r["t"] for r in simulator.requests(endpoint="balances"))[:30]
    assert times[-1] - times[0] > 0.4 * 0.5  # the first turn is spread, not one burst
    phases = [phase_of("cs", a.id) for a in accounts]
    assert len(set(phases)) == len(phases)


def polls_by_account(simulator: Simulator) -> dict[str, list[float]]:
    polls: dict[str, list[float]] = {}
    for request in simulator.requests(endpoint="balances"):
        polls.setdefault(request["account"], []).append(request["t"])
    return polls


async def test_first_polls_catch_up_at_the_rate_limit_then_keep_their_phases(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    accounts = tuple(AccountConfig(str(100000 + i)) for i in range(40))
    for account in accounts:
        simulator.add_account("clearstreet", account.id)
    # 40 accounts at 100 requests a second: the first turn takes 0.4 s, not the interval
    config = dataclasses.replace(
        cs_config, accounts=accounts, poll_interval=1.0, max_requests_per_second=100
    )
    async with running(config, http_client) as (poller, recorder):
        await poller.first_cycle_done.wait()
        await recorder.until(lambda: len(recorder.snapshots) >= 80)
    polls = polls_by_account(simulator)
    firsts = sorted(times[0] for times in polls.values())
    assert len(firsts) == 40
    assert 0.39 * 0.9 < firsts[-1] - firsts[0] < 0.75  # paced at the rate, not a burst
    seconds = sorted(times[1] for times in polls.values() if len(times) > 1)
    assert len(seconds) >= 30
    assert seconds[0] - firsts[0] > 0.9  # nothing polled twice in the first interval
    assert seconds[-1] - seconds[0] > 0.5  # the second turn is at the phases again
    for times in polls.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap > 0.9 for gap in gaps)
        assert all(gap < 1.5 for gap in gaps[1:])  # then one interval apart
        assert not gaps or gaps[0] < 2.1


async def test_first_polls_keep_their_phases_when_the_rate_limit_cannot_do_better(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    accounts = tuple(AccountConfig(str(100000 + i)) for i in range(30))
    for account in accounts:
        simulator.add_account("clearstreet", account.id)
    # 30 accounts at 40 requests a second would take longer than the 0.4 s interval
    config = fast(cs_config, accounts=accounts, max_requests_per_second=40)
    async with running(config, http_client) as (poller, _):
        await poller.first_cycle_done.wait()
    polls = polls_by_account(simulator)
    firsts = sorted(times[0] for times in polls.values())
    assert firsts[-1] - firsts[0] > 0.4 * 0.5  # spread over the interval by phase
    for times in polls.values():
        assert all(b - a > 0.35 for a, b in itertools.pairwise(times))


async def test_a_slow_poll_is_never_stacked(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    simulator.add_fault(
        {"venue": "clearstreet", "account": "19816", "kind": "delay", "seconds": 0.9}
    )
    config = fast(cs_config, accounts=(AccountConfig("19816"),), timeout=2.0)
    async with running(config, http_client) as (_, recorder):
        await recorder.until(lambda: len(recorder.snapshots) >= 2)
    assert ("19816", "overrun") in recorder.skips
    times = [r["t"] for r in simulator.requests(account="19816")]
    assert all(b - a >= 0.85 for a, b in itertools.pairwise(times))


async def test_failures_keep_the_last_good_snapshot_and_feed_staleness(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    config = fast(cs_config, accounts=(AccountConfig("19816"),))
    async with running(config, http_client) as (poller, recorder):
        await recorder.until(lambda: len(recorder.snapshots) >= 1)
        simulator.add_fault({"venue": "clearstreet", "kind": "status", "status": 404})
        await recorder.until(lambda: len(recorder.failures) >= 2)
        state = poller.accounts["19816"]
        assert state.last_snapshot is recorder.snapshots[0]
        assert state.consecutive_failures >= 2
        assert state.last_success == recorder.snapshots[0].taken_at
        assert not state.is_stale(state.last_success + 29, 30)
        assert state.is_stale(state.last_success + 31, 30)
        simulator.clear_faults()
        await recorder.until(lambda: poller.accounts["19816"].consecutive_failures == 0)
        assert state.last_success > recorder.snapshots[0].taken_at


async def test_an_account_never_polled_successfully_goes_stale_from_its_start(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    simulator.add_fault({"venue": "clearstreet", "kind": "status", "status": 400})
    config = fast(cs_config, accounts=(AccountConfig("19816"),))
    async with running(config, http_client) as (poller, recorder):
        await recorder.until(lambda: len(recorder.failures) >= 1)
    state = poller.accounts["19816"]
    assert state.last_success is None
    assert state.last_snapshot is None
    assert state.is_stale(state.added_at + 31, 30)


async def test_wrong_credentials_back_off_instead_of_hammering(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    config = fast(
        cs_config,
        settings=dataclasses.replace(
            cs_config.settings, api_key=Secret.literal("cs api_key", "wrong")
        ),
    )
    async with running(config, http_client) as (_, recorder):
        await recorder.until(lambda: sum(r == "auth_backoff" for _, r in recorder.skips) >= 6)
    assert all(isinstance(e, VenueAuthError) for _, e in recorder.failures)
    # Only the polls already scheduled before the first 401 answered reach the venue.
    assert len(simulator.requests(endpoint="balances")) <= len(config.accounts)


def replace_file(path: Path, text: str) -> None:
    """Swap a new file in, as Kubernetes rotates a mounted Secret."""
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    new.replace(path)


def in_auth_backoff(recorder: Recorder) -> Callable[[], bool]:
    return lambda: any(reason == "auth_backoff" for _, reason in recorder.skips)


async def test_a_fixed_key_file_ends_the_auth_back_off(
    cs_config: VenueConfig,
    http_client: HttpClient,
    simulator: Simulator,
    sim_credentials: SimCredentials,
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "cs.key"
    key_file.write_text("wrong-key\n")
    config = fast(
        cs_config,
        settings=dataclasses.replace(
            cs_config.settings, api_key=Secret.file("cs api_key", key_file)
        ),
    )
    async with running(config, http_client) as (poller, recorder):
        await recorder.until(in_auth_backoff(recorder))
        loop = asyncio.get_running_loop()
        assert poller.auth_retry_at - loop.time() > 20  # a 30 s back-off (at least)
        assert not recorder.snapshots
        replace_file(key_file, sim_credentials.api_key + "\n")
        await recorder.until(lambda: len(recorder.snapshots) >= len(config.accounts))
        # ended by the new key, not waited out
        assert poller.auth_retry_at == 0.0
    accepted = [r for r in simulator.requests(endpoint="balances") if r["status"] == 200]
    assert len(accepted) >= len(config.accounts)


async def test_an_unchanged_wrong_key_keeps_the_auth_back_off(
    cs_config: VenueConfig,
    http_client: HttpClient,
    simulator: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_file = tmp_path / "cs.key"
    key_file.write_text("wrong-key\n")
    config = fast(
        cs_config,
        settings=dataclasses.replace(
            cs_config.settings, api_key=Secret.file("cs api_key", key_file)
        ),
    )
    async with running(config, http_client) as (poller, recorder):
        await recorder.until(in_auth_backoff(recorder))
        refused = recorder.failures[0][1]
        assert isinstance(refused, VenueAuthError)
        assert refused.credential_digest == digest_of("wrong-key")  # the key it sent
        retry_at = poller.auth_retry_at
        sent = len(simulator.requests(endpoint="balances"))
        original = poller.adapter.credential_digest
        checks: list[str | None] = []
        looked_twice = asyncio.Event()

        def counted() -> str | None:
            checks.append(original())
            if len(checks) >= 2:
                looked_twice.set()
            return checks[-1]

        monkeypatch.setattr(poller.adapter, "credential_digest", counted)
        replace_file(key_file, "wrong-key\n")  # rewritten, the same refused key
        async with asyncio.timeout(10):
            await looked_twice.wait()
        assert poller.auth_retry_at == retry_at
        assert not recorder.snapshots
    assert len(simulator.requests(endpoint="balances")) == sent


async def test_a_fixed_private_key_file_ends_the_auth_back_off(
    pmx_config: VenueConfig,
    http_client: HttpClient,
    rsa_keypair: RsaKeyPair,
    other_rsa_keypair: RsaKeyPair,
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "pmx.pem"
    key_file.write_bytes(other_rsa_keypair.private_pem)  # not the key the venue knows
    auth = dataclasses.replace(
        pmx_config.settings.auth, private_key=Secret.file("pmx private_key", key_file)
    )
    config = fast(pmx_config, settings=dataclasses.replace(pmx_config.settings, auth=auth))
    async with running(config, http_client) as (poller, recorder):
        await recorder.until(in_auth_backoff(recorder))
        refused = recorder.failures[0][1]
        assert isinstance(refused, VenueAuthError)
        assert refused.credential_digest == digest_of(
            other_rsa_keypair.private_pem.decode().strip()
        )
        replace_file(key_file, rsa_keypair.private_pem.decode())
        await recorder.until(lambda: len(recorder.snapshots) >= 1)
        assert poller.auth_retry_at == 0.0


async def test_discovery_adds_and_drops_accounts(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    config = fast(
        cs_config,
        accounts=(AccountConfig("19816"),),
        discovery=DiscoveryConfig(interval=0.2, labels={"source": "discovery"}),
    )
    async with running(config, http_client) as (poller, recorder):
        await recorder.until(lambda: {"19817", "19818"} <= poller.accounts.keys())
        simulator.add_account("clearstreet", "424242")
        await recorder.until(lambda: any(s.account == "424242" for s in recorder.snapshots))
        simulator.remove_account("clearstreet", "424242")
        simulator.remove_account("clearstreet", "19816")  # configured: stays monitored
        await recorder.until(lambda: "424242" not in poller.accounts)
        assert "19816" in poller.accounts
        assert not poller.accounts["19816"].discovered
        assert poller.accounts["19817"].account.labels == {"source": "discovery"}
    assert any("424242" in removed for _, removed in recorder.changes)


async def test_a_reloaded_venue_keeps_the_state_of_accounts_it_still_polls(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    discovering = fast(cs_config, accounts=(), discovery=DiscoveryConfig(interval=0.2))
    async with running(discovering, http_client) as (old, recorder):
        await recorder.until(lambda: len(recorder.snapshots) >= 3)
        assert old.accounts_settled
    states = dict(old.accounts)
    assert {"19816", "19817", "19818"} == states.keys()

    # Still discovering, one account now configured: every state is taken over, the
    # discovered ones stay discovered until discovery answers; nothing is known yet.
    reloaded = VenuePoller(
        dataclasses.replace(discovering, accounts=(AccountConfig("19816", {"desk": "a"}),)),
        create_adapter(discovering, http_client),
        Recorder(),
    )
    assert not reloaded.accounts_settled
    assert reloaded.adopt(states) == []
    assert reloaded.accounts["19816"] is states["19816"]
    assert reloaded.accounts["19816"].account.labels == {"desk": "a"}
    assert not reloaded.accounts["19816"].discovered
    assert reloaded.accounts["19817"].discovered
    assert reloaded.first_cycle_done.is_set()  # every account was polled before

    # No discovery any more, one account configured: the other two are gone.
    configured = VenuePoller(
        fast(cs_config, accounts=(AccountConfig("19817"),)),
        create_adapter(cs_config, http_client),
        Recorder(),
    )
    assert configured.accounts_settled
    assert sorted(configured.adopt(states)) == ["19816", "19818"]
    assert configured.accounts.keys() == {"19817"}
    assert configured.accounts["19817"] is states["19817"]
    assert not configured.accounts["19817"].discovered


async def test_discovery_failure_keeps_the_accounts_found_before(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    config = fast(cs_config, accounts=(), discovery=DiscoveryConfig(interval=0.2))
    async with running(config, http_client) as (poller, recorder):
        await recorder.until(lambda: len(poller.accounts) == 3)
        simulator.add_fault(
            {"venue": "clearstreet", "endpoint": "accounts", "kind": "status", "status": 400}
        )
        await recorder.until(lambda: poller.discovery_error is not None)
        assert len(poller.accounts) == 3


async def test_shards_split_the_accounts_between_replicas(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    for i in range(40):
        simulator.add_account("clearstreet", str(500000 + i))
    config = fast(cs_config, accounts=(), discovery=DiscoveryConfig(interval=30))
    owned: list[set[str]] = []
    for k in range(2):
        async with running(config, http_client, Shard(k, 2)) as (poller, recorder):
            await recorder.until(lambda r=recorder: bool(r.changes))
            owned.append(set(poller.accounts))
    assert owned[0].isdisjoint(owned[1])
    assert len(owned[0] | owned[1]) == 43
    assert 10 < len(owned[0]) < 33


async def test_an_adapter_bug_is_a_failed_poll_not_a_dead_poller(
    cs_config: VenueConfig, http_client: HttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = fast(cs_config, accounts=(AccountConfig("19816"),))
    calls = 0

    async with running(config, http_client) as (poller, recorder):
        original = poller.adapter.fetch

        async def flaky(account: AccountConfig, deadline: float) -> Snapshot:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise KeyError("bug")
            return await original(account, deadline)

        monkeypatch.setattr(poller.adapter, "fetch", flaky)
        await recorder.until(lambda: len(recorder.snapshots) >= 1)
    assert "internal error: KeyError" in str(recorder.failures[0][1])
    assert not isinstance(recorder.failures[0][1], VenueUnavailable)
