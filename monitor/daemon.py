"""`riskmon run`: wires poller, evaluator, lifecycle, outbox and publishers together.

The daemon owns the event loop, the signals and reloads; every decision is made by the
parts it wires: the poller decides when to poll, the evaluator and lifecycle what an
answer means, the outbox and publisher how events leave. Data moves one way:

    poller -> adapter -> Snapshot -> evaluator -> lifecycle -> outbox -> MQTT
                   \\-> latest snapshots, alert states, counters -> /metrics, /api
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import decimal
import gc
import os
import platform
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

import structlog

from monitor import __version__
from monitor.alertmanager import metrics as alertmanager_metrics
from monitor.alertmanager.sender import AlertmanagerSender
from monitor.api import (
    AsyncHttpServer,
    account_json,
    alert_json,
    create_app,
    start_http,
    status_json,
)
from monitor.api_auth import ApiAuth, is_loopback_listen
from monitor.api_tls import server_ssl_context
from monitor.api_v2 import add_routes as add_alertmanager_routes
from monitor.api_v2 import alertmanager_alert, alertmanager_status
from monitor.broker import BrokerUnavailable, EmbeddedBroker
from monitor.config import Config, VenueConfig, load_config
from monitor.config.http_section import token_file_exposure
from monitor.engine.announce import Announcer
from monitor.engine.builtin import (
    RISKMON,
    VENUE_WIDE,
    AccountHealth,
    StaleHold,
    builtin_rules,
    could_be_stale,
    evaluate_health,
    riskmon_snapshot,
)
from monitor.engine.check import config_problems
from monitor.engine.evaluate import Evaluator
from monitor.engine.expr import CONTEXT, EvalError
from monitor.engine.lifecycle import Alert, AlertBook, AlertEvent, firing_event
from monitor.engine.model import InhibitRule, Rule, RuleSet
from monitor.engine.param_usage import params_read
from monitor.engine.params_check import ParamPlaces
from monitor.engine.proximity import RuleProximity
from monitor.engine.reload import RuleSource, Validate
from monitor.engine.runbook import runbook_template
from monitor.engine.suppress import BUILTIN_INHIBIT_RULES
from monitor.errors import VenueAuthError, VenueError
from monitor.health import HealthProblems
from monitor.history.journal import file_digest
from monitor.metrics import Metrics
from monitor.outbox_metrics import OutboxMetrics
from monitor.outbox_writer import OutboxWriter
from monitor.poller import AccountState, PollListener, VenuePoller
from monitor.publish.events import event_payload, rfc3339, to_entry
from monitor.publish.mqtt import MqttPublisher
from monitor.recording import write_record
from monitor.shard import Shard
from monitor.silences import SilenceBook, SilenceError, silence_json
from monitor.snapshot import Snapshot
from monitor.store import Store, StoreError
from monitor.supervise import Supervisor
from monitor.venue_fields import decimal_fields_map, kind_fields_map, often_absent_map
from monitor.venues.base import create_adapter
from monitor.venues.http import HttpClient, http_client_for
from monitor.yamlsource import KeyPath, Location, Problem, SourceError, YamlDocument

# `RISKMON_SCHEDULE=uniform`: an over-subscribed venue's budget is spread over all its
# accounts alike instead of where the risk is (for comparisons: bench/budget.py).
SCHEDULE_VARIABLE = "RISKMON_SCHEDULE"

log = structlog.get_logger("riskmon.daemon")

TICK = 1.0  # seconds between health evaluations, metric refreshes and state saves
RULE_WATCH = 2.0  # seconds between checks of the rule files for changes
SHUTDOWN_FLUSH = 10.0  # seconds to publish what is left at shutdown
POLLER_STOP = 3.0  # seconds polls in flight may take to finish at shutdown
GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections (Python's default: 700)
TICK_LATE = 5 * TICK + 5  # seconds without a tick: the loop or the tick is stuck
LOOP_LAG_BOUND = 5.0  # seconds: a tick this late means the loop stalls; /healthz fails
JOURNAL_PRUNE_EVERY = 60.0  # seconds between looks for records past history_retention
#: The settings a start-up can fail on after the config checked out (a port in use,
#: a state_dir another riskmon holds); their errors stand where they are set.
_STARTUP_SETTINGS: tuple[KeyPath, ...] = (
    ("state_dir",),
    ("http", "listen"),
    ("http", "tls"),
    ("mqtt", "url"),
    ("record_snapshots",),
)


class Daemon(PollListener):
    """One running riskmon instance."""

    def __init__(self, config: Config, *, shard: Shard | None = None) -> None:
        # Where the settings start-up can fail on stand in the file, for its errors.
        document = config.document
        self._where = {
            path: document.at(path) if document else Location(str(config.source), 1, 1)
            for path in _STARTUP_SETTINGS
        }
        # The YAML document (its node tree, for `riskmon check`'s locations) is not
        # needed once loaded: 800 bytes an account (bench/memory.py).
        self.config = config = dataclasses.replace(config, document=None)
        self.shard = shard
        self.started_at = time.time()
        # the rules are checked against the config (params, venue kinds) as `check` does
        self.rule_source = RuleSource(config.rules, validate=rule_check(config, document))
        self.rule_source.load()  # a broken rule set at start is fatal: SourceError
        self.rule_source.validate = rule_check(config, None)  # the document is not kept
        self._last_reload: tuple[float, bool, list[Problem]] = (self.started_at, True, [])
        try:
            self.store = Store(config.state_dir / "riskmon.db")
        except StoreError as exc:
            raise self._startup_error(("state_dir",), f"state_dir: {exc}") from None
        try:
            # every event is queued for each Alertmanager too (alertmanagers change at restart)
            forgotten = self.store.set_destinations([am.url for am in config.alertmanagers])
            self.book = AlertBook.from_json(self.store.load_alerts())
            self.silences = SilenceBook(self.store)
        except (StoreError, SilenceError) as exc:
            self.store.close()
            raise self._startup_error(("state_dir",), f"state_dir: {exc}") from None
        runbook_url = runbook_template(config.builtin_alerts.runbook_url)
        # the rules' proximity, for the schedule of venues whose accounts do not all fit
        # in their request budget at poll_interval
        self.proximity = RuleProximity(lambda: self.evaluator.rules, self._alerting)
        self.evaluator = Evaluator(
            self.rule_source.rules,
            self.book,
            on_eval_failure=self._evaluation_failed,
            runbook_url=runbook_url,
            often_absent=often_absent_map(),
            decimal_fields=decimal_fields_map(),
        )
        self.health = Evaluator(
            builtin_rules(config.builtin_alerts), self.book, runbook_url=runbook_url
        )
        self.stale_hold = StaleHold()  # AccountDataStale waits while VenueDown is pending
        # which events reach the pager: inhibitions and silences (monitor/engine/announce.py)
        self.announcer = Announcer(self._inhibit_rules, lambda: self.silences.all, self._polls_of)
        self.metrics = Metrics()
        self.problems = HealthProblems()  # what keeps riskmon from alerting: /healthz
        self.outbox = OutboxWriter(self.store, self.problems, notify=self._notify_publisher)
        self.outbox_metrics = OutboxMetrics(self.store, self.outbox)
        self._failing_rules: set[str] = set()  # alertnames whose failure was logged as a warning
        # Background tasks: a crash is logged, counted, and the task started again;
        # /healthz fails from a crash until the task has run steadily again.
        self.supervisor = Supervisor(self._task_crashed, self._task_steady)
        # (venue, account) whose last snapshot the daemon failed to take in (a bug, or
        # a part of it that failed): /healthz fails while there is one
        self._failing_evaluations: set[tuple[str, str]] = set()
        self._rules_loaded(self.rule_source.rules)
        self.metrics.set_reload(True, self.started_at)
        self.metrics.set_config_warnings(len(self.rule_source.status.warnings))
        self.http: dict[str, HttpClient] = {}  # per venue: its own pool, proxy and TLS
        self.pollers: dict[str, VenuePoller] = {}
        self.poller_tasks: dict[str, asyncio.Task[None]] = {}
        self.publisher: MqttPublisher | None = None
        self.alertmanagers: list[AlertmanagerSender] = []  # created once HTTP listens
        self.broker: EmbeddedBroker | None = None
        self.http_port = 0
        self.loop_lag = 0.0
        self.last_tick = time.monotonic()
        self.polls = 0
        self._saved_alerts: list[dict[str, Any]] | None = None
        self.serving = asyncio.Event()  # set once HTTP and MQTT are started
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        # one reload at a time (the rule watch, SIGHUP): each compiles in a thread
        self._reloading = asyncio.Lock()
        self._recording: TextIO | None = None
        # per (venue, venue kind): the params its rules read and their defaults, and
        # accounts' params cut to those (by venue and id of the mapping), for
        # riskmon_account_param
        self._param_defaults: dict[tuple[str, str], tuple[Mapping[str, Any], frozenset[str]]] = {}
        self._param_overrides: dict[tuple[str, int], tuple[Mapping[str, Any], Mapping[str, Any]]]
        self._param_overrides = {}
        self._param_defaults_of: RuleSet | None = None
        self._unsettled: set[str] = set()  # venues whose discovery has not answered yet
        self._next_prune = 0.0  # when to look for journal records past history_retention
        for url, count in forgotten.items():
            log.warning(
                "events queued for an Alertmanager no longer configured are dropped",
                alertmanager=url,
                events=count,
            )
        try:
            self._requeue_dead_letters("at start-up")
        except StoreError as exc:
            self.store.close()
            raise self._startup_error(("state_dir",), f"state_dir: {exc}") from None
        self._journal_load("start", True, self.rule_source.rules.files)

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or `stop()`); then shut down gracefully; exit code."""
        # Rules compute in CONTEXT; every task started from here on inherits it, so the
        # evaluator need not switch to it and back for each snapshot (0.3 us of the 2 us
        # that 20 rules take: bench/rule_eval.py).
        decimal.setcontext(CONTEXT)
        loop = asyncio.get_running_loop()
        for sig, handler in (
            (signal.SIGTERM, self.stop),
            (signal.SIGINT, self.stop),
            (signal.SIGHUP, self._reload_requested.set),
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, handler)
        self.supervisor.install(loop)
        try:
            server, publisher, mqtt_url = await self._start()
        except BaseException:
            await self._close()
            self.supervisor.uninstall(loop)
            raise
        background = [
            self._supervised("mqtt", publisher.run),
            self._supervised("tick", self._tick_forever),
            self._supervised("rule-watch", self._watch_rules),
            self._supervised("reload", self._reload_on_request),
            *(self._supervised(f"alertmanager {am.name}", am.run) for am in self.alertmanagers),
        ]
        for venue in self.config.venues:
            self._start_venue(venue)
        self._forget_unmonitored(time.time())
        # The heap is settled at the first tick (see _tick_forever); fewer young
        # collections from now on.
        collect_young_less_often()
        self.serving.set()
        log.info(
            "riskmon running",
            instance=self.config.instance,
            version=__version__,
            venues=[v.name for v in self.config.venues],
            shard=str(self.shard or "all"),
            http=f"{self.config.http.listen.rsplit(':', 1)[0]}:{server.port}",
            mqtt=mqtt_url,
            rules=len(self.rule_source.rules.rules),
        )
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(background)
            await server.stop()
            self.supervisor.uninstall(loop)
        return 0

    def _supervised(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """`run()` as a background task that the supervisor starts again after a crash;
        its crash counter starts at 0 (so that `increase()` sees the first crash)."""
        self.metrics.inc_internal_errors(name, 0)
        return self.supervisor.start(name, run)

    def _task_crashed(self, task: str, error: BaseException) -> None:
        """The supervisor's report of a crash (logged with its traceback already)."""
        self.metrics.inc_internal_errors(task)
        if self.supervisor.restarts(task):  # down until started again and steady
            self.problems.fail(
                f"task {task}",
                f"crashed ({type(error).__name__}; see the log), started again with back-off",
                time.time(),
            )

    def _task_steady(self, task: str) -> None:
        if self.problems.recover(f"task {task}"):
            log.info("background task runs again", task=task)

    async def _start(self) -> tuple[AsyncHttpServer, MqttPublisher, str]:
        """Open what the daemon serves and writes to: the recording, the embedded broker,
        the publisher and the HTTP server; the server, the publisher and the broker's
        URL. SourceError at the setting when one fails."""
        recording = self.config.record_snapshots
        if recording is not None:
            try:
                recording.parent.mkdir(parents=True, exist_ok=True)
                self._recording = recording.open("a", encoding="utf-8")
            except OSError as exc:
                raise self._startup_error(
                    ("record_snapshots",), f"record_snapshots: {recording}: {_reason(exc)}"
                ) from None
        mqtt = self.config.mqtt
        if mqtt.url == "embedded":
            self.broker = EmbeddedBroker(self.config.state_dir / "broker")
            try:
                mqtt = dataclasses.replace(mqtt, url=await self.broker.start())
            except BrokerUnavailable as exc:
                raise self._startup_error(("mqtt", "url"), str(exc)) from None
        self.publisher = publisher = MqttPublisher(
            mqtt,
            self.store,
            instance=self.config.instance,
            heartbeat=self._heartbeat,
            on_change=self._publisher_changed,
            on_delivery=self.metrics.observe_event_delivery,
            on_refused=self.outbox_metrics.count_refused,
            on_store_error=lambda _operation, exc: self.outbox.acknowledged(exc, time.time()),
        )
        http = self.config.http
        listen = http.listen
        auth = ApiAuth(http.bearer_token, loopback=is_loopback_listen(listen))
        exposure = token_file_exposure(http.bearer_token)
        if exposure is not None:
            log.warning(exposure)
        try:
            tls = None if http.tls is None else server_ssl_context(http.tls)
        except (OSError, ssl.SSLError) as exc:
            raise self._startup_error(("http", "tls"), f"http.tls: {exc}") from None
        app = create_app(self, auth, history=self.store.path)
        add_alertmanager_routes(app, self)
        try:
            server = await start_http(app, listen, tls)
        except OSError as exc:
            raise self._startup_error(
                ("http", "listen"), f"http.listen {listen}: {_reason(exc)}"
            ) from None
        self.http_port = server.port
        api_url = _api_url(listen, server.port)
        self.alertmanagers = [
            AlertmanagerSender(am, self.store, api_url=api_url, firing=self._firing_payloads)
            for am in self.config.alertmanagers
        ]
        return server, publisher, mqtt.url

    def _startup_error(self, setting: KeyPath, message: str) -> SourceError:
        return SourceError([Problem(self._where[setting], message)])

    async def _close(self) -> None:
        """Close what the daemon opened (the last step of a shutdown, or of a failed
        start); what was not opened is skipped."""
        for name in list(self.http):
            await self.http.pop(name).aclose()
        if self.broker is not None:
            await self.broker.stop()
        if self._recording is not None:
            self._recording.close()
        self.store.close()

    def stop(self) -> None:
        self._stop.set()

    async def _shutdown(self, background: list[asyncio.Task[None]]) -> None:
        log.info("shutting down: polling stops, pending events are flushed")
        for poller in self.pollers.values():
            poller.stop()
        if self.poller_tasks:
            _done, running = await asyncio.wait(self.poller_tasks.values(), timeout=POLLER_STOP)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        self._save_alerts(force=True)
        for task in background:
            if task.get_name() != "mqtt":
                task.cancel()
        if self.publisher is not None:
            await self.publisher.stop(flush_timeout=SHUTDOWN_FLUSH)
        await asyncio.gather(*background, return_exceptions=True)
        await self._close()
        if self.outbox.held:
            log.error(
                "events held in memory are lost: the disk refused them", events=self.outbox.held
            )
        log.info("riskmon stopped", outbox_left=self.store.depth())

    def _start_venue(
        self, venue: VenueConfig, states: dict[str, AccountState] | None = None
    ) -> None:
        http = self.http[venue.name] = http_client_for(venue)
        poller = VenuePoller(
            venue,
            create_adapter(venue, http),
            self,
            shard=self.shard,
            supervisor=self.supervisor,
            risk=None if os.environ.get(SCHEDULE_VARIABLE) == "uniform" else self.proximity,
        )
        gone = poller.adopt(states) if states else []
        self.pollers[venue.name] = poller
        if gone:
            self.on_accounts_changed(venue.name, [], gone)
        self._set_venue_metrics(venue.name)
        if not poller.accounts_settled:
            self._unsettled.add(venue.name)
        self.poller_tasks[venue.name] = self._supervised(f"poll-{venue.name}", poller.run)

    async def _stop_venue(self, name: str) -> dict[str, AccountState]:
        poller = self.pollers.pop(name)
        task = self.poller_tasks.pop(name)
        poller.stop()
        with contextlib.suppress(TimeoutError):  # wait_for cancels it then
            await asyncio.wait_for(task, POLLER_STOP)
        await self.http.pop(name).aclose()
        for gone in (f"poll-{name}", f"discovery-{name}"):  # a crash of theirs is over
            self.problems.recover(f"task {gone}")
        return poller.accounts

    # -- what the poller reports ------------------------------------------------------------

    def on_snapshot(self, snapshot: Snapshot, duration: float) -> None:
        """Take a good snapshot in: metrics, recording, rules, events. Whatever fails in
        there (a bug, a part that fails) is caught here: logged with its traceback once
        per account and burst, counted, and /healthz fails until the account's next
        snapshot goes through: its rules did not run."""
        key = (snapshot.venue, snapshot.account)
        try:
            self._take_snapshot(snapshot, duration)
        except Exception as exc:
            self.metrics.inc_internal_errors("evaluation")
            if key not in self._failing_evaluations:
                self._failing_evaluations.add(key)
                log.error(
                    "taking in a snapshot failed; its rules did not run (further failures"
                    " are counted in riskmon_internal_errors_total and logged at debug level)",
                    venue=snapshot.venue,
                    account=snapshot.account,
                    exc_info=exc,
                )
            else:
                log.debug(
                    "taking in a snapshot failed",
                    venue=snapshot.venue,
                    account=snapshot.account,
                    error=type(exc).__name__,
                )
            self.problems.fail(
                "evaluation",
                f"{len(self._failing_evaluations)} account(s) not evaluated, last"
                f" {snapshot.venue}/{snapshot.account}: {type(exc).__name__} (see the log)",
                time.time(),
            )
        else:
            if self._failing_evaluations:
                self._evaluation_works(key)

    def _evaluation_works(self, key: tuple[str, str]) -> None:
        """The account's snapshots go through again (or it left)."""
        if key in self._failing_evaluations:
            self._failing_evaluations.discard(key)
            log.info("snapshots are taken in again", venue=key[0], account=key[1])
            if not self._failing_evaluations:
                self.problems.recover("evaluation")

    def _take_snapshot(self, snapshot: Snapshot, duration: float) -> None:
        self.polls += 1
        self.metrics.update_account(snapshot)
        self.metrics.set_account_info(snapshot.venue, snapshot.account, snapshot.labels)
        self.metrics.set_account_params(
            snapshot.venue, snapshot.account, *self._params_read(snapshot)
        )
        self.metrics.observe_poll(snapshot.venue, "ok", duration)
        if self._recording is not None:
            write_record(snapshot, self._recording)
        self._emit(self.evaluator.evaluate(snapshot, time.time()), answered_at=snapshot.taken_at)

    def _params_read(self, snapshot: Snapshot) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        """The params of the snapshot's account that its rules read: the rules' defaults
        (one mapping per venue and rule set; a param whose rules disagree on its default
        has none, and is exported only where an account sets it) and the account's own
        (the same mapping while the config does not change, unless it holds a param no
        rule reads, which checks at start and reload refuse)."""
        rules = self.evaluator.rules
        if rules is not self._param_defaults_of:
            self._param_defaults.clear()
            self._param_overrides.clear()
            self._param_defaults_of = rules
        key = (snapshot.venue, snapshot.venue_kind)
        entry = self._param_defaults.get(key)
        if entry is None:
            applying = rules.rules_for(*key)
            read = frozenset(params_read(applying))
            found: dict[str, Any] = {}
            conflicting: set[str] = set()
            for rule in applying:
                for name, value in rule.params.items():
                    if name in read and found.setdefault(name, value) != value:
                        conflicting.add(name)
            shared = {k: v for k, v in found.items() if k not in conflicting}
            entry = self._param_defaults[key] = (shared, read)
        defaults, read = entry
        own = snapshot.params
        if own and not own.keys() <= read:
            cut = self._param_overrides.get((snapshot.venue, id(own)))
            if cut is None or cut[0] is not own:
                cut = (own, {k: v for k, v in own.items() if k in read})
                self._param_overrides[(snapshot.venue, id(own))] = cut
            own = cut[1]
        return defaults, own

    def on_failure(self, state: AccountState, error: VenueError, duration: float) -> None:
        self.polls += 1
        self.metrics.observe_poll(state.venue, error.outcome, duration)
        self.metrics.account_failed(state.venue, state.id, error.outcome)
        self.metrics.set_account_info(state.venue, state.id, state.account.labels)

    def on_skipped(self, state: AccountState, reason: str) -> None:
        self.metrics.count_poll(state.venue, f"skipped_{reason}")

    def on_accounts_changed(self, venue: str, added: list[str], removed: list[str]) -> None:
        now = time.time()
        for account in removed:
            self._account_gone(venue, account, now)
        if added or removed:
            log.info("accounts changed", venue=venue, added=len(added), removed=len(removed))
        self._set_venue_metrics(venue)

    def _forget_unmonitored(self, now: float) -> None:
        """Resolve the alerts of accounts and venues that are no longer monitored: held
        in the saved state from before a restart (the config or the shard changed
        meanwhile) or left behind by a reload. Venues whose discovery has not answered
        yet are left until it has (`_unsettled`)."""
        for venue, account in self.book.accounts():
            poller = self.pollers.get(venue)
            if poller is not None and (
                venue in self._unsettled or account == VENUE_WIDE or account in poller.accounts
            ):
                continue
            if venue == RISKMON:  # riskmon's own alerts (EventsUndeliverable)
                continue
            self._account_gone(venue, account, now)

    def _account_gone(self, venue: str, account: str, now: float) -> None:
        """Its series go; its firing alerts resolve ("account no longer monitored")."""
        self._evaluation_works((venue, account))
        self.metrics.remove_account(venue, account)
        self._emit(self.evaluator.forget_account(venue, account, now))

    def on_cycle(self, venue: str) -> None:
        # First polls are caught up (monitor/poller.py): the daemon may turn ready before
        # its first tick, and the venue's metrics should say so already.
        self._set_venue_metrics(venue)

    def _alerting(self, venue: str, account: str) -> bool:
        return self.book.holds_any(venue, account)

    def _rules_loaded(self, rules: RuleSet) -> None:
        """Each rule's failure counter exists at 0 (so that `increase()` sees the first
        failure), and each rule's first failure is logged as a warning again."""
        for rule in rules.rules:
            self.metrics.inc_rule_evaluation_failures(rule.alert, 0)
        self._failing_rules.clear()

    def _evaluation_failed(self, rule: Rule, snapshot: Snapshot, error: EvalError) -> None:
        self.metrics.inc_rule_evaluation_failures(rule.alert)
        if rule.alert not in self._failing_rules:  # once: a broken rule fails every poll
            self._failing_rules.add(rule.alert)
            log.warning(
                "rule evaluation failed; the rule's further failures are counted in"
                " riskmon_rule_evaluation_failures_total and logged at debug level",
                alertname=rule.alert,
                venue=snapshot.venue,
                account=snapshot.account,
                error=error.message,
            )
            return
        log.debug(
            "rule evaluation failed",
            alertname=rule.alert,
            venue=snapshot.venue,
            account=snapshot.account,
            error=error.message,
        )

    # -- events out -------------------------------------------------------------------------

    def _emit(
        self,
        events: Iterable[AlertEvent],
        *,
        answered_at: float | None = None,
        announced: bool = False,
        retained: Iterable[Alert] = (),
    ) -> None:
        """Events to the outbox (with the alert state they lead to), then to MQTT.
        `answered_at`: when the venue answer that caused them arrived, if one did.
        Suppressed alerts' events change their retained message only
        (`Announcer.filter`); `retained`: firing alerts whose retained message changes
        without an event (their suppression changed)."""
        events = list(events)
        if events and not announced:
            events = self.announcer.filter(events, self.book, time.time())
        entries = [
            to_entry(
                event,
                prefix=self.config.mqtt.topic_prefix,
                instance=self.config.instance,
                answered_at=answered_at,
            )
            for event in events
        ]
        if retained:
            now = time.time()
            entries += [
                to_entry(
                    firing_event(alert, now),
                    prefix=self.config.mqtt.topic_prefix,
                    instance=self.config.instance,
                    announce=False,
                )
                for alert in retained
            ]
        if not entries:
            return
        journal = self.store.journal
        for entry, event in zip(entries, events, strict=False):  # then retained-only entries
            journal.record_event(
                event,
                event_id=entry.event_id if event.announced else None,
                published=event.announced,
                suppressed_by=_suppressed_by(event),
            )
        alerts = self.book.to_json()
        self.outbox.append(entries, alerts, time.time())
        self._saved_alerts = alerts
        for entry, event in zip(entries, events, strict=False):
            log.info(
                "alert " + event.status + ("" if event.announced else " (not announced)"),
                alertname=event.alertname,
                severity=event.severity,
                venue=event.venue,
                account=event.account,
                event_id=entry.event_id,
                values=event.values,
                **_suppression_fields(event),
            )
        self._notify_publisher()
        self.metrics.set_alerts(self.book.active())
        self.metrics.set_outbox_pending(self.store.depth())

    def _firing_payloads(self) -> list[dict[str, Any]]:
        """The alerts firing now as event payloads: what each Alertmanager is sent
        again every minute (Prometheus' resends)."""
        now = time.time()
        return [
            event_payload(firing_event(alert, now), event_id="", instance=self.config.instance)
            for alert in self.book.firing()
            # what riskmon suppresses goes nowhere, as on MQTT
            if alert.announced and not alert.suppressed
        ]

    def _follow_suppression(self, now: float) -> None:
        """Announce the alerts whose suppression ended; retained messages follow what
        suppresses each firing alert (`Announcer.refresh`)."""
        found = self.announcer.refresh(self.book, now)
        if found.events or found.retained:
            self._emit(found.events, announced=True, retained=found.retained)

    def _inhibit_rules(self) -> tuple[InhibitRule, ...]:
        return (*BUILTIN_INHIBIT_RULES, *self.evaluator.rules.inhibit_rules)

    def _polls_of(self, venue: str, account: str) -> int | None:
        """How many polls of an account have ended (None: no poller holds it)."""
        poller = self.pollers.get(venue)
        state = None if poller is None else poller.accounts.get(account)
        return None if state is None else state.polls

    def _notify_publisher(self) -> None:
        if self.publisher is not None:
            self.publisher.notify()
        for alertmanager in self.alertmanagers:
            alertmanager.notify()

    def _requeue_dead_letters(self, when: str) -> None:
        """Dead letters back into the outbox: the operator fixed the broker's ACL."""
        letters = self.store.dead_letter_reasons()
        if not letters:
            return
        self.store.requeue_dead_letters()
        log.warning(
            f"dead letters re-queued {when}: the broker refused these events before",
            events=len(letters),
            topics=sorted({topic for _, topic, _ in letters}),
            reasons=sorted({reason.rsplit(": ", 1)[-1] for _, _, reason in letters}),
        )
        if self.publisher is not None:
            self.publisher.requeued()

    def _publisher_changed(self) -> None:
        publisher = self.publisher
        if publisher is not None:
            self.metrics.set_mqtt(publisher.connected)
            self.metrics.set_events_published(publisher.published_total)
            self.metrics.set_outbox_pending(self.store.depth())

    def _save_alerts(self, *, force: bool = False) -> None:
        alerts = self.book.to_json()
        if force or alerts != self._saved_alerts:
            self.outbox.save_alerts(alerts, time.time())
            self._saved_alerts = alerts

    # -- the periodic work ------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        expected = loop.time() + TICK
        heap_settled = False
        while True:
            await asyncio.sleep(max(0.0, expected - loop.time()))
            now_loop = loop.time()
            self.loop_lag = max(0.0, now_loop - expected)
            expected = now_loop + TICK
            self.last_tick = time.monotonic()
            self._check_loop_lag(self.loop_lag)
            self._tick_once()
            if not heap_settled:
                # What start-up built is settled here, a tick after it, rather than
                # before polling starts: the full collection (tens of ms) then comes
                # after the first poll cycle (with 1,000 accounts) instead of delaying it.
                settle_heap()
                heap_settled = True
                expected = loop.time() + TICK  # the collection is not loop lag

    def _check_loop_lag(self, lag: float) -> None:
        """/healthz fails while the loop runs the tick more than LOOP_LAG_BOUND late:
        polls, rules and events wait as long."""
        self.metrics.set_loop_lag(lag)
        if lag > LOOP_LAG_BOUND:
            reason = f"the event loop ran {lag:.1f} s late (bound {LOOP_LAG_BOUND:.0f} s)"
            if self.problems.fail("loop", reason, time.time()):
                log.warning("the event loop lags", lag_seconds=round(lag, 3))
        elif self.problems.recover("loop"):
            log.info("the event loop keeps time again", lag_seconds=round(lag, 3))

    def _tick_once(self) -> None:
        """One tick; a failing tick is logged (with its traceback once per burst),
        counted, and /healthz fails until a tick works again: the built-in alerts and
        saving alert state depend on it."""
        now = time.time()
        try:
            self.tick(now)
        except Exception as exc:  # one bad tick must not end health checks for good
            self.metrics.inc_internal_errors("tick")
            reason = f"the periodic tick fails: {type(exc).__name__} (see the log)"
            if self.problems.fail("tick", reason, now):
                log.error("tick failed; /healthz fails until one works", exc_info=exc)
            else:
                log.debug("tick failed", error=type(exc).__name__)
        else:
            if self.problems.recover("tick"):
                log.info("the tick works again")

    def tick(self, now: float) -> None:
        """Built-in health alerts, metrics that follow state, and saving alert state."""
        self.outbox.retry(now)  # what the disk refused before, first
        healths = list(self._account_health(now))
        book = self.book

        def settled(health: AccountHealth) -> bool:
            # A fresh account with no alert: its health snapshot cannot change a thing.
            # Skipping those keeps a tick short (it held the loop 6-12 ms every second
            # with 1,000 accounts, the worst of riskmon's own part of detection latency:
            # bench/latency.py).
            return not could_be_stale(health) and not book.holds_any(health.venue, health.account)

        events = evaluate_health(self.health, healths, now, hold=self.stale_hold, skip=settled)
        riskmon = riskmon_snapshot(self.store.dead_letters(), now, instance=self.config.instance)
        events.extend(self.health.evaluate(riskmon, now))
        self._emit(events)
        self.silences.prune(now)
        self._follow_suppression(now)
        if self._unsettled:
            answered = {name for name in self._unsettled if self.pollers[name].accounts_settled}
            if answered:
                self._unsettled -= answered
                self._forget_unmonitored(now)
        for name in self.pollers:
            self._set_venue_metrics(name)
        self.metrics.set_alerts(self.book.active())
        if self.publisher is not None:
            self.metrics.set_mqtt(self.publisher.connected)
            self.metrics.set_events_published(self.publisher.published_total)
        self.metrics.set_outbox_pending(self.store.depth())
        self._save_alerts()
        self.outbox.write_journal(now)
        if now >= self._next_prune:
            self._prune_journal(now)
        if self._recording is not None:
            self._recording.flush()

    def _set_venue_metrics(self, venue: str) -> None:
        """`riskmon_venue_up` and `riskmon_venue_accounts` of a running venue."""
        poller = self.pollers.get(venue)
        if poller is None:  # still being built, or gone
            return
        states = poller.accounts.values()
        failing = sum(1 for s in states if s.consecutive_failures > 0)
        self.metrics.set_venue(venue, up=not states or failing < len(states), accounts=len(states))
        self.metrics.set_poll_intervals(venue, poller.intervals)
        budget = poller.adapter.limits.budget
        self.metrics.set_venue_budget(
            venue, budget.rate(asyncio.get_running_loop().time()), budget.throttled_total
        )

    def _account_health(self, now: float) -> Iterable[AccountHealth]:
        for name, poller in self.pollers.items():
            venue = poller.config
            for state in poller.accounts.values():
                error = state.last_error
                yield AccountHealth(
                    venue=name,
                    venue_kind=venue.kind,
                    account=state.id,
                    data_age=state.age(now),
                    stale_after=venue.stale_after,
                    consecutive_failures=state.consecutive_failures,
                    last_error=str(error) if error else None,
                    auth_failed=isinstance(error, VenueAuthError),
                    labels=tuple(state.account.labels.items()),
                    polls=state.polls,
                )

    # -- reloads ----------------------------------------------------------------------------

    async def _watch_rules(self) -> None:
        while True:
            await asyncio.sleep(RULE_WATCH)
            async with self._reloading:
                if self.rule_source.changed():
                    self._apply_rules(await self.rule_source.reload_in_thread())

    def _apply_rules(self, rules: Any) -> bool:
        if rules is None:
            problems = self.rule_source.status.problems
            self._reloaded(False, time.time(), problems)
            self._journal_load("rule files changed", False, (), problems)
            return False
        self._emit(self.evaluator.replace_rules(rules, time.time(), also_keep=self.health.rules))
        self._rules_loaded(rules)
        self._reloaded(True, time.time())
        self._journal_load("rule files changed", True, rules.files)
        settle_heap()
        return True

    def _reloaded(self, successful: bool, at: float, problems: list[Problem] | None = None) -> None:
        """A reload (SIGHUP, or of changed rule files) ended: metrics and /api/v1/status."""
        self._last_reload = (at, successful, list(problems or []))
        self.metrics.set_reload(successful, at)
        self.metrics.set_config_warnings(len(self.rule_source.status.warnings))

    async def _reload_on_request(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            await self.reload()

    async def reload(self) -> bool:
        """SIGHUP: re-read the config and its rules; a broken one changes nothing."""
        async with self._reloading:
            return await self._reload()

    async def _reload(self) -> bool:
        log.info("reloading config", path=str(self.config.source))
        try:
            # off the loop: reading and compiling many rules would stall polls meanwhile
            new = await asyncio.to_thread(load_config, self.config.source)
            source = RuleSource(new.rules, validate=rule_check(new, new.document))
            rules = await source.load_in_thread()
        except SourceError as exc:
            log.error(
                "reload failed; the running config and rules stay",
                problems=[str(p) for p in exc.problems],
            )
            self._reloaded(False, time.time(), exc.problems)
            self._journal_load("SIGHUP", False, (), exc.problems)
            return False
        source.validate = rule_check(new, None)  # the document is not kept
        unchanged_needs_restart = [
            name
            for name, old, fresh in (
                ("mqtt", self.config.mqtt, new.mqtt),
                ("http", self.config.http, new.http),
                ("state_dir", self.config.state_dir, new.state_dir),
                ("instance", self.config.instance, new.instance),
                ("alertmanagers", self.config.alertmanagers, new.alertmanagers),
            )
            if old != fresh
        ]
        if unchanged_needs_restart:
            log.warning("these settings change only at a restart", settings=unchanged_needs_restart)
        old_venues = {v.name: v for v in self.config.venues}
        new_venues = {v.name: v for v in new.venues}
        now = time.time()
        for name in old_venues.keys() - new_venues.keys():
            for account in await self._stop_venue(name):
                self.on_accounts_changed(name, [], [account])
            self._unsettled.discard(name)
            self.metrics.remove_venue(name)
        for name, venue in new_venues.items():
            if name not in old_venues:
                self._start_venue(venue)
            elif old_venues[name] != venue:
                self._start_venue(venue, await self._stop_venue(name))
        self.config = dataclasses.replace(
            new,
            document=None,
            mqtt=self.config.mqtt,
            http=self.config.http,
            state_dir=self.config.state_dir,
            instance=self.config.instance,
            alertmanagers=self.config.alertmanagers,
        )
        self.rule_source = source
        try:
            self._requeue_dead_letters("at reload")
        except StoreError as exc:
            log.error("reload: could not re-queue the dead letters", error=str(exc))
        self._forget_unmonitored(now)
        runbook_url = runbook_template(new.builtin_alerts.runbook_url)
        self.evaluator.runbook_url = self.health.runbook_url = runbook_url
        builtins = builtin_rules(new.builtin_alerts)
        self._emit(self.health.replace_rules(builtins, now, also_keep=self.evaluator.rules))
        self._emit(self.evaluator.replace_rules(rules, now, also_keep=self.health.rules))
        self._rules_loaded(rules)
        self._reloaded(True, now)
        self._journal_load("SIGHUP", True, rules.files)
        settle_heap()
        log.info("reloaded", venues=list(new_venues), rules=len(rules.rules))
        return True

    # -- the history ------------------------------------------------------------------------

    def _journal_load(
        self,
        trigger: str,
        successful: bool,
        rule_files: Iterable[str],
        problems: Iterable[Problem] = (),
    ) -> None:
        """Journal a (re)load, with the SHA-256 of the config and of each rule file (as
        `sha256sum` gives them: read again here, small files), and write it now."""
        config = str(self.config.source)
        self.store.journal.record_reload(
            trigger=trigger,
            successful=successful,
            config=(config, file_digest(config)),
            rule_files=[(path, file_digest(path)) for path in rule_files],
            problems=[f"{p.location}: {p.message}" for p in problems],
        )
        self.outbox.write_journal(time.time())

    def _prune_journal(self, now: float) -> None:
        """Records past `history_retention` go, a batch at a time (a full batch: the
        next tick takes another)."""
        try:
            pruned = self.store.prune_journal(now - self.config.history_retention)
        except StoreError as exc:
            log.warning("history: pruning old records failed; tried again", error=str(exc))
            self._next_prune = now + JOURNAL_PRUNE_EVERY
            return
        if pruned:
            log.info("history: records past history_retention pruned", records=pruned)
        self._next_prune = now + (TICK if pruned else JOURNAL_PRUNE_EVERY)

    # -- what the API and the heartbeat read ------------------------------------------------

    def _heartbeat(self) -> dict[str, Any]:
        now = time.time()
        states = [s for p in self.pollers.values() for s in p.accounts.values()]
        return {
            "instance": self.config.instance,
            "version": __version__,
            "uptime_seconds": round(now - self.started_at, 1),
            "accounts": len(states),
            "stale_accounts": sum(
                1
                for p in self.pollers.values()
                for s in p.accounts.values()
                if s.is_stale(now, p.config.stale_after)
            ),
            "polls": self.polls,
            "loop_lag_seconds": round(self.loop_lag, 4),
            "alerts_firing": len(self.book.firing()),
        }

    def metrics_text(self) -> bytes:
        self.metrics.set_health_problems(self.health_problems())
        self.metrics.set_asyncio_tasks(len(asyncio.all_tasks()))
        return (
            self.metrics.render()
            + self.outbox_metrics.render()
            + alertmanager_metrics.render(self.alertmanagers)
        )

    def health_problems(self) -> dict[str, str]:
        problems = self.problems.reasons()
        late = self._tick_late()
        if late is not None:
            problems["tick"] = f"the periodic tick is {late:.0f} s late"
        return problems

    def alive(self) -> bool:
        return self._tick_late() is None

    def _tick_late(self) -> float | None:
        """How late the periodic tick is, when it is later than TICK_LATE allows."""
        late = time.monotonic() - self.last_tick
        return late if late >= TICK_LATE else None

    def readiness(self) -> dict[str, bool]:
        return {
            "config_loaded": True,
            "first_poll_cycle_done": all(
                p.first_cycle_done.is_set() for p in self.pollers.values()
            ),
            "mqtt_connected": self.publisher is not None and self.publisher.connected,
        }

    def alerts(self) -> list[dict[str, Any]]:
        return [alert_json(alert) for alert in self.book.active()]

    # -- Alertmanager's API v2 (monitor/api_v2.py) ------------------------------------------

    def silence_list(self) -> list[dict[str, Any]]:
        now = time.time()
        return [silence_json(silence, now) for silence in self.silences.all]

    def silence_get(self, silence_id: str) -> dict[str, Any] | None:
        silence = self.silences.get(silence_id)
        return None if silence is None else silence_json(silence, time.time())

    def silence_add(self, data: Any) -> str:
        now = time.time()
        silence = self.silences.add(data, now)
        log.info(
            "silence set",
            silence=silence.id,
            matchers=[str(m) for m in silence.matchers],
            starts_at=rfc3339(silence.starts_at),
            ends_at=rfc3339(silence.ends_at),
            created_by=silence.created_by,
        )
        self.store.journal.record_silence("set", silence_json(silence, now))
        self._follow_suppression(now)
        self.outbox.write_journal(now)
        return silence.id

    def silence_expire(self, silence_id: str) -> bool:
        now = time.time()
        if self.silences.get(silence_id) is None:
            return False
        expired = self.silences.expire(silence_id, now)
        log.info("silence expired", silence=silence_id)
        self.store.journal.record_silence("expired", silence_json(expired, now))
        self._follow_suppression(now)
        self.outbox.write_journal(now)
        return True

    def v2_alerts(self) -> list[dict[str, Any]]:
        now = time.time()
        return [alertmanager_alert(alert, now) for alert in self.book.firing()]

    def v2_status(self) -> dict[str, Any]:
        return alertmanager_status(self.config.instance, self.started_at)

    def status(self) -> dict[str, Any]:
        at, successful, problems = self._last_reload
        running = self.rule_source
        return status_json(
            config=str(self.config.source),
            started_at=self.started_at,
            last_reload_at=at,
            last_reload_successful=successful,
            last_reload_problems=problems,
            last_success_at=running.status.last_success,
            rules=running.rules,
            warnings=running.status.warnings,
        )

    def accounts(self) -> list[dict[str, Any]]:
        now = time.time()
        return [
            account_json(state, now, poller.config.stale_after)
            for poller in self.pollers.values()
            for state in poller.accounts.values()
        ]


def _suppressed_by(event: AlertEvent) -> list[str]:
    """What suppresses the alert of an event, for the history journal."""
    return [
        *(f"inhibited by {fingerprint}" for fingerprint in event.inhibited_by),
        *(f"silence {silence}" for silence in event.silenced_by),
    ]


def _suppression_fields(event: AlertEvent) -> dict[str, Any]:
    """What suppresses the alert of an event, for its log line."""
    fields: dict[str, Any] = {}
    if event.inhibited_by:
        fields["inhibited_by"] = list(event.inhibited_by)
    if event.silenced_by:
        fields["silenced_by"] = list(event.silenced_by)
    return fields


def rule_check(config: Config, document: YamlDocument | None) -> Validate:
    """The check of a rule set against `config` that `riskmon check` makes: lints
    against its venues and its accounts' params (errors refuse the set). `document`
    places the params' problems; without it the file is read again when one needs it."""
    config = dataclasses.replace(config, document=None)  # kept by the reloads: not its nodes
    places = ParamPlaces(config, document)

    def validate(rules: RuleSet, warnings: list[Problem]) -> list[Problem]:
        return config_problems(config, rules, warnings, places, kinds=kind_fields_map())

    return validate


def settle_heap() -> None:
    """Put what start-up (at the first tick) or a reload built beyond the garbage
    collector's reach, and collect young objects less often.

    Config, rules, compiled code and imported modules are some 60,000 objects (100,000
    with 10,000 accounts) that live as long as the process. Left in the oldest
    generation, every full collection walks them again, and a young collection every
    700 allocations (Python's default) walks the objects of every poll in flight again
    and again: polling as fast as it could, the daemon spent 15-20% of its CPU in the
    collector (bench/poll_cost.py, timed with gc.callbacks). Frozen (`gc.freeze`), they
    are skipped; the snapshots and alerts that come and go are still collected; with
    GC_YOUNG_THRESHOLD, cyclic garbage waits a little longer (a few MB at most) and the
    collector's share falls under 1%. A reload unfreezes first, so that the rules it
    replaced (cyclic: compiled code and its namespace) are collected: one full
    collection, tens of ms, per reload.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    collect_young_less_often()


def collect_young_less_often() -> None:
    """A young collection every GC_YOUNG_THRESHOLD allocations, not Python's 700 (see
    `settle_heap`); the older generations' thresholds stay."""
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _reason(exc: OSError) -> str:
    """Why an OS call failed, in words ("address already in use"), without the
    errno and the repeated address that asyncio's bind errors carry."""
    if isinstance(exc, socket.gaierror) or not exc.errno:
        return str(exc.strerror or exc)
    return os.strerror(exc.errno).lower()


def build_info() -> dict[str, str]:
    return {"version": __version__, "python": platform.python_version()}


async def run_daemon(config_path: Path, *, shard: Shard | None) -> int:
    # Loading the config and the rules allocates much and frees little: with Python's
    # default threshold, young collections (and the full ones they lead to) took a fifth
    # of it (about 20 of 95 ms of CPU with 1,000 accounts). The heap is settled at the
    # first tick.
    collect_young_less_often()
    daemon = Daemon(load_config(config_path), shard=shard)
    return await daemon.run()


def _api_url(listen: str, port: int) -> str:
    """riskmon's API as others reach it (Alertmanager's generatorURL): the listen
    address with the port bound, the host's name for a wildcard address."""
    host = listen.rsplit(":", 1)[0]
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = socket.gethostname()
    return f"http://{host}:{port}"
