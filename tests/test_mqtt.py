"""MqttPublisher (monitor/publish/mqtt.py) against a real Mosquitto.

Nothing here sleeps to wait: tests wait on the publisher's `on_change` or on messages
arriving at a subscriber, always with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import structlog
from conftest import MosquittoBroker, MqttCollector
from pki import make_pki

from monitor import __version__
from monitor.config import Secret
from monitor.config.model import MqttConfig, TlsConfig
from monitor.engine.lifecycle import AlertEvent, fingerprint
from monitor.infra.mqtt_link import call_on_change
from monitor.publish.events import to_entry
from monitor.publish.mqtt import MqttPublisher
from monitor.store import Store

PREFIX = "riskmon"
INSTANCE = "riskmon-t"
PMX_ACCOUNT = "firms/ACME/accounts/main"


# -- helpers ----------------------------------------------------------------------------------


def event(alert: int, status: str = "firing", *, account: str | None = None) -> AlertEvent:
    """An event of alert number `alert` (its own account) of one rule."""
    account = f"acct-{alert}" if account is None else account
    now = time.time()
    return AlertEvent(
        status="firing" if status == "firing" else "resolved",
        at=now,
        rule_key="capital/BuyingPowerBelowFloor",
        alertname="BuyingPowerBelowFloor",
        severity="critical",
        venue="cs",
        venue_kind="clearstreet",
        account=account,
        labels={},
        annotations={"summary": f"{account} buying power low"},
        values={"buying_power": "24000.00"},
        starts_at=now - 30,
        ends_at=None if status == "firing" else now,
        fingerprint=fingerprint("BuyingPowerBelowFloor", "cs", account, {"severity": "critical"}),
    )


def append(store: Store, *events: AlertEvent) -> list[str]:
    """Append `events` as the daemon does; their event ids."""
    entries = [to_entry(e, prefix=PREFIX, instance=INSTANCE) for e in events]
    store.append(entries)
    return [e.event_id for e in entries]


def body(message: aiomqtt.Message) -> dict[str, Any]:
    assert isinstance(message.payload, bytes | bytearray)
    data: dict[str, Any] = json.loads(message.payload)
    return data


def statuses(messages: list[aiomqtt.Message]) -> list[str]:
    return [body(m)["status"] for m in messages if m.topic.matches(f"{PREFIX}/status/+")]


class Changes:
    """The publisher's `on_change`; `until` waits for a condition on it."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def __call__(self) -> None:
        self._changed.set()

    async def until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "state" / "riskmon.db") as s:
        yield s


@pytest.fixture
def changes() -> Changes:
    return Changes()


def make_publisher(
    url: str, store: Store, changes: Changes | None = None, **kwargs: Any
) -> MqttPublisher:
    config = MqttConfig(
        url=url,
        topic_prefix=PREFIX,
        username=kwargs.pop("username", None),
        password=kwargs.pop("password", None),
        tls=kwargs.pop("tls", None),
    )
    kwargs.setdefault("heartbeat", lambda: {"cycles": 7, "accounts": 2})
    kwargs.setdefault("reconnect_min", 0.05)
    kwargs.setdefault("reconnect_max", 0.5)
    return MqttPublisher(config, store, instance=INSTANCE, on_change=changes, **kwargs)


@contextlib.asynccontextmanager
async def running(publisher: MqttPublisher) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(publisher.run())
    try:
        yield task
    finally:
        if not task.done():
            await publisher.stop(flush_timeout=1.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- delivery ---------------------------------------------------------------------------------


async def test_events_and_retained_alert_state(
    mosquitto: MosquittoBroker,
    mqtt_collector: Callable[..., MqttCollector],
    store: Store,
    changes: Changes,
) -> None:
    publisher = make_publisher(mosquitto.url, store, changes)
    level = "firms%2FACME%2Faccounts%2Fmain"
    events_topic = f"{PREFIX}/events/critical/cs/{level}/BuyingPowerBelowFloor"
    alerts_topic = f"{PREFIX}/alerts/cs/{level}/BuyingPowerBelowFloor"
    async with (
        mqtt_collector([f"{PREFIX}/#"], protocol=aiomqtt.ProtocolVersion.V5) as sub,
        running(publisher),
    ):
        await changes.until(lambda: publisher.connected)
        assert publisher.protocol_version == 5
        [fired] = append(store, event(1, account=PMX_ACCOUNT))
        publisher.notify()
        await sub.wait_for(lambda _: len(sub.on(alerts_topic)) == 1)
        [message] = sub.on(events_topic)
        assert body(message)["event_id"] == fired
        assert body(message)["status"] == "firing"
        assert message.qos == 1
        assert not message.retain
        assert message.properties is not None
        assert message.properties.ContentType == "application/json"
        [retained] = sub.on(alerts_topic)
        assert body(retained)["event_id"] == fired  # the same JSON as the event

        [resolved] = append(store, event(1, "resolved", account=PMX_ACCOUNT))
        publisher.notify()
        await sub.wait_for(lambda _: len(sub.on(alerts_topic)) == 2)
        assert [body(m)["event_id"] for m in sub.on(events_topic)] == [fired, resolved]
        assert sub.on(alerts_topic)[1].payload == b""  # the retained alert is cleared
        await changes.until(lambda: store.depth() == 0)
        assert publisher.published_total == 2

    # a late subscriber finds no retained alert, and the retained status
    async with mqtt_collector([f"{PREFIX}/alerts/#", f"{PREFIX}/status/#"]) as late:
        await late.wait_for(lambda ms: len(statuses(ms)) == 1)
        await late.publish(f"{PREFIX}/alerts/marker", b"x")  # everything retained came before
        await late.wait_for(lambda _: bool(late.on(f"{PREFIX}/alerts/marker")))
        assert [str(m.topic) for m in late.on(f"{PREFIX}/alerts/#")] == [f"{PREFIX}/alerts/marker"]


async def test_many_events_in_order_per_alert(
    mosquitto: MosquittoBroker,
    mqtt_collector: Callable[..., MqttCollector],
    store: Store,
    changes: Changes,
) -> None:
    """A small window (4 records) and 400 events for 8 alerts: order holds per alert."""
    publisher = make_publisher(mosquitto.url, store, changes, window=8)
    expected: dict[str, list[str]] = {}
    async with mqtt_collector([f"{PREFIX}/events/#"]) as sub, running(publisher):
        for n in range(50):
            batch = [event(a, "firing" if n % 2 == 0 else "resolved") for a in range(8)]
            for e, eid in zip(batch, append(store, *batch), strict=True):
                expected.setdefault(e.fingerprint, []).append(eid)
            publisher.notify()
        await sub.wait_for(lambda ms: len(ms) >= 400)
        await changes.until(lambda: store.depth() == 0)
    seen: dict[str, list[str]] = {}
    for m in sub.messages:
        seen.setdefault(body(m)["fingerprint"], []).append(body(m)["event_id"])
    assert seen == expected
    assert publisher.published_total == 400


async def test_broker_outage_loses_nothing(
    mosquitto: MosquittoBroker,
    mqtt_collector: Callable[..., MqttCollector],
    store: Store,
    changes: Changes,
) -> None:
    """10 events before, 40 during an outage: all 50 arrive, in order per alert, and the
    retained states end as the last events left them."""
    publisher = make_publisher(mosquitto.url, store, changes)
    ids: dict[str, list[str]] = {}  # per alert fingerprint, in append order

    def add(round_: int) -> None:
        batch = [event(a, "firing" if round_ % 2 == 0 else "resolved") for a in range(10)]
        for e, eid in zip(batch, append(store, *batch), strict=True):
            ids.setdefault(e.fingerprint, []).append(eid)
        publisher.notify()

    # a persistent session (QoS 1): what is published while it is away is kept for it
    session = {"client_id": "outage-subscriber", "clean_session": False}
    async with running(publisher):
        async with mqtt_collector([f"{PREFIX}/events/#"], **session) as before:
            await changes.until(lambda: publisher.connected)
            add(0)
            await before.wait_for(lambda ms: len(ms) == 10)
            await changes.until(lambda: store.depth() == 0)

            mosquitto.stop()
            await changes.until(lambda: not publisher.connected)
            for round_ in range(1, 5):
                add(round_)
            assert store.depth() == 40
            assert publisher.last_error is not None

        mosquitto.start()
        async with mqtt_collector([f"{PREFIX}/events/#"], **session) as after:
            await changes.until(lambda: publisher.connected)
            await changes.until(lambda: store.depth() == 0)
            everything = {eid for alert_ids in ids.values() for eid in alert_ids}
            await after.wait_for(
                lambda ms: everything <= {body(m)["event_id"] for m in before.messages + ms}
            )
        # at least once: duplicates are allowed; the first delivery of each is in order
        arrived: dict[str, list[str]] = {}
        for m in before.messages + after.messages:
            data = body(m)
            alert_ids = arrived.setdefault(data["fingerprint"], [])
            if data["event_id"] not in alert_ids:
                alert_ids.append(data["event_id"])
        assert arrived == ids
        assert publisher.published_total >= 50

    async with mqtt_collector([f"{PREFIX}/alerts/#"]) as retained:
        await retained.wait_for(lambda ms: len(ms) == 10)
        assert {body(m)["event_id"] for m in retained.messages} == {v[-1] for v in ids.values()}


# -- status and heartbeats --------------------------------------------------------------------


async def test_status_online_at_connect_and_offline_at_stop(
    mosquitto: MosquittoBroker,
    mqtt_collector: Callable[..., MqttCollector],
    store: Store,
    changes: Changes,
) -> None:
    publisher = make_publisher(mosquitto.url, store, changes, started_at=1795255200.0)
    status = f"{PREFIX}/status/{INSTANCE}"
    marker = f"{PREFIX}/test/marker"
    async with mqtt_collector([status, marker]) as sub:
        task = asyncio.create_task(publisher.run())
        await sub.wait_for(lambda ms: statuses(ms) == ["online"])
        online = body(sub.messages[0])
        assert online["instance"] == INSTANCE
        assert online["version"] == __version__
        assert online["started_at"] == "2026-11-21T10:00:00.000Z"
        assert online["at"].endswith("Z")

        await publisher.stop()
        assert task.done()
        assert not publisher.connected
        await sub.wait_for(lambda ms: statuses(ms) == ["online", "offline"])
        # the disconnect was clean, so no will follows (the marker comes after it would)
        await sub.publish(marker, b"{}")
        await sub.wait_for(lambda _: bool(sub.on(marker)))
        assert statuses(sub.messages) == ["online", "offline"]

    async with mqtt_collector([status]) as late:  # and offline is retained
        await late.wait_for(lambda ms: len(ms) == 1)
        assert late.messages[0].retain
        assert body(late.messages[0])["status"] == "offline"


async def test_last_will_when_run_is_cancelled(
    mosquitto: MosquittoBroker,
    mqtt_collector: Callable[..., MqttCollector],
    store: Store,
) -> None:
    publisher = make_publisher(mosquitto.url, store)
    async with mqtt_collector([f"{PREFIX}/status/#"]) as sub:
        task = asyncio.create_task(publisher.run())
        await sub.wait_for(lambda ms: statuses(ms) == ["online"])
        task.cancel()  # no stop(): the connection is dropped without DISCONNECT
        with pytest.raises(asyncio.CancelledError):
            await task
        await sub.wait_for(lambda ms: statuses(ms) == ["online", "offline"])
        will = body(sub.messages[-1])
        assert will["instance"] == INSTANCE


VICTIM = """
import asyncio, sys
from pathlib import Path
from monitor.config.model import MqttConfig
from monitor.publish.mqtt import MqttPublisher
from monitor.store import Store

async def main() -> None:
    store = Store(Path(sys.argv[2]))
    config = MqttConfig(url=sys.argv[1])
    await MqttPublisher(config, store, instance="victim", heartbeat=dict).run()

asyncio.run(main())
"""


async def test_last_will_when_the_process_is_killed(
    mosquitto: MosquittoBroker,
    mqtt_collector: Callable[..., MqttCollector],
    tmp_path: Path,
) -> None:
    async with mqtt_collector([f"{PREFIX}/status/victim"]) as sub:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", VICTIM, mosquitto.url, str(tmp_path / "victim.db")
        )
        try:
            await sub.wait_for(lambda ms: statuses(ms) == ["online"], timeout=30)
            process.send_signal(signal.SIGKILL)
            assert await process.wait() == -signal.SIGKILL
            await sub.wait_for(lambda ms: statuses(ms) == ["online", "offline"])
            assert body(sub.messages[-1])["instance"] == "victim"
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_heartbeats(
    mosquitto: MosquittoBroker,
    mqtt_collector: Callable[..., MqttCollector],
    store: Store,
) -> None:
    publisher = make_publisher(mosquitto.url, store, heartbeat_interval=0.05)
    append(store, event(1))  # not published yet when the first heartbeat leaves
    topic = f"{PREFIX}/heartbeat/{INSTANCE}"
    async with (
        mqtt_collector([topic], protocol=aiomqtt.ProtocolVersion.V5) as sub,
        running(publisher),
    ):
        await sub.wait_for(lambda ms: len(ms) >= 3)
    beat = body(sub.messages[-1])
    assert beat["cycles"] == 7
    assert beat["accounts"] == 2
    assert beat["instance"] == INSTANCE
    assert beat["outbox_depth"] == 0
    assert beat["at"].endswith("Z")
    message = sub.messages[-1]
    assert message.qos == 0
    assert message.properties is not None
    assert message.properties.MessageExpiryInterval == 1  # 3 x 0.05 s, at least 1 s
    assert message.properties.ContentType == "application/json"


# -- stopping -------------------------------------------------------------------------------------


async def test_stop_flushes_the_outbox(
    mosquitto: MosquittoBroker,
    mqtt_collector: Callable[..., MqttCollector],
    store: Store,
    changes: Changes,
) -> None:
    publisher = make_publisher(mosquitto.url, store, changes)
    append(store, *[event(a % 5, "firing") for a in range(2000)])
    async with mqtt_collector([f"{PREFIX}/status/#"]) as sub:
        task = asyncio.create_task(publisher.run())
        await changes.until(lambda: publisher.connected)
        assert store.depth() > 0  # still draining
        await publisher.stop(flush_timeout=30)
        assert task.done()
        assert store.depth() == 0
        assert publisher.published_total == 2000
        await sub.wait_for(lambda ms: statuses(ms) == ["online", "offline"])


async def test_stop_while_the_broker_is_down_returns_in_time(
    mosquitto: MosquittoBroker, store: Store, changes: Changes
) -> None:
    publisher = make_publisher(mosquitto.url, store, changes)
    task = asyncio.create_task(publisher.run())
    await changes.until(lambda: publisher.connected)
    mosquitto.stop()
    await changes.until(lambda: not publisher.connected)
    append(store, event(1))
    publisher.notify()
    began = time.monotonic()
    await publisher.stop(flush_timeout=0.3)
    assert time.monotonic() - began < 2.0
    assert task.done()
    assert store.depth() == 1  # kept for the next start


async def test_stop_with_a_silent_broker_is_bounded(store: Store) -> None:
    """A server that accepts TCP and never answers CONNACK: stop() still returns."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        publisher = make_publisher(f"mqtt://127.0.0.1:{port}", store)
        task = asyncio.create_task(publisher.run())
        append(store, event(1))
        began = time.monotonic()
        await publisher.stop(flush_timeout=0.2)
        assert time.monotonic() - began < 4.0
        assert task.done()
        assert store.depth() == 1
        for writer in accepted:
            writer.close()


async def test_notify_publishes_at_once(
    mosquitto: MosquittoBroker, store: Store, changes: Changes
) -> None:
    """Each append is PUBACKed well before the 1 s idle poll would have found it."""
    publisher = make_publisher(mosquitto.url, store, changes)
    async with running(publisher):
        await changes.until(lambda: publisher.connected)
        for n in range(20):
            append(store, event(n))
            publisher.notify()
            await changes.until(lambda: store.depth() == 0, timeout=0.5)
        assert publisher.published_total == 20


async def test_notify_writes_the_publish_before_it_returns_and_leaves_no_writer(
    mosquitto: MosquittoBroker, store: Store, changes: Changes
) -> None:
    """The alert is on the wire when `notify()` returns (no loop turns in between), and
    no socket writer is left registered to wake the loop on every turn afterwards."""
    publisher = make_publisher(mosquitto.url, store, changes)
    loop = asyncio.get_running_loop()
    async with running(publisher):
        await changes.until(lambda: publisher.connected)
        append(store, event(1))
        publisher.notify()
        await changes.until(lambda: store.depth() == 0)  # the drain is running now
        assert publisher._active is not None
        paho = publisher._active.link.paho
        append(store, event(2))
        publisher.notify()
        assert not paho.want_write()  # both PUBLISHes written to the socket already
        await changes.until(lambda: store.depth() == 0)
        for _ in range(3):  # the queued writer registration, then its undoing, run
            await asyncio.sleep(0)
        sock = paho.socket()
        assert sock is not None
        assert not loop.remove_writer(sock.fileno())
        assert publisher.published_total == 2


async def test_delivery_is_timed_from_the_venue_answer_to_the_puback(
    mosquitto: MosquittoBroker, store: Store, changes: Changes
) -> None:
    """`on_delivery` gets answer-to-PUBACK seconds for records with `answered_at` only."""
    delivered: list[float] = []
    publisher = make_publisher(mosquitto.url, store, changes, on_delivery=delivered.append)
    async with running(publisher):
        await changes.until(lambda: publisher.connected)
        answered = time.time() - 0.25  # the venue answered a quarter of a second ago
        caused = to_entry(event(1), prefix=PREFIX, instance=INSTANCE, answered_at=answered)
        uncaused = to_entry(event(2), prefix=PREFIX, instance=INSTANCE)  # e.g. staleness
        store.append([caused, uncaused])
        publisher.notify()
        await changes.until(lambda: store.depth() == 0)
        assert publisher.published_total == 2
        [seconds] = delivered
        assert 0.25 <= seconds < 0.25 + 5


async def test_a_failing_delivery_callback_does_not_stop_publishing(
    mosquitto: MosquittoBroker, store: Store, changes: Changes
) -> None:
    def broken(seconds: float) -> None:
        raise RuntimeError("a bug in the metrics")

    publisher = make_publisher(mosquitto.url, store, changes, on_delivery=broken)
    async with running(publisher):
        await changes.until(lambda: publisher.connected)
        for n in range(3):
            answered = time.time()
            store.append(
                [to_entry(event(n), prefix=PREFIX, instance=INSTANCE, answered_at=answered)]
            )
            publisher.notify()
        await changes.until(lambda: publisher.published_total == 3)
        assert store.depth() == 0


def test_a_failing_on_change_callback_is_logged_not_raised() -> None:
    """`call_on_change`, which the publisher and the PagerDuty bridge share."""

    def broken() -> None:
        raise RuntimeError("a bug in the metrics")

    logger = structlog.get_logger("riskmon.mqtt")
    with structlog.testing.capture_logs() as logs:
        call_on_change(None, logger, "mqtt")
        call_on_change(broken, logger, "pagerduty")
    assert [entry["event"] for entry in logs] == ["pagerduty: the on_change callback failed"]
    assert logs[0]["log_level"] == "error"


# -- protocol, TLS, credentials, refusals ---------------------------------------------------------


async def test_falls_back_to_mqtt_311_when_the_broker_refuses_5(
    mosquitto: MosquittoBroker,
    mqtt_collector: Callable[..., MqttCollector],
    store: Store,
    changes: Changes,
) -> None:
    """Mosquitto cannot turn MQTT 5 off, so a proxy plays a 3.1.1-only broker: it answers
    an MQTT 5 CONNECT with 3.1.1's "unacceptable protocol version" and passes the rest."""
    levels: list[int] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(1)
        length, shift, raw = 0, 0, b""
        while True:
            byte = await reader.readexactly(1)
            raw += byte
            length |= (byte[0] & 0x7F) << shift
            shift += 7
            if not byte[0] & 0x80:
                break
        connect = await reader.readexactly(length)
        levels.append(connect[6])  # after the protocol name "\0\4MQTT"
        if connect[6] == 5:
            writer.write(b"\x20\x02\x00\x01")  # CONNACK, 0x01: unacceptable protocol version
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(mosquitto.host, mosquitto.port)
        up_writer.write(header + raw + connect)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    proxy = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    publisher = make_publisher(f"mqtt://127.0.0.1:{port}", store, changes)
    async with proxy, mqtt_collector([f"{PREFIX}/#"]) as sub, running(publisher):
        await changes.until(lambda: publisher.connected)
        assert levels[:2] == [5, 4]
        assert publisher.protocol_version == 4
        [eid] = append(store, event(1))
        publisher.notify()
        await sub.wait_for(lambda ms: any(m.topic.matches(f"{PREFIX}/events/#") for m in ms))
        assert body(sub.on(f"{PREFIX}/events/#")[0])["event_id"] == eid
        await changes.until(lambda: store.depth() == 0)
        await sub.wait_for(lambda ms: statuses(ms) == ["online"])


def _certificates(folder: Path, server_name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for `server_name` (a DNS name only): ca, cert, key."""
    pki = make_pki(folder, server_names=(server_name,), server_ip=False)
    return pki.ca, pki.server_cert, pki.server_key


async def test_tls(
    mosquitto_factory: Callable[..., MosquittoBroker], tmp_path: Path, changes: Changes
) -> None:
    ca, cert, key = _certificates(tmp_path / "tls", "broker.test")
    broker = mosquitto_factory(extra=f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    url = f"mqtts://127.0.0.1:{broker.port}"  # not the certificate's name
    cases: list[tuple[TlsConfig | None, str | None]] = [
        (None, "certificate verify failed"),  # the system's CAs do not know ours
        (TlsConfig(ca_file=ca), "IP address mismatch"),
        (TlsConfig(ca_file=ca, insecure=True), None),  # insecure: no host name check
    ]
    assert ipaddress.ip_address(broker.host)  # (the url names the broker by address)
    for index, (tls, error) in enumerate(cases):
        with Store(tmp_path / f"state-{index}" / "riskmon.db") as store:
            publisher = make_publisher(url, store, changes, tls=tls)
            append(store, event(1))
            async with running(publisher):
                if error is None:
                    await changes.until(lambda p=publisher, s=store: p.connected and not s.depth())
                    assert publisher.published_total == 1
                else:
                    await changes.until(lambda p=publisher: p.last_error is not None)
                    assert error in str(publisher.last_error)
                    assert not publisher.connected


async def test_username_and_password(
    mosquitto_factory: Callable[..., MosquittoBroker], tmp_path: Path, changes: Changes
) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    passwords = tmp_path / "passwords"
    command = [tool, "-b", "-c", str(passwords), "ops", "s3cret-pw"]
    await asyncio.to_thread(subprocess.run, command, check=True)
    broker = mosquitto_factory(allow_anonymous=False, extra=f"password_file {passwords}\n")
    secret_file = tmp_path / "mqtt-password"
    secret_file.write_text("wrong-pw\n")
    password = Secret.file("mqtt password", secret_file)
    with (
        Store(tmp_path / "state" / "riskmon.db") as store,
        structlog.testing.capture_logs() as logs,
    ):
        publisher = make_publisher(broker.url, store, changes, username="ops", password=password)
        async with running(publisher):
            await changes.until(lambda: publisher.last_error is not None)
            assert "authori" in str(publisher.last_error).lower()
            assert not publisher.connected
            secret_file.write_text("s3cret-pw\n")  # rotated: read again at the next connect
            await changes.until(lambda: publisher.connected)
    text = repr(logs) + str(publisher.last_error)
    assert "wrong-pw" not in text
    assert "s3cret-pw" not in text


async def test_a_refused_publish_is_kept_and_retried(
    mosquitto_factory: Callable[..., MosquittoBroker], tmp_path: Path, changes: Changes
) -> None:
    """An ACL denies the events topic: MQTT 5 PUBACK 0x87. The record stays."""
    acl = tmp_path / "acl"
    acl.write_text(
        f"topic readwrite {PREFIX}/status/#\n"
        f"topic readwrite {PREFIX}/heartbeat/#\n"
        f"topic readwrite {PREFIX}/alerts/#\n"
    )
    broker = mosquitto_factory(extra=f"acl_file {acl}\n")
    with Store(tmp_path / "state" / "riskmon.db") as store:
        publisher = make_publisher(broker.url, store, changes)
        append(store, event(1))
        async with running(publisher):
            await changes.until(lambda: "Not authorized" in str(publisher.last_error))
            assert store.depth() == 1
            assert publisher.published_total == 0
            assert "riskmon/events/critical/cs/acct-1" in str(publisher.last_error)


def test_bad_urls() -> None:
    with Store(Path("/tmp") / f"riskmon-test-{time.monotonic_ns()}" / "r.db") as store:
        with pytest.raises(ValueError, match="embedded"):
            make_publisher("embedded", store)
        with pytest.raises(ValueError, match="expected mqtt://"):
            make_publisher("http://broker:1883", store)


async def test_a_refused_status_does_not_hold_events_back(
    mosquitto_factory: Callable[..., MosquittoBroker], tmp_path: Path, changes: Changes
) -> None:
    acl = tmp_path / "acl"
    acl.write_text(f"topic readwrite {PREFIX}/events/#\ntopic readwrite {PREFIX}/alerts/#\n")
    broker = mosquitto_factory(extra=f"acl_file {acl}\n")
    with Store(tmp_path / "state" / "riskmon.db") as store:
        publisher = make_publisher(broker.url, store, changes)
        append(store, event(1))
        async with running(publisher):
            await changes.until(lambda: publisher.connected and store.depth() == 0)
            assert "Not authorized" in str(publisher.last_error)
            assert publisher.published_total == 1
