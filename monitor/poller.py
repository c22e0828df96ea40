"""When to poll: intervals, spreading, overruns, staleness, discovery and sharding.

The poller knows nothing about a venue's wire format: it asks an adapter for a Snapshot
and hands what happened to a listener. Each account has a fixed phase inside its
venue's interval (a hash of its name), so requests are spread evenly over the interval
instead of bursting at its start (polls due within `START_WINDOW` of each other start
together, which saves the loop a wake-up per poll). A poll that is still running when
its account comes due again is not stacked: that turn is skipped and counted.

An account's first poll (at start, or when discovery adds it) need not wait for its
phase: the accounts that have never been polled are caught up one after another at the
venue's `max_requests_per_second`, less what the accounts already polled ask of it, and
each continues at its phase from the next interval on. So a restarted daemon knows every
account (and is ready) after N / max_requests_per_second seconds rather than a whole
interval, and the venue never sees more than the configured rate. An account is polled
at most once per interval; its first two polls may be up to two intervals apart, so the
catch-up is made only when a venue's `stale_after` is at least three intervals (an
account may then still miss a poll without turning stale), and only when it finishes
within one interval; otherwise first polls keep their phases.

"The interval" is the venue's cycle under its request budget (`monitor/schedule.py`):
`poll_interval` while every account fits in `max_requests_per_second`, longer when they do
not, so riskmon's own budget never fails a poll. It is planned again every
`REPLAN_SECONDS` and whenever the accounts change; `intervals` holds each account's.
Given a `risk` source (the rules' proximity, `monitor/engine/proximity.py`), an
over-subscribed venue's budget goes where the risk is (`monitor/schedule.py`): an account
whose interval shrinks is polled at its new interval from its last poll, not at the turn
planned before.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from monitor.config import AccountConfig, VenueConfig
from monitor.errors import VenueAuthError, VenueError
from monitor.schedule import (
    PLANNING_SHARE,
    RiskTrack,
    plan_intervals,
    uniform_cycle,
    wanted_interval,
)
from monitor.shard import Shard
from monitor.snapshot import Snapshot
from monitor.supervise import Supervisor
from monitor.venues.base import VenueAdapter
from monitor.venues.limits import RequestBudgetExceeded
from monitor.venues.registry import account_id_problem

log = structlog.get_logger("riskmon.poller")

AUTH_BACKOFF_MIN = 30.0  # after a 401 the venue is probed again no sooner than this
AUTH_BACKOFF_MAX = 300.0
# While backing off, how often the venue's credential files are looked at: a changed
# credential ends the back-off (an operator who fixed the key should not wait minutes).
CREDENTIAL_CHECK_SECONDS = 1.0
# Polls due within this many seconds start together, up to that much before their phase:
# at 1,000 accounts a second, waking once per poll cost a third of the daemon's CPU
# (bench/latency.py: 51% of a core against 36% with 5 ms, detection latency unchanged);
# at 3,333 polls a second 20 ms took 4% less CPU a poll than 5 ms (bench/poll_cost.py:
# more answers read per wake-up), and a poll 20 ms early is still on its interval.
START_WINDOW = 0.02
CATCH_UP_MIN_STALE_INTERVALS = 3.0  # stale_after / poll_interval at which first polls catch up
_TASKS_SHRINK_BELOW = 256  # in-flight polls under which an outgrown set is made anew
_TASKS_TABLE_KEPT = 64 * 1024  # bytes of set table (4,096 slots) kept regardless
REPLAN_SECONDS = 1.0  # how often the intervals follow the budget (which recovers gradually)
PULL_IN_BELOW = 0.5  # a turn is moved sooner when the new interval is under this share


@dataclass(slots=True)
class AccountState:
    """What the poller knows about one account; read by the API and staleness checks."""

    venue: str
    account: AccountConfig
    discovered: bool = False
    added_at: float = field(default_factory=time.time)
    last_snapshot: Snapshot | None = None
    last_success: float | None = None  # wall-clock seconds
    last_attempt: float | None = None
    last_error: VenueError | None = None
    consecutive_failures: int = 0
    in_flight: bool = False
    polls: int = 0
    auth_retry_at: float = 0.0  # loop time before which a 403'd account is not polled

    @property
    def id(self) -> str:
        return self.account.id

    def age(self, now: float) -> float:
        """Seconds since the last good snapshot (or since monitoring began)."""
        return now - (self.last_success if self.last_success is not None else self.added_at)

    def is_stale(self, now: float, stale_after: float) -> bool:
        return self.age(now) > stale_after


class PollListener:
    """What the poller reports. Subclass and override what you need; all are no-ops."""

    def on_snapshot(self, snapshot: Snapshot, duration: float) -> None:
        """A poll succeeded."""

    def on_failure(self, state: AccountState, error: VenueError, duration: float) -> None:
        """A poll failed; `state.last_snapshot` is the last good one, kept for display."""

    def on_skipped(self, state: AccountState, reason: str) -> None:
        """A turn was not polled: `overrun` (still running) or `auth_backoff`."""

    def on_accounts_changed(self, venue: str, added: list[str], removed: list[str]) -> None:
        """Discovery (or sharding) changed the set of monitored accounts."""

    def on_cycle(self, venue: str) -> None:
        """Every account of `venue` has been polled at least once since start."""


class RiskSource(Protocol):
    """What the risk-aware schedule needs to know of the rules (RuleProximity)."""

    def gaps(self, snapshot: Snapshot) -> Sequence[float | None]:
        """Each rule comparison's value - threshold on the snapshot."""
        ...

    def alerting(self, venue: str, account: str) -> bool:
        """Whether an alert of the account is pending or firing."""
        ...


def _unreported(task: str, error: BaseException) -> None:
    """The default supervisor's report: the crash is logged, nothing else listens."""


def phase_of(venue: str, account: str) -> float:
    """A stable fraction in [0, 1): where in its interval an account is polled."""
    digest = hashlib.blake2b(f"{venue}\x00{account}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class VenuePoller:
    """Polls every account of one venue on its interval."""

    def __init__(
        self,
        config: VenueConfig,
        adapter: VenueAdapter,
        listener: PollListener,
        *,
        shard: Shard | None = None,
        wall_clock: Callable[[], float] = time.time,
        supervisor: Supervisor | None = None,
        risk: RiskSource | None = None,
    ) -> None:
        """`supervisor` starts discovery again when it crashes and reports crashed
        polls (default: one that only logs them); `risk`: where the budget goes when
        the accounts do not all fit at poll_interval (without: to all alike)."""
        self.risk = risk
        self._tracks: dict[str, RiskTrack] = {}
        self._last_start: dict[str, float] = {}  # loop time each account's poll started
        self._due: dict[str, float] = {}  # the turn each account has in the heap
        self.config = config
        self.adapter = adapter
        self.listener = listener
        self.shard = shard
        self.wall_clock = wall_clock
        self.supervisor = supervisor or Supervisor(_unreported)
        self.accounts: dict[str, AccountState] = {}
        self.discovery_error: VenueError | None = None
        self.first_cycle_done = asyncio.Event()
        self._heap: list[tuple[float, int, str]] = []
        self._generation: dict[str, int] = {}
        self._resume: dict[str, float] = {}  # caught-up account -> its next phase turn
        self._catch_up_until = 0.0  # loop time the first polls planned so far end
        self._running = False  # first polls are planned when run() starts
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._never_polled: set[str] = set()
        self._auth_retry_at = 0.0
        self._auth_backoff = AUTH_BACKOFF_MIN
        self._refused_credential: str | None = None  # digest of what the venue refused
        self._credential_watch: asyncio.Task[None] | None = None
        self._stopping = False
        self.intervals: dict[str, float] = {}  # account -> the interval planned for it now
        self._cycle = config.poll_interval  # the interval every account fits in now
        self._next_plan = 0.0  # loop time
        # whether the accounts are known: at once without discovery, otherwise once
        # discovery has answered (until then an account may or may not be the venue's)
        self.accounts_settled = config.discovery is None
        self.set_accounts(config.accounts, discovered=False)

    @property
    def auth_retry_at(self) -> float:
        """Loop time before which the venue is not polled because it refused the
        credentials; in the past (0.0 at first) when it is not backing off."""
        return self._auth_retry_at

    # -- the account set -------------------------------------------------------------

    def set_accounts(self, accounts: Iterable[AccountConfig], *, discovered: bool) -> None:
        """Replace the configured (or the discovered) accounts; keep the state of those
        that stay. Configured accounts win over discovered ones with the same id."""
        wanted = {
            a.id: a
            for a in accounts
            if self.shard is None or self.shard.owns(self.config.name, a.id)
        }
        added, removed = [], []
        for account_id, state in list(self.accounts.items()):
            if state.discovered == discovered and account_id not in wanted:
                del self.accounts[account_id]
                self._generation.pop(account_id, None)
                self._resume.pop(account_id, None)
                self._never_polled.discard(account_id)
                self.intervals.pop(account_id, None)
                self._tracks.pop(account_id, None)
                self._last_start.pop(account_id, None)
                self._due.pop(account_id, None)
                removed.append(account_id)
        for account_id, account in wanted.items():
            existing = self.accounts.get(account_id)
            if existing is not None:
                if discovered and not existing.discovered:
                    continue
                existing.account = account
                continue
            self.accounts[account_id] = AccountState(
                self.config.name, account, discovered=discovered, added_at=self.wall_clock()
            )
            self._never_polled.add(account_id)
            added.append(account_id)
        if added or removed:
            self._plan(asyncio.get_running_loop().time() if self._running else 0.0)
        if added and self._running:
            self._schedule_first(added, asyncio.get_running_loop().time())
        if added or removed:
            self.listener.on_accounts_changed(self.config.name, added, removed)
            self._wakeup.set()
        self._check_first_cycle()

    def adopt(self, states: Mapping[str, AccountState]) -> list[str]:
        """Take over the states of the same venue's previous poller (a reload), before
        `run()`: the accounts it still polls keep their snapshot, failures and phase, and
        so do discovered ones while discovery is on (its next answer settles them).
        Returns the ids it no longer polls."""
        gone = []
        for account_id, state in states.items():
            mine = self.accounts.get(account_id)
            if mine is not None:
                state.account = mine.account
                state.discovered = mine.discovered
            elif self.config.discovery is not None and (
                self.shard is None or self.shard.owns(self.config.name, account_id)
            ):
                state.discovered = True
            else:
                gone.append(account_id)
                continue
            self.accounts[account_id] = state
            if state.polls:
                self._never_polled.discard(account_id)
            else:
                self._never_polled.add(account_id)
        self._check_first_cycle()
        self._plan(0.0)
        return gone

    def _phase_turn(self, account_id: str, now: float) -> float:
        """The account's first turn at its phase at or after `now` (loop time)."""
        interval = self._cycle
        due = now - (now % interval) + phase_of(self.config.name, account_id) * interval
        return due + interval if due < now else due

    def _schedule_first(self, account_ids: Sequence[str], now: float) -> None:
        """Schedule the first poll of each account (see the module's docstring): those
        never polled are caught up at the spare request rate where that is sooner than
        their phase, the others (a reloaded venue's) wait for their phase."""
        config = self.config
        interval = self._cycle
        turns = sorted((self._phase_turn(a, now), a) for a in account_ids)
        new = [t for t in turns if self.accounts[t[1]].polls == 0]
        spacing = 0.0
        start = max(now, self._catch_up_until)
        if new and config.stale_after >= CATCH_UP_MIN_STALE_INTERVALS * interval:
            # What the accounts already on their phases ask of the venue meanwhile.
            rate = self.adapter.limits.budget.planning_rate(now) * PLANNING_SHARE
            spare = rate - (len(self.accounts) - len(new)) / interval
            if spare > 0 and start + len(new) / spare <= now + interval:
                spacing = 1.0 / spare
                self._catch_up_until = start + len(new) * spacing
        early = {}
        if spacing:
            for i, (turn, account_id) in enumerate(new):
                at = start + i * spacing
                if at < turn:
                    early[account_id] = at
        for turn, account_id in turns:
            generation = self._generation.get(account_id, 0) + 1
            self._generation[account_id] = generation
            due = early.get(account_id)
            if due is None:
                due = turn
                self._resume.pop(account_id, None)
            else:
                self._resume[account_id] = turn + interval
            self._push(due, generation, account_id)

    def _push(self, due: float, generation: int, account_id: str) -> None:
        self._due[account_id] = due
        heapq.heappush(self._heap, (due, generation, account_id))

    @property
    def budget_binds(self) -> bool:
        """Whether the accounts do not all fit at poll_interval now."""
        return self._cycle > self.config.poll_interval

    def _plan(self, now: float) -> None:
        """Each account's interval under the venue's budget at `now` (loop time)."""
        rate = self.adapter.limits.budget.planning_rate(now)
        config = self.config
        self._cycle = uniform_cycle(len(self.accounts), rate, config.poll_interval)
        if self.risk is None or not self.budget_binds:
            if len(self.intervals) != len(self.accounts) or any(
                interval != self._cycle for interval in self.intervals.values()
            ):
                self.intervals = dict.fromkeys(self.accounts, self._cycle)
            return
        risk, venue, tracks = self.risk, config.name, self._tracks
        wanted = {}
        for account_id in self.accounts:
            track = tracks.get(account_id)
            wanted[account_id] = wanted_interval(
                track.time_to_cross() if track is not None else None,
                risk.alerting(venue, account_id),
                config.poll_interval,
                config.max_poll_interval,
            )
        planned = plan_intervals(wanted, rate, config.poll_interval, config.max_poll_interval)
        self.intervals = planned
        if not self._running:
            return
        for account_id, interval in planned.items():
            # Much sooner than its turn in the heap: the account moved closer to a
            # threshold. Smaller changes wait for that turn: the estimates are noisy, and
            # every poll made early is one more than planned.
            started = self._last_start.get(account_id)
            due = self._due.get(account_id)
            if started is None or due is None or interval > (due - started) * PULL_IN_BELOW:
                continue
            generation = self._generation.get(account_id, 0) + 1
            self._generation[account_id] = generation
            self._resume.pop(account_id, None)
            self._push(max(started + interval, now), generation, account_id)

    # -- running -----------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until `stop()`; then wait for the polls in flight to end."""
        loop = asyncio.get_running_loop()
        self._running = True
        self._schedule_first(list(self.accounts), loop.time())
        discovery = (
            self.supervisor.start(f"discovery-{self.config.name}", self._discover_forever)
            if self.config.discovery
            else None
        )
        try:
            while not self._stopping:
                await self._run_due(loop)
        finally:
            if discovery is not None:
                discovery.cancel()
            if self._credential_watch is not None:
                self._credential_watch.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run_due(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        if now >= self._next_plan:
            self._plan(now)
            self._next_plan = now + REPLAN_SECONDS
        horizon = now + START_WINDOW
        paused_until = self.adapter.limits.budget.paused_until  # starting polls leaves it
        while self._heap and self._heap[0][0] <= horizon:
            due, generation, account_id = heapq.heappop(self._heap)
            if self._generation.get(account_id) != generation:
                continue  # the account left or was rescheduled
            if now < paused_until:
                # The venue asked for a pause: the turn waits for its end (spread over the
                # cycle the budget allows then), and is neither a failure nor a skip.
                later = paused_until + phase_of(self.config.name, account_id) * self._cycle
                self._push(later, generation, account_id)
                continue
            interval = self.intervals.get(account_id, self._cycle)
            started = self._last_start.get(account_id)
            if started is not None and due + START_WINDOW < started + interval:
                # Its interval grew since this turn was planned (the budget went to
                # others): the turn moves, or the venue would get more than planned.
                self._push(started + interval, generation, account_id)
                continue
            next_due = self._resume.pop(account_id, None)
            if next_due is None:  # an account on its phase: the same phase next interval
                next_due = due + interval
            elif not self._resume:  # the first polls' catch-up is over: its table goes
                self._resume = {}
            if next_due <= now:  # the loop fell behind: do not replay missed turns
                next_due = now + interval
            self._push(next_due, generation, account_id)
            self._last_start[account_id] = now
            self._start_poll(account_id, loop)
        timeout = min(self._heap[0][0] if self._heap else self._next_plan, self._next_plan)
        timeout -= loop.time()
        self._wakeup.clear()
        if timeout > 0:
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    def _start_poll(self, account_id: str, loop: asyncio.AbstractEventLoop) -> None:
        state = self.accounts[account_id]
        now = loop.time()
        if state.in_flight:
            self.listener.on_skipped(state, "overrun")
            return
        if now < self._auth_retry_at or now < state.auth_retry_at:
            self.listener.on_skipped(state, "auth_backoff")
            return
        state.in_flight = True
        deadline = now + max(self.config.poll_interval, self.config.timeout)
        task = loop.create_task(self._poll(state, deadline))
        self.supervisor.watch(task, f"account-poll-{self.config.name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        tasks = self._tasks
        tasks.discard(task)
        # A set (or dict) keeps the table of its largest size: a first cycle with
        # thousands of polls waiting for connections left 512 KB per 10,000 accounts here
        # (bench.memory), as the first polls' catch-up did in `_resume`.
        if len(tasks) < _TASKS_SHRINK_BELOW and sys.getsizeof(tasks) > _TASKS_TABLE_KEPT:
            self._tasks = set(tasks)

    async def poll_once(self, account_id: str) -> Snapshot | VenueError:
        """Poll one account now (outside the schedule), reporting as usual."""
        state = self.accounts[account_id]
        loop = asyncio.get_running_loop()
        state.in_flight = True
        await self._poll(state, loop.time() + max(self.config.poll_interval, self.config.timeout))
        return (
            state.last_snapshot
            if state.last_error is None and state.last_snapshot
            else (state.last_error or VenueError("no result"))
        )

    async def _poll(self, state: AccountState, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        state.last_attempt = self.wall_clock()
        try:
            snapshot = await self.adapter.fetch(state.account, deadline)
        except RequestBudgetExceeded:
            # riskmon's own budget (or the venue's pause) had no turn for it in time:
            # not the venue's failure; the account is polled at its next turn.
            self.listener.on_skipped(state, "budget")
        except VenueError as error:
            duration = loop.time() - started
            self._failed(state, error, duration, loop)
        except Exception as exc:  # a bug in an adapter must not stop the poller
            duration = loop.time() - started
            log.exception("adapter crashed", venue=self.config.name, account=state.id)
            self._failed(state, VenueError(f"internal error: {type(exc).__name__}"), duration, loop)
        else:
            duration = loop.time() - started
            if self.accounts.get(state.id) is state:  # it may have left meanwhile
                if state.consecutive_failures:
                    log.info(
                        "poll recovered",
                        venue=self.config.name,
                        account=state.id,
                        after_failures=state.consecutive_failures,
                    )
                state.last_snapshot = snapshot
                state.last_success = snapshot.taken_at
                state.last_error = None
                state.consecutive_failures = 0
                self._auth_backoff = AUTH_BACKOFF_MIN
                if self.risk is not None and self.budget_binds:
                    self._observe_risk(state.id, snapshot, loop.time())
                self.listener.on_snapshot(snapshot, duration)
        finally:
            state.in_flight = False
            state.polls += 1
            self._never_polled.discard(state.id)
            self._check_first_cycle()

    def _observe_risk(self, account_id: str, snapshot: Snapshot, now: float) -> None:
        assert self.risk is not None
        try:
            gaps = self.risk.gaps(snapshot)
        except Exception:  # a bug there must not stop polling: the account goes uniform
            log.exception("measuring the rules' proximity failed", venue=self.config.name)
            self._tracks.pop(account_id, None)
            return
        track = self._tracks.get(account_id)
        if track is None:
            track = self._tracks[account_id] = RiskTrack()
        track.observe(now, gaps)

    def _failed(
        self,
        state: AccountState,
        error: VenueError,
        duration: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        error.venue = error.venue or self.config.name
        error.account = error.account or state.id
        previous = state.last_error
        state.last_error = error
        state.consecutive_failures += 1
        # Log when an account starts failing or fails differently; repeats are debug only,
        # so a venue outage does not flood the log with one line per account per poll.
        changed = previous is None or type(previous) is not type(error)
        (log.warning if changed else log.debug)(
            "poll failed",
            venue=self.config.name,
            account=state.id,
            error=str(error),
            error_type=type(error).__name__,
            status=error.status,
            request_id=error.request_id,
            consecutive_failures=state.consecutive_failures,
        )
        if isinstance(error, VenueAuthError):
            if error.status == 403:  # permission on this account: back off this account
                state.auth_retry_at = loop.time() + AUTH_BACKOFF_MIN
            else:  # the credentials are wrong: back off the whole venue
                self._back_off_venue(error, loop)
        if self.accounts.get(state.id) is state:
            self.listener.on_failure(state, error, duration)

    def _back_off_venue(self, error: VenueAuthError, loop: asyncio.AbstractEventLoop) -> None:
        self._auth_retry_at = loop.time() + self._auth_backoff
        self._auth_backoff = min(self._auth_backoff * 2, AUTH_BACKOFF_MAX)
        on_disk = self.adapter.credential_digest()
        if on_disk is None:  # no credential file: nothing can change until a reload
            return
        # The adapter names the credential it sent when it can: the file may have
        # changed while the refused request was in flight.
        self._refused_credential = error.credential_digest or on_disk
        if self._credential_watch is None and not self._stopping:
            self._credential_watch = self.supervisor.watch(
                loop.create_task(self._watch_credentials()),
                f"credential-watch-{self.config.name}",
            )

    async def _watch_credentials(self) -> None:
        """While the venue is in auth back-off, end it as soon as a credential file holds
        something other than what was refused; an unchanged one keeps the back-off."""
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping:
                left = self._auth_retry_at - loop.time()
                if left <= 0:
                    return
                await asyncio.sleep(min(CREDENTIAL_CHECK_SECONDS, left))
                if loop.time() >= self._auth_retry_at:
                    return
                if self.adapter.credential_digest() != self._refused_credential:
                    log.info(
                        "credentials changed; ending the auth back-off", venue=self.config.name
                    )
                    self._auth_retry_at = 0.0
                    self._auth_backoff = AUTH_BACKOFF_MIN
                    return
        finally:
            self._credential_watch = None

    def _check_first_cycle(self) -> None:
        if not self._never_polled and not self.first_cycle_done.is_set():
            self._never_polled = set()  # not the emptied one: a table for every account
            self.first_cycle_done.set()
            self.listener.on_cycle(self.config.name)

    async def _discover_forever(self) -> None:
        assert self.config.discovery is not None
        loop = asyncio.get_running_loop()
        while True:
            await self.discover_once(loop.time() + max(self.config.timeout, 10.0))
            await asyncio.sleep(self.config.discovery.interval)

    async def discover_once(self, deadline: float) -> None:
        """Ask the venue which accounts it has (by `deadline`, loop time) and monitor
        those; when it cannot say, keep the accounts found before."""
        discovery = self.config.discovery
        assert discovery is not None
        try:
            ids = await self.adapter.list_accounts(deadline)
        except VenueError as error:
            self.discovery_error = error
            log.warning(
                "account discovery failed; keeping the accounts found before",
                venue=self.config.name,
                error=str(error),
                request_id=error.request_id,
            )
            return
        self.discovery_error = None
        self.set_accounts(
            (AccountConfig(i, discovery.labels, discovery.params) for i in self._monitorable(ids)),
            discovered=True,
        )
        self.accounts_settled = True

    def _monitorable(self, ids: list[str]) -> list[str]:
        """The discovered ids that could be configured (`account_id_problem`); the others
        (an empty id would be an empty MQTT topic level and an invalid event) are skipped
        with a warning at every discovery that lists them."""
        kind = self.config.kind
        kept = [i for i in ids if account_id_problem(kind, i) is None]
        if len(kept) < len(ids):
            skipped = [i for i in ids if account_id_problem(kind, i) is not None]
            log.warning(
                "discovery listed account ids riskmon cannot monitor; skipped",
                venue=self.config.name,
                count=len(skipped),
                skipped=[repr(i)[:60] for i in skipped[:5]],
                reason=account_id_problem(kind, skipped[0]),
            )
        return kept

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()


class Poller:
    """Every venue's poller, run together."""

    def __init__(self, venues: Sequence[VenuePoller]) -> None:
        self.venues = {v.config.name: v for v in venues}

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for venue in self.venues.values():
                group.create_task(venue.run())

    def stop(self) -> None:
        for venue in self.venues.values():
            venue.stop()

    async def wait_first_cycle(self) -> None:
        await asyncio.gather(*(v.first_cycle_done.wait() for v in self.venues.values()))
