"""`riskmon pagerduty` (monitor/pagerduty/) against a real Mosquitto and a local fake of
PagerDuty's Events API v2.

Nothing here sleeps to wait: tests wait for requests to reach the fake, or for the
bridge's `ready`/`on_change`, always with a timeout. Every test's logs go to a buffer
that must never hold a routing key.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import structlog
from aiohttp import web
from conftest import MosquittoBroker, MqttCollector
from multidict import CIMultiDict

from monitor.cli import main
from monitor.engine.expr import compile_expression
from monitor.engine.lifecycle import AlertBook, AlertEvent, Observation, fingerprint
from monitor.engine.model import Rule
from monitor.infra.backoff import Backoff
from monitor.infra.retry_after import retry_after_seconds
from monitor.logs import configure_logging
from monitor.pagerduty import PagerDutyBridge, PagerDutyConfig, load_pagerduty_config
from monitor.pagerduty.bridge import STORE_FILE
from monitor.pagerduty.inbound import BadEvent, parse_event
from monitor.pagerduty.sender import RETRY_AFTER_CAP, _error_text, retry_wait, scrub
from monitor.pagerduty.store import BridgeStore, StoreLocked
from monitor.publish.events import encode, event_payload, event_topic
from monitor.yamlsource import Location, SourceError

PREFIX = "riskmon"
REPO = Path(__file__).resolve().parent.parent
KEY_RISK = "R1SKR1SKR1SKR1SKR1SKR1SKR1SKR1SK"  # 32 characters, as PagerDuty's
KEY_RISK_NEW = "N3WKN3WKN3WKN3WKN3WKN3WKN3WKN3WK"
KEY_CRIT = "CR1TCR1TCR1TCR1TCR1TCR1TCR1TCR1T"
KEY_DEFAULT = "D3FLD3FLD3FLD3FLD3FLD3FLD3FLD3FL"
KEYS = (KEY_RISK, KEY_RISK_NEW, KEY_CRIT, KEY_DEFAULT)
ENV = {"PD_CRITICAL_KEY": KEY_CRIT}
WAIT = 15.0  # seconds any condition may take


# -- the fake Events API --------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int = 202
    retry_after: str | None = None
    retry_after_ms: str | None = None
    drop: bool = False  # close the connection without an answer


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic()
    body: dict[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.body["payload"]["custom_details"]["event_id"])

    @property
    def routing_key(self) -> str:
        return str(self.body["routing_key"])


@dataclass
class FakeEventsApi:
    """POST /v2/enqueue: records each request and answers 202, or what `plan` says."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    plans: dict[str, list[Answer]] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def plan(self, event_id: str, *answers: Answer) -> None:
        """The answers to the first requests of `event_id`; 202 after them."""
        self.plans[event_id] = list(answers)

    def of(self, event_id: str) -> list[Received]:
        return [r for r in self.received if r.event_id == event_id]

    async def wait_for(self, done: Callable[[], bool], timeout: float = WAIT) -> None:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            ids = [r.event_id for r in self.received]
            raise AssertionError(f"not there after {timeout} s; received {ids}") from None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        received = Received(time.monotonic(), body)
        self.received.append(received)
        self._changed.set()
        answers = self.plans.get(received.event_id)
        answer = answers.pop(0) if answers else Answer()
        if answer.drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)  # never arrives
        headers = {}
        if answer.retry_after:
            headers["Retry-After"] = answer.retry_after
        if answer.retry_after_ms:
            headers["retry-after-ms"] = answer.retry_after_ms
        if answer.status == 202:
            data = {"status": "success", "message": "Event processed", "dedup_key": "x"}
        elif answer.status == 400:  # PagerDuty's shape; it may quote what it got
            data = {
                "status": "invalid event",
                "message": "Event object is invalid",
                "errors": [f"'payload.summary' is missing (routing_key {received.routing_key})"],
            }
        else:
            data = {"status": "error", "message": f"HTTP {answer.status}"}
        return web.json_response(data, status=answer.status, headers=headers)


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeEventsApi]:
    fake = FakeEventsApi()
    app = web.Application()
    app.router.add_post("/v2/enqueue", fake.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}/v2/enqueue"
    try:
        yield fake
    finally:
        await runner.cleanup()


# -- logs, config, bridge ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def logs() -> Iterator[io.StringIO]:
    """Every log line of the test, as JSON; no routing key may ever be in it."""
    buffer = io.StringIO()
    configure_logging("debug", stream=buffer, json=True)
    try:
        yield buffer
    finally:
        structlog.reset_defaults()
    text = buffer.getvalue()
    for key in KEYS:
        assert key not in text, "a routing key leaked into the logs"


def log_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]


@pytest.fixture
def key_files(tmp_path: Path) -> Path:
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "risk").write_text(KEY_RISK + "\n", encoding="utf-8")
    (folder / "default").write_text(KEY_DEFAULT + "\n", encoding="utf-8")
    return folder


ROUTES = """
routes:
  - name: risk
    match: {labels: {team: risk}}
    routing_key_file: secrets/risk
  - name: critical
    match: {severity: [critical, error]}
    routing_key_env: PD_CRITICAL_KEY
  - name: default
    routing_key_file: secrets/default
"""


@pytest.fixture
def make_config(
    tmp_path: Path, mosquitto: MosquittoBroker, fake_api: FakeEventsApi, key_files: Path
) -> Callable[..., PagerDutyConfig]:
    """A bridge config on the test broker and the fake API, through the YAML loader."""

    def make(
        routes: str = ROUTES,
        rate: str = "{events_per_minute: 6000, burst: 100}",
        broker: MosquittoBroker = mosquitto,
        mqtt: str = "",
    ) -> Any:
        path = tmp_path / "pagerduty.yaml"
        path.write_text(
            f"mqtt: {{url: {broker.url}, topic_prefix: {PREFIX}, client_id: pd-test{mqtt}}}\n"
            f"events_url: {fake_api.url}\n"
            "state_dir: state\n"
            "timeout: 2s\n"
            f"rate_limit: {rate}\n"
            "backoff: {initial: 10ms, max: 50ms}\n" + routes,
            encoding="utf-8",
        )
        return load_pagerduty_config(path, environ=ENV)

    return make


class Changes:
    """A bridge's `on_change`; `until` waits for a condition on the bridge."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def __call__(self) -> None:
        self._changed.set()

    async def until(self, condition: Callable[[], bool], timeout: float = WAIT) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def running(
    config: PagerDutyConfig,
    changes: Changes | None = None,
    *,
    kind: type[PagerDutyBridge] = PagerDutyBridge,
) -> AsyncIterator[PagerDutyBridge]:
    """A started bridge (of class `kind`), connected and subscribed; stopped cleanly on
    exit."""
    bridge = kind(config, on_change=changes, reconnect_min=0.05, reconnect_max=0.5)
    task = asyncio.create_task(bridge.run())
    try:
        async with asyncio.timeout(WAIT):
            ready = asyncio.create_task(bridge.ready.wait())
            await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                ready.cancel()
                task.result()  # raises what stopped it
        yield bridge
    finally:
        bridge.stop()
        async with asyncio.timeout(WAIT):
            await task


@pytest.fixture
async def publisher(
    mqtt_collector: Callable[..., MqttCollector],
) -> AsyncIterator[MqttCollector]:
    """An MQTT client that publishes at QoS 1 (and subscribes to nothing)."""
    async with mqtt_collector([]) as client:
        yield client


_counter = iter(range(1, 1_000_000))


def alert(
    severity: str = "warning",
    labels: dict[str, str] | None = None,
    status: str = "firing",
    alertname: str = "BuyingPowerBelowFloor",
) -> tuple[str, bytes, dict[str, Any]]:
    """A new event as the daemon publishes it: (topic, payload, payload as dict)."""
    n = next(_counter)
    account = f"acct-{n}"
    labels = dict(labels or {})
    now = time.time()
    event = AlertEvent(
        status="firing" if status == "firing" else "resolved",
        at=now,
        rule_key=f"capital/{alertname}",
        alertname=alertname,
        severity=severity,
        venue="cs",
        venue_kind="clearstreet",
        account=account,
        labels=labels,
        annotations={"summary": f"{account} buying power low"},
        values={"buying_power": "24000.00"},
        starts_at=now - 30,
        ends_at=None if status == "firing" else now,
        fingerprint=fingerprint(alertname, "cs", account, {**labels, "severity": severity}),
    )
    payload = event_payload(event, event_id=f"evt-{n:06d}", instance="riskmon-t")
    topic = event_topic(PREFIX, severity, "cs", account, alertname)
    return topic, encode(payload), payload


async def publish(client: MqttCollector, *events: tuple[str, bytes, dict[str, Any]]) -> None:
    for topic, payload, _ in events:
        await client.publish(topic, payload)


# -- routing and the forwarded body ---------------------------------------------------------


class WorkersCrashingOnce(PagerDutyBridge):
    """A bridge whose workers each crash at their first start (a bug, injected: no
    input makes a worker crash for real)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crashed: set[str] = set()

    async def _work(self, channel: Any) -> None:
        if channel.key_id not in self.crashed:
            self.crashed.add(channel.key_id)
            raise RuntimeError("injected crash")
        await super()._work(channel)


async def test_a_crashed_worker_is_logged_counted_and_started_again(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
    publisher: MqttCollector,
) -> None:
    event = alert("critical", {"team": "risk"})
    changes = Changes()
    with structlog.testing.capture_logs() as logs:
        async with running(make_config(), changes, kind=WorkersCrashingOnce) as bridge:
            await publish(publisher, event)
            await fake_api.wait_for(lambda: len(fake_api.received) == 1)  # after the restart
            assert bridge.counts["internal_errors"] == len(bridge.crashed) >= 1
    logged = [entry for entry in logs if entry["event"].startswith("background task crashed")]
    assert {entry["task"] for entry in logged} == {"pd-worker"}
    assert all(isinstance(entry["exc_info"], RuntimeError) for entry in logged)


async def test_routes_by_label_then_severity_then_default(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
    publisher: MqttCollector,
) -> None:
    risk = alert("critical", {"team": "risk"})  # both match: the first route wins
    critical = alert("critical", {"team": "ops"})
    error = alert("error")
    other = alert("warning", {"team": "ops"})
    async with running(make_config()):
        await publish(publisher, risk, critical, error, other)
        await fake_api.wait_for(lambda: len(fake_api.received) == 4)
    keys = {r.event_id: r.routing_key for r in fake_api.received}
    assert keys == {
        risk[2]["event_id"]: KEY_RISK,
        critical[2]["event_id"]: KEY_CRIT,
        error[2]["event_id"]: KEY_CRIT,
        other[2]["event_id"]: KEY_DEFAULT,
    }
    for _, _, payload in (risk, critical, error, other):
        (request,) = fake_api.of(payload["event_id"])
        assert request.body == {**payload["pagerduty"], "routing_key": keys[payload["event_id"]]}


async def test_trigger_and_resolve_keep_their_order(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
    publisher: MqttCollector,
) -> None:
    firing = alert("critical")
    resolved = alert("critical", status="resolved")
    fake_api.plan(firing[2]["event_id"], Answer(500), Answer(429))  # retried, still first
    async with running(make_config()):
        await publish(publisher, firing, resolved)
        await fake_api.wait_for(lambda: len(fake_api.of(resolved[2]["event_id"])) == 1)
    actions = [r.body["event_action"] for r in fake_api.received]
    assert actions == ["trigger", "trigger", "trigger", "resolve"]


def lifecycle_events() -> list[tuple[str, bytes, dict[str, Any]]]:
    """A breach and its recovery as the lifecycle makes them (annotations rendered at
    each transition, with the values of that evaluation), as published payloads."""
    rule = Rule(
        alert="BuyingPowerBelowFloor",
        expr=compile_expression("buying_power < 30000"),
        group="capital",
        file="rules/capital.yaml",
        location=Location("rules/capital.yaml", 1, 1),
        severity="critical",
    )

    def render(value: str) -> Callable[[bool, Mapping[str, str]], dict[str, str]]:
        def annotations(resolved: bool, firing_values: Mapping[str, str]) -> dict[str, str]:
            if resolved:
                fired = firing_values["buying_power"]
                return {"summary": f"buying power {value} back above 30000 (fired at {fired})"}
            return {"summary": f"buying power {value} below 30000"}

        return annotations

    book = AlertBook()
    out = []
    account = f"acct-{next(_counter)}"
    for at, value, breached in ((0, "20000.00", True), (10, "44000.00", False)):
        obs = Observation(breached, values={"buying_power": value}, render=render(value))
        event = book.observe(
            rule, venue="cs", venue_kind="clearstreet", account=account, labels={}, obs=obs, now=at
        )
        assert event is not None
        payload = event_payload(event, event_id=f"evt-{account}-{at}", instance="riskmon-t")
        topic = event_topic(PREFIX, "critical", "cs", account, rule.alert)
        out.append((topic, encode(payload), payload))
    return out


async def test_the_resolve_body_shows_the_recovery(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
    publisher: MqttCollector,
) -> None:
    firing, resolved = lifecycle_events()
    async with running(make_config()):
        await publish(publisher, firing, resolved)
        await fake_api.wait_for(lambda: len(fake_api.of(resolved[2]["event_id"])) == 1)
    (trigger,) = fake_api.of(firing[2]["event_id"])
    (resolve,) = fake_api.of(resolved[2]["event_id"])
    assert trigger.body["payload"]["summary"] == "buying power 20000.00 below 30000"
    assert resolve.body["event_action"] == "resolve"
    assert resolve.body["dedup_key"] == trigger.body["dedup_key"]
    payload = resolve.body["payload"]
    assert payload["summary"] == "buying power 44000.00 back above 30000 (fired at 20000.00)"
    assert payload["custom_details"]["values"] == {"buying_power": "44000.00"}
    assert payload["custom_details"]["firing_values"] == {"buying_power": "20000.00"}


async def test_unrouted_events_are_logged_and_not_forwarded(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
    publisher: MqttCollector,
    logs: io.StringIO,
) -> None:
    routes = "routes:\n  - match: {severity: critical}\n    routing_key_file: secrets/risk\n"
    info = alert("info")
    page = alert("critical")
    changes = Changes()
    async with running(make_config(routes), changes) as bridge:
        await publish(publisher, info, page)
        await fake_api.wait_for(lambda: len(fake_api.received) == 1)
        await changes.until(lambda: bridge.counts["unrouted"] == 1)
        assert bridge.store.state(info[2]["event_id"]) == "unrouted"
    assert fake_api.received[0].event_id == page[2]["event_id"]
    (line,) = [x for x in log_lines(logs) if "no route" in x["event"]]
    assert line["event_id"] == info[2]["event_id"]
    assert line["severity"] == "info"


# -- PagerDuty's answers ------------------------------------------------------------------------


async def test_429_and_500_and_network_errors_are_retried_until_accepted(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
    publisher: MqttCollector,
) -> None:
    slow = alert("critical")
    other_key = alert("warning")
    eid = slow[2]["event_id"]
    fake_api.plan(eid, Answer(429, retry_after="1"), Answer(500), Answer(drop=True), Answer(503))
    changes = Changes()
    async with running(make_config(), changes) as bridge:
        await publish(publisher, slow, other_key)
        await changes.until(lambda: bridge.counts["forwarded"] == 2)
        assert bridge.store.state(eid) == "sent"
    attempts = fake_api.of(eid)
    assert len(attempts) == 5
    assert all(a.body == attempts[0].body for a in attempts)
    assert attempts[1].at - attempts[0].at >= 0.9  # Retry-After: 1 honoured
    # the other routing key is not held back by the retries
    (other,) = fake_api.of(other_key[2]["event_id"])
    assert other.at < attempts[1].at


async def test_a_429_with_retry_after_ms_is_waited_out(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
    publisher: MqttCollector,
    logs: io.StringIO,
) -> None:
    """PagerDuty (or a proxy in front of it) says when to come back in milliseconds:
    the bridge waits that long, where its own back-off (10 to 50 ms here) would not."""
    event = alert("critical")
    eid = event[2]["event_id"]
    fake_api.plan(eid, Answer(429, retry_after_ms="1500"))
    changes = Changes()
    async with running(make_config(), changes) as bridge:
        await publish(publisher, event)
        await changes.until(lambda: bridge.counts["forwarded"] == 1)
    first, second = fake_api.of(eid)
    assert second.at - first.at >= 1.5
    (line,) = [x for x in log_lines(logs) if x["event"] == "pagerduty: not delivered; retrying"]
    assert line["status"] == 429
    assert line["retry_in"] == 1.5


async def test_400_is_dropped_with_a_clear_error_and_not_retried(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
    publisher: MqttCollector,
    logs: io.StringIO,
) -> None:
    bad = alert("warning", alertname="MarginCall")
    after = alert("warning")
    fake_api.plan(bad[2]["event_id"], Answer(400))
    async with running(make_config()) as bridge:
        await publish(publisher, bad, after)
        await fake_api.wait_for(lambda: len(fake_api.of(after[2]["event_id"])) == 1)
        assert bridge.store.state(bad[2]["event_id"]) == "dropped"
        assert bridge.counts["dropped"] == 1
    assert len(fake_api.of(bad[2]["event_id"])) == 1
    (line,) = [x for x in log_lines(logs) if x["event"].startswith("pagerduty refused")]
    assert line["level"] == "error"
    assert line["event_id"] == bad[2]["event_id"]
    assert line["alertname"] == "MarginCall"
    assert line["status"] == 400
    assert line["error"].startswith("Event object is invalid: 'payload.summary' is missing")
    assert "<routing_key>" in line["error"]  # PagerDuty quoted the key: hidden


async def test_rate_limit_per_routing_key(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
    publisher: MqttCollector,
) -> None:
    burst = [alert("warning") for _ in range(5)]  # the default key
    other = alert("critical")  # another key, its own bucket
    async with running(make_config(rate="{events_per_minute: 120, burst: 2}")):
        await publish(publisher, *burst, other)
        await fake_api.wait_for(lambda: len(fake_api.received) == 6)
    times = [fake_api.of(e[2]["event_id"])[0].at for e in burst]
    assert times == sorted(times)  # in order
    assert times[-1] - times[0] >= 1.4  # 2 at once, then 2/s: 1.5 s
    for earlier, later in itertools.pairwise(times[1:]):
        assert later - earlier >= 0.4
    assert fake_api.of(other[2]["event_id"])[0].at < times[-1] - 0.5


# -- once per event_id, at least once -------------------------------------------------------


async def test_the_same_event_id_twice_is_forwarded_once(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
    publisher: MqttCollector,
) -> None:
    twice = alert("warning")
    after = alert("warning")
    async with running(make_config()) as bridge:
        await publish(publisher, twice, twice, after)
        await fake_api.wait_for(lambda: len(fake_api.of(after[2]["event_id"])) == 1)
        assert bridge.counts["duplicate"] == 1
    assert len(fake_api.of(twice[2]["event_id"])) == 1


async def test_seen_event_ids_survive_a_restart(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
    publisher: MqttCollector,
) -> None:
    config = make_config()
    first = alert("warning")
    async with running(config):
        await publish(publisher, first)
        await fake_api.wait_for(lambda: len(fake_api.received) == 1)
    after = alert("warning")
    changes = Changes()
    async with running(config, changes) as bridge:
        await publish(publisher, first, after)  # e.g. the daemon re-publishing its outbox
        await changes.until(lambda: bridge.counts["forwarded"] == 1)
        # acknowledged in the first run: the broker did not deliver `first` again
        assert bridge.counts == {"received": 2, "duplicate": 1, "forwarded": 1}
    assert len(fake_api.of(first[2]["event_id"])) == 1


async def test_events_published_while_the_bridge_is_down_are_forwarded_at_start(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
    publisher: MqttCollector,
) -> None:
    config = make_config()
    async with running(config):  # makes the persistent session
        pass
    events = [alert("critical"), alert("warning"), alert("critical", status="resolved")]
    await publish(publisher, *events)
    assert fake_api.received == []
    changes = Changes()
    async with running(config, changes) as bridge:
        await fake_api.wait_for(lambda: len(fake_api.received) == 3)
        await changes.until(lambda: bridge.counts["forwarded"] == 3)
    assert bridge.counts == {"received": 3, "forwarded": 3}
    ids = [e[2]["event_id"] for e in events]
    assert sorted(r.event_id for r in fake_api.received) == sorted(ids)
    critical = [r.event_id for r in fake_api.received if r.routing_key == KEY_CRIT]
    assert critical == [ids[0], ids[2]]  # in order per key


async def test_pending_events_of_a_crashed_run_are_forwarded_at_start(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
) -> None:
    config = make_config()
    left = alert("critical")
    with BridgeStore(config.state_dir / STORE_FILE, retention=60) as store:
        assert store.add(left[2]["event_id"], left[1])  # stored and acknowledged, not sent
    async with running(config) as bridge:
        await fake_api.wait_for(lambda: len(fake_api.received) == 1)
        assert fake_api.received[0].routing_key == KEY_CRIT
        changes_seen = bridge.store.state(left[2]["event_id"])
    assert changes_seen in ("pending", "sent")  # the answer may still be on its way
    with BridgeStore(config.state_dir / STORE_FILE, retention=60) as store:
        assert store.state(left[2]["event_id"]) == "sent"
        assert list(store.pending()) == []


async def test_an_event_still_retried_at_stop_is_sent_after_a_restart(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
    publisher: MqttCollector,
) -> None:
    config = make_config()
    stuck = alert("critical")
    fake_api.plan(stuck[2]["event_id"], *[Answer(503)] * 1000)
    async with running(config) as bridge:
        await publish(publisher, stuck)
        await fake_api.wait_for(lambda: len(fake_api.received) >= 3)
        assert bridge.store.state(stuck[2]["event_id"]) == "pending"
    fake_api.plan(stuck[2]["event_id"])  # PagerDuty is back
    tried = len(fake_api.received)
    changes = Changes()
    async with running(config, changes) as bridge:
        await changes.until(lambda: bridge.counts["forwarded"] == 1)
        assert bridge.store.state(stuck[2]["event_id"]) == "sent"
    assert len(fake_api.received) == tried + 1


async def test_mqtt_username_and_password_file(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
    mosquitto_factory: Callable[..., MosquittoBroker],
    tmp_path: Path,
) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    passwords = tmp_path / "passwords"
    for user, password in (("pd", "pd-s3cret"), ("daemon", "d-s3cret")):
        command = [tool, "-b", *(["-c"] if user == "pd" else []), str(passwords), user, password]
        await asyncio.to_thread(subprocess.run, command, check=True)
    broker = mosquitto_factory(allow_anonymous=False, extra=f"password_file {passwords}\n")
    (tmp_path / "mqtt-password").write_text("pd-s3cret\n", encoding="utf-8")
    config = make_config(broker=broker, mqtt=", username: pd, password_file: mqtt-password")
    event = alert("critical")
    async with (
        running(config),
        aiomqtt.Client(broker.host, broker.port, username="daemon", password="d-s3cret") as daemon,
    ):
        await daemon.publish(event[0], event[1], qos=1)
        await fake_api.wait_for(lambda: len(fake_api.received) == 1)
    assert fake_api.received[0].routing_key == KEY_CRIT


async def test_one_bridge_per_state_folder(make_config: Callable[..., PagerDutyConfig]) -> None:
    config = make_config()
    async with running(config):
        bridge = PagerDutyBridge(config)
        with pytest.raises(StoreLocked):
            await bridge.run()


# -- bad input, secrets -------------------------------------------------------------------------


async def test_invalid_payloads_are_logged_with_their_topic_and_skipped(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
    publisher: MqttCollector,
    logs: io.StringIO,
) -> None:
    good = alert("warning")
    no_body = dict(alert("warning")[2])
    del no_body["pagerduty"]
    bad_topic = f"{PREFIX}/events/warning/cs/x/Broken"
    async with running(make_config()) as bridge:
        await publisher.publish(bad_topic, b"{not json")
        await publisher.publish(bad_topic, encode(no_body))
        await publisher.publish(bad_topic, b"")
        await publish(publisher, good)
        await fake_api.wait_for(lambda: len(fake_api.received) == 1)
        assert bridge.counts["invalid"] == 3
    skipped = [x for x in log_lines(logs) if x["event"] == "pagerduty: invalid event skipped"]
    assert [x["topic"] for x in skipped] == [bad_topic] * 3
    assert skipped[0]["error"].startswith("payload is not JSON")
    assert skipped[1]["error"] == "pagerduty is missing or not an object"


async def test_a_rotated_key_file_is_read_again(
    make_config: Callable[..., PagerDutyConfig],
    fake_api: FakeEventsApi,
    publisher: MqttCollector,
    key_files: Path,
) -> None:
    first, second = alert("info", {"team": "risk"}), alert("info", {"team": "risk"})
    async with running(make_config()):
        await publish(publisher, first)
        await fake_api.wait_for(lambda: len(fake_api.received) == 1)
        rotated = key_files / "risk.new"
        rotated.write_text(KEY_RISK_NEW, encoding="utf-8")
        rotated.replace(key_files / "risk")  # as a Kubernetes Secret update: a new inode
        await publish(publisher, second)
        await fake_api.wait_for(lambda: len(fake_api.received) == 2)
    assert [r.routing_key for r in fake_api.received] == [KEY_RISK, KEY_RISK_NEW]


def test_parse_event_refuses_what_pagerduty_would_refuse() -> None:
    _, payload, data = alert("warning")
    assert parse_event(payload).body == data["pagerduty"]
    for change, message in [
        ({"schema": "riskmon.alert.v2"}, "schema is 'riskmon.alert.v2'"),
        ({"event_id": ""}, "event_id is missing"),
        ({"severity": "fatal"}, "severity must be one of"),
        ({"labels": {"a": 1}}, "labels must be an object of texts"),
        ({"pagerduty": {**data["pagerduty"], "event_action": "close"}}, "pagerduty.event_action"),
        ({"pagerduty": {**data["pagerduty"], "dedup_key": "x" * 256}}, "pagerduty.dedup_key is"),
    ]:
        with pytest.raises(BadEvent, match=message):
            parse_event(encode({**data, **change}))
    with pytest.raises(BadEvent, match="not an object"):
        parse_event(b"[1]")


def test_answers_and_retry_after() -> None:
    def hint(**headers: str) -> float | None:
        return retry_after_seconds(
            CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()})
        )

    assert hint(Retry_After="7") == 7.0
    assert hint(Retry_After="-3") == 0.0
    assert hint() is None
    assert hint(Retry_After="soon") is None
    assert hint(Retry_After="nan") is None
    later = hint(Retry_After="Wed, 21 Oct 2099 07:28:00 GMT")
    assert later is not None
    assert later > 1e9
    assert hint(Retry_After="Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert hint(retry_after_ms="1500") == 1.5
    assert hint(retry_after_ms="1500", Retry_After="60") == 1.5  # the finer one wins
    assert hint(retry_after_ms="soon", Retry_After="60") == 60.0
    backoff = Backoff(initial=0.01, max=0.05)
    assert 0.005 <= retry_wait(backoff, 0, None) <= 0.01
    assert retry_wait(backoff, 10, 1.5) == 1.5  # a longer hint wins
    assert retry_wait(backoff, 0, 0.001) <= 0.01  # a shorter one does not
    assert retry_wait(backoff, 0, 86400) == RETRY_AFTER_CAP
    errors = ["a", f"key {KEY_RISK}"]
    answer = json.dumps({"message": "Event object is invalid", "errors": errors})
    assert _error_text(answer.encode(), KEY_RISK) == "Event object is invalid: a; key <routing_key>"
    assert _error_text(b"<html>Bad gateway</html>", KEY_RISK) == "<html>Bad gateway</html>"
    assert scrub(f"x{KEY_RISK}y", KEY_RISK) == "x<routing_key>y"


# -- config and command line --------------------------------------------------------------------


def test_the_example_config_loads(tmp_path: Path) -> None:
    shutil.copy(REPO / "examples" / "pagerduty.yaml", tmp_path / "pagerduty.yaml")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pagerduty-risk").write_text(KEY_RISK, encoding="utf-8")
    env = {"PAGERDUTY_WARNINGS_KEY": KEY_CRIT, "PAGERDUTY_ROUTING_KEY": KEY_DEFAULT}
    config = load_pagerduty_config(tmp_path / "pagerduty.yaml", environ=env)
    assert [r.name for r in config.routes] == ["risk-pages", "warnings", "default"]
    assert config.mqtt.client_id == "riskmon-pagerduty"
    assert config.events_url == "https://events.pagerduty.com/v2/enqueue"
    assert config.state_dir == tmp_path / "state"
    assert (config.rate_limit.events_per_minute, config.rate_limit.burst) == (100, 20)
    assert config.session_expiry == config.dedup_retention == 7 * 86400
    route = config.route_for("critical", {"team": "risk"})
    assert route is not None
    assert route.routing_key.get() == KEY_RISK
    assert config.route_for("error", {"team": "ops"}) is config.routes[2]
    assert config.route_for("warning", {}) is config.routes[1]
    assert config.routes[1].routing_key.get() == KEY_CRIT
    assert KEY_CRIT not in repr(config)


def test_config_errors_name_their_place_and_never_a_key(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY_RISK, encoding="utf-8")
    path = tmp_path / "bad.yaml"
    path.write_text(
        "mqtt: {url: embedded}\n"  # 1
        "rate_limt: {burst: 2}\n"  # 2
        "routes:\n"  # 3
        "  - match: {severity: [critical, fatal]}\n"  # 4
        "    routing_key_file: key\n"  # 5
        "  - routing_key: " + KEY_CRIT + "\n"  # 6
        "  - routing_key_env: PD_UNSET\n"  # 7
        "  - match: {labels: {team: risk}}\n"  # 8
        "    routing_key_file: missing\n"  # 9
        "    routing_key_env: PD_CRITICAL_KEY\n"  # 10
        "  - routing_key_env: PD_CRITICAL_KEY\n"  # 11
        "  - {match: {severity: info}, routing_key_file: key}\n",  # 12
        encoding="utf-8",
    )
    with pytest.raises(SourceError) as caught:
        load_pagerduty_config(path, environ=ENV)
    text = str(caught.value)
    name = str(path)
    assert text.splitlines() == [
        f"{name}:1:13: mqtt url: the bridge needs a broker's mqtt:// or mqtts:// url",
        f"{name}:2:1: unknown key 'rate_limt' in the pagerduty config; did you mean 'rate_limit'?",
        f"{name}:4:34: unknown severity 'fatal' (known: critical, error, warning, info)",
        f"{name}:6:5: routing_key: a routing key is not written in the config; use "
        "routing_key_file (re-read when it changes) or routing_key_env (an environment "
        "variable)",
        f"{name}:7:22: environment variable PD_UNSET (the routing key of routes[2]) is not set",
        f"{name}:10:5: give routing_key_file or routing_key_env, not both",
        f"{name}:12:5: this route is never used: the route without match at line 11 takes "
        "every event; put the catch-all route last",
    ]
    assert KEY_CRIT not in text
    assert KEY_RISK not in text


def test_a_malformed_events_url_never_shows_its_password(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY_RISK, encoding="utf-8")
    path = tmp_path / "pagerduty.yaml"
    path.write_text(
        "mqtt: {url: mqtt://127.0.0.1:1883}\n"
        "events_url: https:/ops:SECRETPW@events.pagerduty.com/v2/enqueue\n"
        "routes: [{routing_key_file: key}]\n",
        encoding="utf-8",
    )
    with pytest.raises(SourceError) as caught:
        load_pagerduty_config(path, environ=ENV)
    assert str(caught.value) == (
        f"{path}:2:13: events_url: no valid host in 'https:/***@events.pagerduty.com/v2/enqueue'"
    )


def test_cli_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pagerduty.yaml"
    path.write_text("mqtt: {url: mqtt://127.0.0.1:1883}\n", encoding="utf-8")
    assert main(["pagerduty", "-c", str(path)]) == 1
    assert f"{path}:1:1: missing required key 'routes'" in capsys.readouterr().err
