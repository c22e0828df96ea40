"""Hostile venue answers through the whole pipeline: never silently blind (issue 11.9).

One account of one venue answers whatever Hypothesis makes (tests/hostile_venue.py: any
JSON value at any field, any Unicode and lone surrogates, huge and tiny decimals, deep
nesting, duplicate keys, wrong types, truncated bodies, odd Content-Length, chunking and
status lines), one to three answers in a row, among accounts that answer well. It goes
through the real parts, wired as `riskmon run` wires them: the config loader, the
adapters over a real socket, the Daemon's poll callbacks, the evaluator with the shipped
rules (`rules/*.yaml`, whose templates render the hostile values), the built-in health
alerts of its tick, /metrics and the API over HTTP, and the outbox in a real Store. A
second test sends hostile account listings through discovery, so every account id a
venue can name goes through metrics labels, the API, MQTT topics and the outbox.

The daemon is built in-process and each example is driven directly (poll every account,
one tick, read the API), so thousands of examples take seconds, not a subprocess each.
Between examples the hostile account is forgotten (its alerts resolve, its series go)
and starts afresh, as if it had not answered well for longer than `stale_after`.

Properties, after every answer:
- nothing raises out of a poll, the tick or the API, nothing is logged as an error (an
  adapter crash is a bug, even though the poller survives it), and the loop sees no
  unhandled exception ("Task exception was never retrieved"); no answer needs more than
  MEMORY_HEADROOM of memory (it fails as MemoryError instead of slowing the machine);
- the hostile account is either evaluated (up, fresh, its snapshot in the API) or
  counted as a failed poll (down, its error in the API; stale, with AccountDataStale,
  while it has not answered well);
- the healthy accounts' API entries, alerts and series are exactly what a daemon
  without the hostile account shows;
- /metrics parses as Prometheus exposition text; /api/v1/accounts and /api/v1/alerts
  answer 200 with valid JSON (valid UTF-8, no lone surrogates); every event in the
  outbox is a valid `riskmon.alert.v1` payload; the shipped rules' annotations render
  (no `<template error`).

The normal suite runs a fixed-seed part (FUZZ_EXAMPLES examples, an eighth as many
listings), after the explicit examples of issue 11's known failures (KNOWN). A longer,
randomized run: `RISKMON_FUZZ_EXAMPLES=100000 .venv/bin/pytest -q tests/test_fuzz_pipeline.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import decimal
import gc
import json
import os
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import hypothesis
import jsonschema
import pytest
from conftest import RsaKeyPair
from hostile_venue import (
    Answer,
    HostileVenue,
    Json,
    Obj,
    Raw,
    answers,
    cs_balances,
    names,
    obj,
    pmx_balance,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from structlog.processors import format_exc_info
from structlog.testing import capture_logs

from monitor import eventloop
from monitor.api import AsyncHttpServer, create_app, start_http
from monitor.config import load_config
from monitor.daemon import Daemon
from monitor.engine.expr import CONTEXT
from monitor.poller import AccountState, VenuePoller
from monitor.store import OutboxRecord
from monitor.venues.base import create_adapter
from monitor.venues.budget import RequestBudget
from monitor.venues.http import http_client_for
from monitor.venues.limits import RateLimiter

REPO = Path(__file__).resolve().parent.parent
FUZZ_EXAMPLES = 1500  # the fixed-seed part in the normal suite (~40 s here)
EXAMPLES = int(os.environ.get("RISKMON_FUZZ_EXAMPLES") or FUZZ_EXAMPLES)
STALE_AFTER = 30.0
HOSTILE_DEADLINE = 0.3  # seconds a hostile account's poll may take
MEMORY_HEADROOM = 512 << 20  # bytes of address space the examples may add
EVENT_SCHEMA = json.loads(
    resources.files("monitor.publish").joinpath("alert-event.schema.json").read_text()
)
EVENT_VALIDATOR = jsonschema.Draft202012Validator(EVENT_SCHEMA)

CS_HEALTHY, CS_HOSTILE = "10001", "10002"
PMX_HEALTHY, PMX_HOSTILE = "firms/ACME/accounts/main", "firms/ACME/accounts/hostile"
HEALTHY = (("cs", CS_HEALTHY), ("pmx", PMX_HEALTHY))
HOSTILE = {"clearstreet": ("cs", CS_HOSTILE), "polymarket": ("pmx", PMX_HOSTILE)}
# The hostile answers start from answers that fire the `for: 0s` rules, so that their
# annotations render whatever the edits put into the fields they read.
FIRING_CS = cs_balances(CS_HOSTILE, daily_pnl="-60000.00", margin_excess="-5.00")
HOSTILE_BASE: dict[str, Json] = {
    "clearstreet": FIRING_CS,
    "polymarket": pmx_balance(excess_capital="-1.00"),
}
GOOD_ANSWERS = {
    CS_HEALTHY: Answer.json(
        200, cs_balances(CS_HEALTHY, daily_pnl="-60000.00", margin_excess="-5.00")
    ),
    CS_HOSTILE: Answer.json(
        200, cs_balances(CS_HOSTILE, daily_pnl="10.00", margin_excess="900.00")
    ),
    PMX_HEALTHY: Answer.json(200, pmx_balance(excess_capital="-1.00")),
    PMX_HOSTILE: Answer.json(200, pmx_balance(excess_capital="500.00")),
}
# What differs between two polls of the same answer: when they happened.
_TIMES = frozenset({"age_seconds", "last_success", "last_attempt", "polls", "taken_at"})
_ALERT_TIMES = frozenset({"starts_at", "fired_at", "keep_firing_since", "last_evaluated_at"})


def write_config(folder: Path, urls: dict[str, str], key: RsaKeyPair, *, hostile: bool) -> Path:
    """A riskmon.yaml as an operator writes one, for the fake venues at `urls`."""
    folder.mkdir(parents=True, exist_ok=True)
    cs = [CS_HEALTHY, CS_HOSTILE] if hostile else [CS_HEALTHY]
    pmx = [PMX_HEALTHY, PMX_HOSTILE] if hostile else [PMX_HEALTHY]
    # discovery, driven by the discovery test (the daemon's schedule does not run here)
    discover = [{"discover": True, "interval": "1h"}] if hostile else []
    # Deadlines a loaded machine meets; the hostile accounts' polls get shorter ones.
    timing = "    poll_interval: 2s\n    timeout: 2s\n    max_requests_per_second: 100000\n"
    config = folder / "riskmon.yaml"
    config.write_text(f"""\
instance: fuzz
state_dir: state
http: {{listen: "127.0.0.1:0"}}
mqtt: {{url: "mqtt://127.0.0.1:1", topic_prefix: riskmon}}
rules: [{json.dumps(str(REPO / "rules" / "*.yaml"))}]
stale_after: {STALE_AFTER:g}s
venues:
  - name: cs
    kind: clearstreet
    base_url: {urls["cs"]}/cs
    api_key: fuzz-api-key
{timing}    accounts: {json.dumps([{"id": a} for a in cs] + discover)}
  - name: pmx
    kind: polymarket
    base_url: {urls["pmx"]}/pmx
{timing}    auth:
      token_url: {urls["pmx"]}/pmx/oauth/token
      client_id: fuzz
      private_key: {json.dumps(key.private_pem.decode())}
      participant_id: firms/ACME/users/fuzz
    accounts: {json.dumps([{"id": a} for a in pmx] + discover)}
""")
    return config


@dataclass
class Reading:
    """What the daemon shows from outside: /metrics parsed, the two API answers."""

    samples: list[tuple[str, dict[str, str], float]]
    accounts: list[dict[str, Any]]
    alerts: list[dict[str, Any]]

    def healthy_view(self) -> dict[str, Any]:
        """What must not depend on the hostile account: the healthy accounts' API
        entries, alerts and series, without the times that differ from run to run."""
        healthy = set(HEALTHY)
        return {
            "accounts": sorted(
                (_without(a, _TIMES) for a in self.accounts if _key(a) in healthy),
                key=json.dumps,
            ),
            "alerts": sorted(
                (_without(a, _ALERT_TIMES) for a in self.alerts if _key(a) in healthy),
                key=json.dumps,
            ),
            "series": sorted(
                (name, sorted(labels.items()), value)
                for name, labels, value in self.samples
                if (labels.get("venue"), labels.get("account")) in healthy
                and "timestamp" not in name
            ),
        }

    def value(self, name: str, **labels: str) -> float | None:
        for sample, sample_labels, value in self.samples:
            if sample == name and all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
        return None

    def polls(self) -> float:
        """Polls counted by riskmon_polls_total, every venue and outcome."""
        return sum(value for name, _, value in self.samples if name == "riskmon_polls_total")


def _key(item: dict[str, Any]) -> tuple[str, str]:
    return item["venue"], item["account"]


def _without(item: dict[str, Any], times: frozenset[str]) -> dict[str, Any]:
    return {
        k: _without(v, times) if isinstance(v, dict) else v
        for k, v in item.items()
        if k not in times
    }


def strict_json(body: bytes, what: str) -> Any:
    """Decoded JSON that any consumer reads: UTF-8, no lone surrogates."""
    value = json.loads(body.decode("utf-8"))
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError: surrogates
    assert value is not None, what
    return value


@contextlib.contextmanager
def impatient(poller: VenuePoller) -> Iterator[None]:
    """The venue's polls give up after HOSTILE_DEADLINE: a hostile answer that is retried
    (a 5xx, a dropped connection) is retried until the poll's deadline, and each example
    would wait that long."""
    config = poller.config
    poller.config = poller.adapter.config = dataclasses.replace(
        config, poll_interval=HOSTILE_DEADLINE, timeout=HOSTILE_DEADLINE
    )
    try:
        yield
    finally:
        poller.config = poller.adapter.config = config


@dataclass
class Pipeline:
    """A Daemon wired as `riskmon run` wires it, driven one poll at a time."""

    daemon: Daemon
    server: AsyncHttpServer
    session: aiohttp.ClientSession
    accounts: list[tuple[str, str]]
    loop_errors: list[dict[str, Any]] = field(default_factory=list)
    outbox_seen: int = 0

    @staticmethod
    async def start(config: Path) -> Pipeline:
        daemon = Daemon(load_config(config))
        for venue in daemon.config.venues:  # as Daemon._start_venue, without the schedule
            http = daemon.http[venue.name] = http_client_for(venue)
            daemon.pollers[venue.name] = VenuePoller(venue, create_adapter(venue, http), daemon)
        server = await start_http(create_app(daemon), "127.0.0.1:0")
        accounts = [(v, a) for v, p in daemon.pollers.items() for a in p.accounts]
        pipeline = Pipeline(daemon, server, aiohttp.ClientSession(server.url), accounts)
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: pipeline.loop_errors.append(context)
        )
        return pipeline

    async def stop(self) -> None:
        await self.session.close()
        await self.server.stop()
        for http in self.daemon.http.values():
            await http.aclose()
        self.daemon.store.close()

    async def poll_all(self) -> None:
        hostile = set(HOSTILE.values())
        for venue, account in self.accounts:
            poller = self.daemon.pollers[venue]
            if (venue, account) in hostile:
                with impatient(poller):
                    await poller.poll_once(account)
            else:
                await poller.poll_once(account)

    def renew(self, venue: str, account: str, *, stale_since: float) -> AccountState:
        """The account starts afresh, not polled well since `stale_since`."""
        poller = self.daemon.pollers[venue]
        state = poller.accounts[account]
        poller.accounts[account] = AccountState(venue, state.account, added_at=stale_since)
        return poller.accounts[account]

    async def read(self) -> Reading:
        bodies = {}
        for path in ("/metrics", "/api/v1/accounts", "/api/v1/alerts"):
            async with self.session.get(path) as response:
                body = await response.read()
                assert response.status == 200, f"{path}: {response.status} {body[:300]!r}"
                bodies[path] = body
        samples = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(bodies["/metrics"].decode("utf-8"))
            for sample in family.samples
        ]
        return Reading(
            samples,
            strict_json(bodies["/api/v1/accounts"], "accounts")["accounts"],
            strict_json(bodies["/api/v1/alerts"], "alerts")["alerts"],
        )

    def new_events(self) -> list[OutboxRecord]:
        """Outbox records written since the last call (then acknowledged, as a publisher
        would, so that the outbox stays small)."""
        records = self.daemon.store.pending(limit=100_000, after=self.outbox_seen)
        if records:
            self.outbox_seen = records[-1].seq
            self.daemon.store.acknowledge([r.seq for r in records])
        return records


def check_annotations(alert: dict[str, Any]) -> None:
    """The shipped rules' templates render whatever value a venue sent (a template that
    fails renders `<template error: ...>` and logs a warning once)."""
    for name, text in alert["annotations"].items():
        assert "<template error" not in text, (alert["alertname"], name, text[:300])


def check_events(records: list[OutboxRecord]) -> None:
    for record in records:
        if not record.event_topic:  # a suppressed alert's record: its retained message only
            assert not record.event_payload
            if record.alert_payload:
                retained = strict_json(record.alert_payload, record.alert_topic)
                EVENT_VALIDATOR.validate(retained)
                check_annotations(retained)
            continue
        event = strict_json(record.event_payload, f"event {record.event_topic}")
        EVENT_VALIDATOR.validate(event)
        check_annotations(event)
        if record.alert_payload:
            assert strict_json(record.alert_payload, record.alert_topic) == event
        record.event_topic.encode("utf-8")
        record.alert_topic.encode("utf-8")


def errors_logged(logs: list[dict[str, Any]]) -> list[str]:
    """What was logged as an error, with the traceback's last line."""
    return [
        f"{entry['event']}: {entry.get('exception', '').strip().splitlines()[-1:]}"
        for entry in logs
        if entry.get("log_level") in ("error", "critical")
    ]


@dataclass
class World:
    venues: dict[str, HostileVenue]  # one server (origin) per venue, as in production
    pipeline: Pipeline
    baseline: dict[str, Any]
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, outcome)

    def answer(self, account: str, answer: Answer) -> None:
        for venue in self.venues.values():
            venue.answers = {account: answer}

    def answer_well(self) -> None:
        for venue in self.venues.values():
            venue.answers = {}

    def list(self, listing: Answer | None) -> None:
        for venue in self.venues.values():
            venue.listing = listing

    async def stop(self) -> None:
        await self.pipeline.stop()
        for venue in self.venues.values():
            await venue.stop()


async def build_world(folder: Path, key: RsaKeyPair) -> World:
    decimal.setcontext(CONTEXT)  # as Daemon.run: rules compute in CONTEXT
    venues = {name: HostileVenue(good=dict(GOOD_ANSWERS)) for name in ("cs", "pmx")}
    urls = {name: await venue.start() for name, venue in venues.items()}
    # The run without the hostile account: what the healthy ones must look like.
    alone = await Pipeline.start(write_config(folder / "alone", urls, key, hostile=False))
    try:
        for _ in range(2):
            await alone.poll_all()
        alone.daemon.tick(time.time())
        baseline = (await alone.read()).healthy_view()
    finally:
        await alone.stop()
    assert baseline["alerts"], "the healthy answers should fire alerts, to compare them"
    pipeline = await Pipeline.start(write_config(folder / "fuzz", urls, key, hostile=True))
    await pipeline.poll_all()
    return World(venues, pipeline, baseline)


def forget_pauses(daemon: Daemon) -> None:
    """Each answer starts without the pause a Retry-After before it asked of its venue
    (tests/test_budget.py covers the pause; here it would only carry one hostile answer's
    wait into the next one's poll)."""
    for poller in daemon.pollers.values():
        limits = poller.adapter.limits
        configured = limits.budget.configured
        limits.budget = RequestBudget(configured)
        limits.rate = RateLimiter(configured)
        limits._paced_at = configured


async def one_example(world: World, kind: str, answers: tuple[Answer, ...]) -> None:
    """The hostile account answers `answers`, one per poll (so its alerts and series
    also go from one hostile answer to the next), among the healthy accounts."""
    decimal.setcontext(CONTEXT)
    pipeline, daemon = world.pipeline, world.pipeline.daemon
    venue, account = HOSTILE[kind]
    now = time.time()
    for hostile_venue, hostile_account in HOSTILE.values():
        pipeline.renew(hostile_venue, hostile_account, stale_since=now - STALE_AFTER - 5)
    pipeline.loop_errors.clear()  # each example answers for its own
    failures = 0
    answered_well = False
    for polls, answer in enumerate(answers, 1):
        world.answer(account, answer)
        forget_pauses(daemon)
        polls_before = daemon.polls
        with capture_logs(processors=[format_exc_info]) as logs:
            await pipeline.poll_all()
            daemon.tick(time.time())
            reading = await pipeline.read()
            check_events(pipeline.new_events())
        assert not errors_logged(logs), errors_logged(logs)
        assert not pipeline.loop_errors, [
            (c["message"], c.get("exception")) for c in pipeline.loop_errors
        ]
        for alert in reading.alerts:
            check_annotations(alert)
        # every poll was reported, once: as a snapshot or as a failure, and counted
        assert daemon.polls == polls_before + len(pipeline.accounts)
        assert reading.polls() == daemon.polls

        state = daemon.pollers[venue].accounts[account]
        assert state.polls == polls
        error = state.last_error
        world.outcomes[kind, "evaluated" if error is None else error.outcome] += 1
        (entry,) = [a for a in reading.accounts if _key(a) == (venue, account)]
        up = reading.value("riskmon_account_up", venue=venue, account=account)
        alerts = {a["alertname"] for a in reading.alerts if _key(a) == (venue, account)}
        if error is None:  # evaluated
            answered_well = True
            failures = 0
            assert (entry["up"], entry["stale"]) == (True, False), entry
            assert entry["snapshot"] is not None
            assert up == 1.0
            assert "AccountDataStale" not in alerts
            fields = entry["snapshot"]["fields"]
            for alertname, path, fires in FOR_0S_RULES[kind]:
                if _number(fields.get(path)) is not None and fires(_number(fields[path])):
                    assert alertname in alerts, (alertname, path, fields[path], reading.alerts)
        else:  # counted as a failed poll; stale unless it answered well meanwhile
            failures += 1
            assert state.consecutive_failures == failures
            assert (entry["up"], entry["stale"]) == (False, not answered_well), entry
            assert entry["last_error"]["outcome"] == error.outcome
            assert up == 0.0
            if not answered_well:
                assert "AccountDataStale" in alerts, (error, reading.alerts)
        view = reading.healthy_view()
        for part, expected in world.baseline.items():
            assert view[part] == expected, f"healthy {part} changed:\n{view[part]}\n!=\n{expected}"

    # The hostile accounts leave (their alerts resolve, rendered with the values they
    # hold) so that the next example starts from nothing.
    with capture_logs(processors=[format_exc_info]) as logs:
        for hostile_venue, hostile_account in HOSTILE.values():
            daemon.on_accounts_changed(hostile_venue, [], [hostile_account])
        check_events(pipeline.new_events())
    assert not errors_logged(logs), errors_logged(logs)


LISTING_BASE: dict[str, Json] = {
    "clearstreet": obj(
        data=[obj(id="20001", status="ACTIVE"), obj(id="20002", status="ACTIVE")],
        metadata=obj(next_page_token=None),
    ),
    "polymarket": obj(accounts=["firms/ACME/accounts/d1", "firms/ACME/accounts/d2"]),
}
DISCOVERY_DEADLINE = 0.2  # seconds: a listing whose pages never end stops here


async def one_listing(world: World, kind: str, listing: Answer) -> None:
    """A hostile account listing: the accounts it names are discovered, polled and shown,
    then leave again; every account id a venue can send goes through metrics labels,
    the API, MQTT topics and the outbox."""
    decimal.setcontext(CONTEXT)
    pipeline, daemon = world.pipeline, world.pipeline.daemon
    venue = HOSTILE[kind][0]
    poller = daemon.pollers[venue]
    poller.set_accounts([], discovered=True)  # what a failed example may have left
    pipeline.new_events()
    world.answer_well()  # the configured accounts do
    world.list(listing)
    pipeline.loop_errors.clear()
    with capture_logs(processors=[format_exc_info]) as logs:
        await pipeline.poll_all()
        loop = asyncio.get_running_loop()
        await poller.discover_once(loop.time() + DISCOVERY_DEADLINE)
        found = [a for a, state in poller.accounts.items() if state.discovered]
        for account in found:
            await poller.poll_once(account)
        daemon.tick(time.time())
        reading = await pipeline.read()
        check_events(pipeline.new_events())
        poller.set_accounts([], discovered=True)  # they leave: alerts resolve, series go
        check_events(pipeline.new_events())
        after = await pipeline.read()
    assert not errors_logged(logs), errors_logged(logs)
    assert not pipeline.loop_errors, [
        (c["message"], c.get("exception")) for c in pipeline.loop_errors
    ]
    for alert in reading.alerts:
        check_annotations(alert)
    world.outcomes[kind, "discovered" if found else "none discovered"] += 1
    shown = {a["account"]: a for a in reading.accounts if a["venue"] == venue}
    for account in found:  # each was polled, and shows whether it answered
        assert account in shown, account
        assert shown[account]["polls"] == 1
        assert shown[account]["up"] is not None
    gone = {(venue, a) for a in found}
    assert not [a for a in after.accounts if _key(a) in gone]
    assert not [s for s in after.samples if (s[1].get("venue"), s[1].get("account")) in gone]
    assert reading.healthy_view() == world.baseline
    assert after.healthy_view() == world.baseline


#: Shipped rules that fire at once (`for: 0s`): (alertname, field, when it fires). An
#: evaluated answer whose field says so has the alert firing, whatever else it holds.
FOR_0S_RULES: dict[str, tuple[tuple[str, str, Callable[[Decimal], bool]], ...]] = {
    "clearstreet": (
        ("DailyLossOverLimit", "daily_pnl", lambda v: v < -50000),
        ("MaintenanceMarginCall", "margin_details.maintenance_margin_excess", lambda v: v < 0),
        ("RegTShortfall", "margin_details.initial_margin_excess", lambda v: v < 0),
    ),
    "polymarket": (("ExcessCapitalExhausted", "excess_capital", lambda v: v <= 0),),
}


def _number(text: Any) -> Decimal | None:
    """A snapshot field from the API (Decimals are exact strings there) as a number."""
    if not isinstance(text, str):
        return None
    try:
        number = Decimal(text)
    except ArithmeticError:
        return None
    return number if number.is_finite() else None


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if eventloop.loop_name() == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def cs_answer(**fields: Json) -> tuple[str, Answer]:
    """The hostile Clear Street account's firing answer with `fields` of `data` changed."""
    envelope = cs_balances(CS_HOSTILE, daily_pnl="-60000.00", margin_excess="-5.00")
    (_, data), *rest = envelope.pairs
    assert isinstance(data, Obj)
    changed = Obj(tuple({**dict(data.pairs), **fields}.items()))
    return "clearstreet", Answer.json(200, Obj((("data", changed), *rest)))


def pmx_answer(**fields: Json) -> tuple[str, Answer]:
    """The hostile Polymarket account's firing answer with `fields` changed."""
    balance = pmx_balance(excess_capital="-1.00")
    return "polymarket", Answer.json(200, Obj(tuple({**dict(balance.pairs), **fields}.items())))


#: Issue 11's parsing-boundary items, each of which this test found on its own (the
#: parse helper's branch fixes them): that they stay fixed is checked first.
KNOWN = {
    "currency with a lone surrogate: metrics label encoding raised out of the poll": cs_answer(
        currency="\ud800"
    ),
    "a lone surrogate in a string field: /api/v1/accounts answered 500": cs_answer(
        margin_type="\ud800"
    ),
    "a lone surrogate in a securities key: /api/v1/accounts answered 500": pmx_answer(
        securities=Obj((("\ud800", obj(balance="1")),))
    ),
    "a huge exponent rendered by DailyLossOverLimit: a gigabyte (MemoryError here)": cs_answer(
        daily_pnl="-1E+999999999"
    ),
    "a number past Decimal's exponent limit: the adapter crashed (InvalidOperation)": cs_answer(
        equity=Raw("1.0e+99999999999999999999")
    ),
    "3,000 levels of nesting: the adapter crashed (RecursionError in flatten)": cs_answer(
        note=Raw('{"a":' * 3000 + "1" + "}" * 3000)
    ),
    "a 5,000-digit Content-Length: ValueError out of the transport's data_received": (
        "clearstreet",
        Answer(b"HTTP/1.1 200 OK\r\ncontent-length: " + b"1" * 5000 + b"\r\n\r\nnull", close=True),
    ),
}


#: Text that must stay inside its label, JSON string or topic level, whatever it holds;
#: the random part reaches these fields only now and then.
ESCAPES = {
    "a currency label with quotes, a backslash and a newline": cs_answer(currency='a"b\\c\nd}'),
    "a currency that would end the label and start a series": cs_answer(
        currency='USD"} 1\n# HELP x y\nriskmon_fake{a="'
    ),
    "a securities key with exposition syntax": pmx_answer(
        securities=Obj((('a"}\n# TYPE', obj(balance="1", marketValue="2")),))
    ),
}


def known(test: Callable[..., None]) -> Callable[..., None]:
    for kind, answer in (*KNOWN.values(), *ESCAPES.values()):
        test = hypothesis.example((kind, (answer,)))(test)
    return test


# One to three answers in a row from the hostile account, most often one.
hostile_examples = st.sampled_from(sorted(HOSTILE)).flatmap(
    lambda kind: st.tuples(
        st.just(kind),
        st.sampled_from([1, 1, 2, 3]).flatmap(
            lambda n: st.tuples(*[answers(HOSTILE_BASE[kind])] * n)
        ),
    )
)


@contextlib.contextmanager
def memory_bound(extra: int = MEMORY_HEADROOM) -> Iterator[None]:
    """No more than `extra` bytes of address space beyond what the process has now: an
    answer whose handling needs a gigabyte (a `1E+999999999` formatted in full) fails
    as MemoryError, every time, instead of slowing the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    status = Path("/proc/self/status").read_text()
    size = int(status.split("VmSize:")[1].split()[0]) * 1024
    bound = size + extra if hard == resource.RLIM_INFINITY else min(hard, size + extra)
    resource.setrlimit(resource.RLIMIT_AS, (bound, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture
def world(tmp_path: Path, rsa_keypair: RsaKeyPair) -> Iterator[tuple[asyncio.Runner, World]]:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        built = runner.run(build_world(tmp_path, rsa_keypair))
        try:
            yield runner, built
        finally:
            built.pipeline.loop_errors.clear()  # the last example's were its own
            runner.run(built.stop())
            gc.collect()  # an unretrieved task exception is reported when it is collected
            assert not built.pipeline.loop_errors, built.pipeline.loop_errors


#: Account ids that issue 11 found to unmonitor an account when discovered.
KNOWN_LISTINGS = {
    "a discovered id with a lone surrogate: the adapter crashed, the metrics label raised": (
        "polymarket",
        Answer.json(200, obj(accounts=["firms/ACME/accounts/\ud800"])),
    ),
}


def known_listings(test: Callable[..., None]) -> Callable[..., None]:
    for example in KNOWN_LISTINGS.values():
        test = hypothesis.example(example)(test)
    return test


def fuzz_settings(examples: int) -> settings:
    """A fixed seed in the normal suite; new examples when RISKMON_FUZZ_EXAMPLES asks
    for a longer run."""
    return settings(
        max_examples=examples,
        derandomize="RISKMON_FUZZ_EXAMPLES" not in os.environ,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def listing_of(kind: str, ids: list[str]) -> Answer:
    """A well-formed listing of `ids`, whatever they hold."""
    if kind == "clearstreet":
        return Answer.json(200, obj(data=[obj(id=i, status="ACTIVE") for i in ids]))
    return Answer.json(200, obj(accounts=list(ids)))


def ids_of(kind: str) -> st.SearchStrategy[str]:
    """Hostile account ids, half of them in the venue's own form around a hostile name."""
    form = "{}" if kind == "clearstreet" else "firms/ACME/accounts/{}"
    return st.one_of(names, names.map(form.format))


# Half hostile listings, half well-formed ones of hostile names.
hostile_listings = st.sampled_from(sorted(HOSTILE)).flatmap(
    lambda kind: st.tuples(
        st.just(kind),
        st.one_of(
            answers(LISTING_BASE[kind]),
            st.lists(ids_of(kind), min_size=1, max_size=4).map(lambda ids: listing_of(kind, ids)),
        ),
    )
)


def test_hostile_account_listings_never_blind_the_pipeline(
    world: tuple[asyncio.Runner, World],
) -> None:
    runner, built = world

    @fuzz_settings(max(1, EXAMPLES // 8))
    @given(hostile_listings)
    @known_listings
    def hostile_listing(example: tuple[str, Answer]) -> None:
        kind, listing = example
        runner.run(one_listing(built, kind, listing))

    with memory_bound():
        hostile_listing()
    print("hostile listings:", dict(built.outcomes))
    for kind in HOSTILE:
        assert built.outcomes[kind, "discovered"], built.outcomes


def test_hostile_answers_never_blind_the_pipeline(world: tuple[asyncio.Runner, World]) -> None:
    runner, built = world

    @fuzz_settings(EXAMPLES)
    @given(hostile_examples)
    @known
    def hostile_answer(example: tuple[str, tuple[Answer, ...]]) -> None:
        kind, answers_in_turn = example
        runner.run(one_example(built, kind, answers_in_turn))

    with memory_bound():
        hostile_answer()
    print("hostile answers by venue kind and poll outcome:", dict(built.outcomes))
    for kind in HOSTILE:  # both ways through the pipeline were taken
        assert built.outcomes[kind, "evaluated"], built.outcomes
        assert built.outcomes[kind, "bad_response"], built.outcomes


def test_discovered_ids_no_config_could_hold_are_skipped_loudly(
    world: tuple[asyncio.Runner, World],
) -> None:
    """Found by the listing fuzz: a discovered id `""` was monitored, and its events
    failed the payload schema (an empty `account`, an empty MQTT topic level). Discovered
    ids are held to the rule configured ones are (`riskmon check`'s)."""
    runner, built = world
    poller = built.pipeline.daemon.pollers["cs"]
    built.list(listing_of("clearstreet", ["", "20001", "12a", "..", "20002"]))

    async def discover() -> list[dict[str, Any]]:
        with capture_logs() as logs:
            await poller.discover_once(asyncio.get_running_loop().time() + 2)
        return logs

    logs = runner.run(discover())
    discovered = sorted(a for a, state in poller.accounts.items() if state.discovered)
    assert discovered == ["20001", "20002"]
    # "" and ".." are no URL path segment (the adapter refuses them, monitor/venues/ids.py);
    # "12a" no Clear Street id (the config's rule, in the poller): each is named once
    warnings = [e for e in logs if e["log_level"] == "warning"]
    by_adapter = [e for e in warnings if e["event"] == "discovery: account id refused"]
    assert sorted(e["account"] for e in by_adapter) == ["''", "'..'"], warnings
    (by_rule,) = [e for e in warnings if e not in by_adapter]
    assert by_rule["skipped"] == ["'12a'"], by_rule
    assert "Clear Street account ids are numbers" in by_rule["reason"]
