"""A broker that refuses riskmon's publishes (an ACL): never a crash, dead letters, an alert.

`riskmon run` end to end against a Mosquitto whose ACL denies some of riskmon's topics.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MosquittoBroker, MqttCollector
from test_daemon import BREACH, RiskmonProcess, events, riskmon_process
from test_mqtt import INSTANCE, Changes, append, event, make_publisher, running

from monitor.simulator import Simulator
from monitor.store import Store

#: What the daemon may publish on, beside the topics each test refuses.
ALLOWED = ("status", "heartbeat")
UNDELIVERABLE = "EventsUndeliverable"


def acl(folder: Path, allowed: tuple[str, ...]) -> str:
    """A Mosquitto ACL for anonymous clients: read everything of riskmon's, write only
    `allowed` (topic levels under riskmon/)."""
    path = folder / "acl"
    lines = ["topic read riskmon/#"] + [f"topic readwrite riskmon/{name}/#" for name in allowed]
    path.write_text("\n".join(lines) + "\n")
    return f"acl_file {path}\n"


@pytest.fixture(params=["uvloop", "asyncio"])
def event_loop_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=[("alerts",), ()], ids=["events-refused", "events-and-alerts-refused"])
def allowed(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return ALLOWED + tuple(request.param)


@pytest.fixture
def mosquitto(
    mosquitto_factory: Callable[..., MosquittoBroker], tmp_path: Path, allowed: tuple[str, ...]
) -> MosquittoBroker:
    """Overrides conftest's: the broker of `riskmon_config` refuses what is not `allowed`."""
    return mosquitto_factory(extra=acl(tmp_path, allowed))


@pytest.fixture
def riskmon(
    tmp_path: Path,
    riskmon_config: Callable[..., tuple[Path, int]],
    event_loop_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RiskmonProcess]:
    monkeypatch.setenv("RISKMON_EVENT_LOOP", event_loop_name)
    with riskmon_process(tmp_path, riskmon_config) as process:
        yield process


def problems_in(log: str) -> list[str]:
    """Log lines that must never be there: a traceback, an unretrieved task exception."""
    return [
        line
        for line in log.splitlines()
        if "Traceback" in line or "never retrieved" in line or "Fatal Python error" in line
    ]


def statuses(collector: MqttCollector, instance: str = "test-1") -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in collector.on(f"riskmon/status/{instance}") if m.payload]


async def test_a_refused_event_is_dead_lettered_and_sent_again_once_allowed(
    riskmon: RiskmonProcess,
    simulator: Simulator,
    mosquitto: MosquittoBroker,
    mqtt_collector: Callable[..., MqttCollector],
    tmp_path: Path,
) -> None:
    async with mqtt_collector(["riskmon/#"]) as subscriber:
        riskmon.start()
        await riskmon.ready()
        simulator.set_fields("clearstreet", "19816", {"buying_power": "20000.00"})

        async def dead_letters(n: int) -> bool:
            metrics = await riskmon.metrics()
            found = metrics.get(("riskmon_outbox_dead_letters", ()), 0)
            return found >= n if n else found == 0

        async def undeliverable(state: str | None) -> bool:
            _, body = await riskmon.get("/api/v1/alerts")
            found = [a for a in json.loads(body)["alerts"] if a["alertname"] == UNDELIVERABLE]
            return [a["state"] for a in found] == ([state] if state else [])

        await riskmon.until(lambda: dead_letters(1), "a dead letter", timeout=30)
        await riskmon.until(lambda: undeliverable("firing"), "EventsUndeliverable firing")
        _, body = await riskmon.get("/api/v1/alerts")
        [alert] = [a for a in json.loads(body)["alerts"] if a["alertname"] == UNDELIVERABLE]
        assert (alert["venue"], alert["account"]) == ("riskmon", "*")
        assert alert["labels"]["instance"] == "test-1"  # the shards' alerts stay apart
        metrics = await riskmon.metrics()
        assert metrics[("riskmon_events_refused_total", (("reason", "not_authorized"),))] >= 5
        active = (
            ("account", "*"),
            ("alertname", UNDELIVERABLE),
            ("severity", "critical"),
            ("state", "firing"),
            ("venue", "riskmon"),
        )
        assert metrics[("riskmon_alert_active", active)] == 1
        # the retained status, which the broker still takes, says so
        await subscriber.wait_for(
            lambda _: any(s.get("dead_letters") for s in statuses(subscriber))
        )
        assert statuses(subscriber)[-1]["alerts"] == [UNDELIVERABLE]
        assert not subscriber.on(BREACH)
        refusals = [line for line in riskmon.log().splitlines() if "refused a publish" in line]
        assert refusals
        assert BREACH in refusals[0]
        assert "Not authorized" in refusals[0]

        # A restart does not abort: the dead letter is queued again, refused again.
        assert riskmon.signal(signal.SIGTERM) == 0
        riskmon.start()
        await riskmon.ready()
        await riskmon.until(lambda: dead_letters(1), "the dead letter again", timeout=30)
        assert "dead letters re-queued at start-up" in riskmon.log()

        # A SIGHUP before the ACL is fixed: re-queued, refused again; the alert holds
        # (neither the reload nor the moment without dead letters resolves it).
        assert riskmon.process is not None
        riskmon.process.send_signal(signal.SIGHUP)

        async def requeued_at_reload() -> bool:
            return "dead letters re-queued at reload" in riskmon.log() and await dead_letters(1)

        await riskmon.until(requeued_at_reload, "the dead letter re-queued and refused again")
        assert await undeliverable("firing")
        assert not [
            line
            for line in riskmon.log().splitlines()
            if '"alert resolved"' in line and UNDELIVERABLE in line
        ]

        # The operator fixes the ACL; a SIGHUP sends the dead letter again.
        acl(tmp_path, (*ALLOWED, "events", "alerts"))
        assert mosquitto.process is not None
        mosquitto.process.send_signal(signal.SIGHUP)  # Mosquitto reloads its ACL
        assert riskmon.process is not None
        riskmon.process.send_signal(signal.SIGHUP)
        await subscriber.wait_for(lambda _: bool(subscriber.on(BREACH)), timeout=30)
        assert [e["status"] for e in events(subscriber, BREACH)] == ["firing"]
        await riskmon.until(lambda: dead_letters(0), "no dead letters")
        await riskmon.until(lambda: undeliverable(None), "EventsUndeliverable resolved", 40)
        assert riskmon.signal(signal.SIGTERM) == 0
    assert problems_in(riskmon.log()) == []


# -- the publisher alone: the records behind a refused one flow; MQTT 3.1.1's hang-up ----


@pytest.fixture
def changes() -> Changes:
    """The publisher's `on_change`, to wait on (tests/test_mqtt.py's)."""
    return Changes()


async def test_the_records_behind_a_refused_one_are_delivered(
    mosquitto_factory: Callable[..., MosquittoBroker],
    tmp_path: Path,
    changes: Changes,
) -> None:
    """acct-1's events are refused, acct-2's are not: acct-1's record becomes a dead
    letter after `max_refusals`, acct-2's are delivered meanwhile and after."""
    path = tmp_path / "acl"
    path.write_text(
        "topic read riskmon/#\n"
        + "".join(
            f"topic readwrite riskmon/{name}/#\n"
            for name in ("status", "heartbeat", "alerts", "events/critical/cs/acct-2")
        )
    )
    broker = mosquitto_factory(extra=f"acl_file {path}\n")
    refused: list[str] = []
    with Store(tmp_path / "state" / "riskmon.db") as store:
        publisher = make_publisher(
            broker.url,
            store,
            changes,
            max_refusals=3,
            on_refused=refused.append,
            heartbeat_interval=0.2,
        )
        async with (
            MqttCollector(broker, ["riskmon/#"]) as sub,
            running(publisher),
        ):
            await changes.until(lambda: publisher.connected)
            append(store, event(1), event(2))
            publisher.notify()
            await changes.until(lambda: store.dead_letters() == 1 and store.depth() == 0)
            assert refused == ["not_authorized"] * 3
            [(_, topic, reason)] = store.dead_letter_reasons()
            assert topic == "riskmon/events/critical/cs/acct-1/BuyingPowerBelowFloor"
            assert reason.endswith("Not authorized (0x87)")
            append(store, event(2, "resolved"))
            publisher.notify()
            await sub.wait_for(lambda _: len(sub.on("riskmon/events/+/cs/acct-2/#")) == 2)
            await sub.wait_for(
                lambda _: any(s.get("dead_letters") == 1 for s in statuses(sub, INSTANCE))
            )
            await sub.wait_for(  # the heartbeat says it too
                lambda _: any(
                    json.loads(m.payload).get("alerts") == [UNDELIVERABLE]
                    for m in sub.on(f"riskmon/heartbeat/{INSTANCE}")
                )
            )
            assert not sub.on("riskmon/events/+/cs/acct-1/#")
            assert publisher.connected  # no reconnect for a refusal

            store.requeue_dead_letters()  # what start-up and SIGHUP do
            publisher.requeued()
            await changes.until(lambda: len(refused) == 6 and store.dead_letters() == 1)


class HangingUpBroker:
    """An MQTT 3.1.1 broker on a real socket that refuses a publish the way 3.1.1
    brokers other than Mosquitto do: it closes the connection. It refuses MQTT 5 (so the
    publisher steps down), acknowledges everything else."""

    def __init__(self, refuse_prefix: str) -> None:
        self.refuse_prefix = refuse_prefix
        self.connections = 0
        self.accepted: list[str] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"mqtt://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> HangingUpBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                kind, body = await _packet(reader)
                if kind == 1:  # CONNECT: protocol level after the name "MQTT"
                    level = body[6]
                    writer.write(b"\x20\x02\x00" + (b"\x01" if level != 4 else b"\x00"))
                    if level != 4:
                        break
                    self.connections += 1
                elif kind == 3:  # PUBLISH
                    size = int.from_bytes(body[:2], "big")
                    topic = body[2 : 2 + size].decode()
                    if topic.startswith(self.refuse_prefix):
                        break
                    self.accepted.append(topic)
                    writer.write(b"\x40\x02" + body[2 + size : 4 + size])  # PUBACK, its id
                elif kind == 12:  # PINGREQ
                    writer.write(b"\xd0\x00")
                elif kind == 14:  # DISCONNECT
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One MQTT control packet: its type and its body (after the fixed header)."""
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = await reader.readexactly(length)
    qos = (first >> 1) & 0x03
    kind = first >> 4
    if kind == 3 and qos == 0:  # a heartbeat: no packet id, no PUBACK (type 16: none)
        return 16, body
    return kind, body


async def hang_ups(tmp_path: Path) -> None:
    """Three hang-ups with a record in flight, each followed by a reconnect."""
    refused: list[str] = []
    changes = Changes()
    async with HangingUpBroker("riskmon/events/critical/cs/acct-1/") as broker:
        with Store(tmp_path / "state" / "riskmon.db") as store:
            publisher = make_publisher(
                broker.url, store, changes, max_refusals=3, on_refused=refused.append
            )
            async with running(publisher):
                append(store, event(1), event(2))
                await changes.until(lambda: store.dead_letters() == 1 and store.depth() == 0)
            assert publisher.protocol_version == 4
            assert refused == ["disconnected"] * 3
            [(_, topic, reason)] = store.dead_letter_reasons()
            assert topic == "riskmon/events/critical/cs/acct-1/BuyingPowerBelowFloor"
            assert reason == f"broker disconnected while {topic} was in flight (MQTT 3.1.1)"
            assert "riskmon/events/critical/cs/acct-2/BuyingPowerBelowFloor" in broker.accepted


async def test_an_mqtt_311_hang_up_with_a_record_in_flight_counts_as_a_refusal(
    tmp_path: Path,
) -> None:
    await hang_ups(tmp_path)


def test_reconnects_after_hang_ups_do_not_abort_uvloop(tmp_path: Path) -> None:
    """A socket watcher left on a closed descriptor made uvloop (libuv) abort the
    process at the next reconnect: the publisher on uvloop, as `riskmon run` runs it."""
    uvloop = pytest.importorskip("uvloop")
    uvloop.run(hang_ups(tmp_path))


async def test_a_requeued_dead_letter_does_not_overwrite_a_newer_retained_state(
    mosquitto_factory: Callable[..., MosquittoBroker], tmp_path: Path, changes: Changes
) -> None:
    broker = mosquitto_factory()  # accepts everything: the ACL was fixed meanwhile
    retained = "riskmon/alerts/cs/acct-1/BuyingPowerBelowFloor"
    with Store(tmp_path / "state" / "riskmon.db") as store:
        [fired] = append(store, event(1))
        [record] = store.pending()
        store.dead_letter(record.seq, "broker refused it: Not authorized (0x87)")
        [resolved] = append(store, event(1, "resolved"))
        publisher = make_publisher(broker.url, store, changes)
        async with MqttCollector(broker, ["riskmon/#"]) as sub, running(publisher):
            await changes.until(lambda: publisher.connected and store.depth() == 0)
            store.requeue_dead_letters()
            publisher.requeued()
            await sub.wait_for(lambda _: len(sub.on("riskmon/events/#")) == 2)
            await changes.until(lambda: store.depth() == 0)
            ids = [json.loads(m.payload)["event_id"] for m in sub.on("riskmon/events/#")]
            assert ids == [resolved, fired]  # the firing event goes out, late
            await sub.publish("riskmon/alerts/marker", b"x")  # what came before is here
            await sub.wait_for(lambda _: bool(sub.on("riskmon/alerts/marker")))
            assert [m.payload for m in sub.on(retained)] == [b""]  # the alert stays cleared
