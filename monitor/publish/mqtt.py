"""`MqttPublisher`: drains the outbox to an MQTT broker, at least once, in order.

The daemon runs `run()` as a task; it connects, stays connected (reconnecting with
exponential backoff and jitter, 0.2 s doubling to 30 s) and never blocks its caller:
polling and evaluation only ever touch the `Store`, so a broker outage costs them
nothing. On every connect it publishes the retained status `online`; its last will is
the retained status `offline`, which the broker publishes when the connection dies
without a clean DISCONNECT (crash, SIGKILL, network loss, a cancelled `run()`).

Delivery. Records are read from the outbox in `seq` order. For each, the event is
published (QoS 1, not retained), then the retained alert state (QoS 1; an empty payload
clears it on resolve). A window of records is in flight at once (64 publishes by
default, fewer when the broker's MQTT 5 Receive Maximum is lower: Mosquitto's default
of 20 allows 9 records), all on one connection, so the broker receives them, and
acknowledges them, in order. A record is acknowledged in the store (deleted) only once
both of its PUBACKs arrived. When the connection drops, whatever is not acknowledged is
sent again, in `seq` order, after the reconnect: at least once, in order per alert;
consumers de-duplicate by `event_id`.

Refusals. A PUBACK carrying an MQTT 5 failure reason code (e.g. 0x87 Not authorized, an
ACL problem) is not a delivery: the refusal is logged with the topic and reason, kept in
`last_error` and reported to `on_refused`; the connection stays (no will, no reconnect
churn), the records sent behind it are delivered, and the refused record is sent again,
in its place, after a back-off (0.2 s doubling, as reconnects). A record refused
`max_refusals` times in a row is moved to the outbox's dead letters, so that the
records behind it flow, and the retained status and the heartbeat say how many wait
there. Nothing is dropped: `requeued()` after `Store.requeue_dead_letters` sends them
again. MQTT 3.1.1 has no refusal: Mosquitto acknowledges a refused 3.1.1 publish and
drops it (nothing riskmon can see); other brokers hang up, and a connection lost with
a record in flight counts as a refusal of the oldest one (reason `disconnected`).

Store failures. A record published but not deleted from the outbox (the disk refused
`acknowledge`) is reported to `on_store_error` and deleted at the next acknowledgement
that works; until then a reconnect publishes it again (at least once).

Latency. `notify()` (called by the daemon after `Store.append`) wakes the drain loop at
once; without it new records are still picked up within a second. For a record whose
event a venue answer caused (`answered_at`), `on_delivery` learns how long it took from
that answer to the broker's PUBACKs: the daemon's `riskmon_event_delivery_seconds`.

Heartbeats. Every `heartbeat_interval` seconds, `heartbeat()`'s dict plus `instance`,
`at`, `outbox_depth` and `dead_letters` (with `alerts: ["EventsUndeliverable"]` while
there are some) go to `{prefix}/heartbeat/{instance}` at QoS 0.

Protocol. MQTT 5 first, with content type `application/json` (and the UTF-8 payload
format indicator) on JSON payloads and a message expiry of three heartbeat intervals on
heartbeats. A broker that refuses MQTT 5 in its CONNACK (a 3.1.1 broker answers
"unacceptable protocol version") is connected to again at once with MQTT 3.1.1, without
properties, for the rest of the publisher's life.

TLS for `mqtts://` (`tls.ca_file`, else the system's CAs; `cert_file`/`key_file` for a
client certificate; `insecure` skips the host name check only, as mosquitto_pub's
`--insecure`). The password is read from its Secret at every connect and never logged.

`stop()` flushes what it can within its timeout, publishes the retained `offline`
status, disconnects cleanly (so the broker discards the will) and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from monitor import __version__
from monitor.config.model import MqttConfig
from monitor.config.secret import SecretUnavailable
from monitor.engine.builtin import EVENTS_UNDELIVERABLE
from monitor.infra.backoff import Backoff
from monitor.infra.mqtt_link import (
    Endpoint,
    Link,
    MqttVersion,
    call_on_change,
    describe_error,
    open_link,
    ssl_context,
)
from monitor.infra.reconnect import RECONNECT, reconnect_forever, wait_or_stop
from monitor.publish.events import (
    encode,
    heartbeat_topic,
    rfc3339,
    status_payload,
    status_topic,
)
from monitor.store import Store, StoreError

__all__ = ["MqttPublisher", "PublishRefused"]

log = structlog.get_logger("riskmon.mqtt")

JSON: Final = "application/json"
_IDLE_POLL: Final = 1.0  # seconds between outbox checks when nobody calls notify()
_GOODBYE_TIMEOUT: Final = 2.0  # for the offline status' PUBACK and the DISCONNECT
_CONNECT_TIMEOUT: Final = 10.0  # for the CONNACK


class PublishRefused(Exception):
    """The broker answered a PUBLISH with an MQTT 5 failure reason code."""

    def __init__(self, topic: str, code: ReasonCode) -> None:
        self.topic = topic
        self.reason = code.getName()
        super().__init__(f"broker refused {topic}: {self.reason} (0x{code.value:02x})")


#: Failures of the network, the broker, TLS or a secret file: logged without a traceback.
_EXPECTED: Final = (aiomqtt.MqttError, OSError, PublishRefused, TimeoutError, SecretUnavailable)


@dataclass(slots=True)
class _Drain:
    """The outbox's way to the broker on one connection: what is in flight, in order."""

    link: Link
    window: int  # the most records in flight
    inflight: deque[_InFlight]
    cursor: int = 0  # the last seq handed to the broker on this connection
    paused_until: float = 0.0  # loop time: a refused record waits out its back-off
    resume_after: int = 0  # the cursor once the back-off is over (before the refused)


@dataclass(slots=True)
class _InFlight:
    seq: int
    sent_at: float
    topics: tuple[str, ...]
    answered_at: float | None  # the record's: when the venue answer behind it arrived
    acks: tuple[asyncio.Future[ReasonCode | None], ...] = ()
    acked_at: float | None = None  # when the last of its PUBACKs was read
    event: bool = True  # False: a suppressed alert's record, its retained message only

    def stamp(self) -> None:
        self.acked_at = time.time()

    def done(self) -> bool:
        return all(ack.done() for ack in self.acks)

    def check(self) -> None:
        """Raise PublishRefused if the broker refused one of the messages."""
        for ack, topic in zip(self.acks, self.topics, strict=True):
            code = ack.result()
            if code is not None:
                raise PublishRefused(topic, code)


class MqttPublisher:
    """Publishes the outbox of `store` to the broker of `config` (module docstring).

    `heartbeat` returns the daemon's figures for the heartbeat message; `on_change` is
    called (on the event loop) when `connected`, `published_total`, `last_error` or the
    outbox depth changed; `on_delivery` with the seconds from the venue answer behind a
    record (`answered_at`) to its PUBACKs, for each acknowledged record that has one.
    `window` is the most publishes in flight (two per record); `reconnect_min` and
    `reconnect_max` bound the backoff; `ack_timeout` is how long a PUBACK may take before
    the connection is considered dead. `max_refusals` is how many refusals in a row move
    a record to the dead letters; `on_refused` is called with the reason of each refusal
    (`not_authorized`). `on_store_error` is called with ("acknowledge", the error) when
    the outbox could not delete published records, and with ("acknowledge", None) when
    it could again.
    """

    def __init__(
        self,
        config: MqttConfig,
        store: Store,
        *,
        instance: str,
        heartbeat: Callable[[], dict[str, Any]],
        heartbeat_interval: float = 10.0,
        on_change: Callable[[], None] | None = None,
        on_delivery: Callable[[float], None] | None = None,
        started_at: float | None = None,
        window: int = 64,
        keepalive: int = 15,
        reconnect_min: float = RECONNECT.initial,
        reconnect_max: float = RECONNECT.max,
        ack_timeout: float = 30.0,
        max_refusals: int = 5,
        on_refused: Callable[[str], None] | None = None,
        on_store_error: Callable[[str, StoreError | None], None] | None = None,
    ) -> None:
        self._endpoint = Endpoint.parse(config.url)
        prefix = config.topic_prefix
        if not prefix or "+" in prefix or "#" in prefix:
            raise ValueError("mqtt topic_prefix must be non-empty and hold no + or #")
        if window < 2:
            raise ValueError("window must be at least 2 (one record)")
        if heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be positive")
        if max_refusals < 1:
            raise ValueError("max_refusals must be at least 1")
        self._config = config
        self._store = store
        self.instance = instance
        self._heartbeat = heartbeat
        self._heartbeat_interval = heartbeat_interval
        self._on_change = on_change
        self._on_delivery = on_delivery
        self._started_at = time.time() if started_at is None else started_at
        self._window = window
        self._keepalive = keepalive
        self._reconnect = Backoff(reconnect_min, reconnect_max)  # refusals back off so too
        self._ack_timeout = ack_timeout
        self._max_refusals = max_refusals
        self._on_refused = on_refused
        self._on_store_error = on_store_error
        self._refusals: dict[int, int] = {}  # seq -> refusals in a row
        self._unacknowledged: list[int] = []  # published, but the store could not delete them
        self._rewind = False  # dead letters came back: read the outbox from its start
        self._lost: _InFlight | None = None  # the oldest record in flight when a session ended
        self._client_id = config.client_id or f"riskmon-{instance}"
        self.status_topic = status_topic(prefix, instance)
        self.heartbeat_topic = heartbeat_topic(prefix, instance)
        self._version = MqttVersion()

        self.published_total = 0
        self.last_error: str | None = None
        self._connected = False
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._deadline = 0.0  # loop time by which stop() wants to be done
        self._task: asyncio.Task[None] | None = None
        self._active: _Drain | None = None  # while connected and draining

    # -- what the daemon reads --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def protocol_version(self) -> int:
        """5 (MQTT 5) or 4 (MQTT 3.1.1: the broker refused 5)."""
        return self._version.number

    def notify(self) -> None:
        """New records are in the outbox: publish them now. Call on the event loop.

        They are handed to the broker right here, when connected and the window has
        room, not a few loop turns later by the drain task (bench/latency.py: under
        load each turn is up to a millisecond). A failure is left to the drain task,
        which meets it again and reconnects."""
        active = self._active
        if active is not None and not self._stopping.is_set():
            with contextlib.suppress(Exception):
                self._fill(active)
        self._wake.set()

    def requeued(self) -> None:
        """Dead letters went back into the outbox (`Store.requeue_dead_letters`), before
        records already handed to the broker: read the outbox from its start again.
        Call on the event loop."""
        self._refusals.clear()
        self._rewind = True
        self._wake.set()

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and publish until `stop()`; never raises but CancelledError."""
        if self._task is not None:
            raise RuntimeError("MqttPublisher.run() is already running")
        self._task = asyncio.current_task()
        try:
            await self._run()
        finally:
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()

        def keep_trying() -> bool:  # a stop still flushes the outbox until its deadline
            stopping = self._stopping.is_set()
            return not stopping or (self._store.depth() > 0 and loop.time() < self._deadline)

        async def attempt() -> None:
            failed = False
            try:
                await self._session()  # only stop() ends a session without an error
            except Exception:
                failed = True  # `_failed` says "lost" or "failed" by `connected`
                raise
            finally:
                if not failed:
                    self._set_connected(False)

        def failed(exc: Exception, delay: float) -> None:
            self._failed(exc, delay)
            self._hung_up(exc)
            self._set_connected(False)

        async def pause(delay: float) -> None:
            if self._stopping.is_set():
                await asyncio.sleep(min(delay, max(0.0, self._deadline - loop.time())))
            else:
                await wait_or_stop(self._stopping, delay)

        await reconnect_forever(
            attempt,
            backoff=self._reconnect,
            stopping=self._stopping,
            failed=failed,
            keep_trying=keep_trying,
            pause=pause,
        )

    async def stop(self, flush_timeout: float = 10.0) -> None:
        """Publish what can be published within `flush_timeout` seconds, publish the
        retained `offline` status, disconnect cleanly; then `run()` returns. If that has
        not happened two seconds after the timeout (a broker that does not answer),
        `run()` is cancelled: the connection is dropped and the broker, if it is there
        at all, publishes the will."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + flush_timeout
        self._stopping.set()
        self._wake.set()
        if self._task is None:
            await asyncio.sleep(0)  # a run() task created just before starts now
        task = self._task
        if task is None or task.done():
            return
        done, _ = await asyncio.wait({task}, timeout=flush_timeout + _GOODBYE_TIMEOUT)
        if not done:
            log.warning("mqtt publisher did not stop in time; dropping the connection")
            task.cancel()
            await asyncio.wait({task})

    # -- one connection ---------------------------------------------------------------------

    async def _session(self) -> None:
        link = await self._connect()
        graceful = False
        try:
            self.last_error = None
            self._set_connected(True)
            log.info(
                "mqtt connected",
                host=self._endpoint.host,
                port=self._endpoint.port,
                tls=self._endpoint.tls,
                protocol=self.protocol_version,
                client_id=self._client_id,
                outbox=self._store.depth(),
            )
            await self._serve(link)
            graceful = True
        finally:
            if not graceful:
                link.abort()
        await self._goodbye(link)

    async def _connect(self) -> Link:
        return await open_link(self._new_link, self._version)

    async def _new_link(self) -> Link:
        config = self._config
        password = None
        if config.password is not None:
            password = config.password.get(fresh=True)  # SecretUnavailable names the file only
        tls_context = None
        if self._endpoint.tls:
            tls_context = await asyncio.to_thread(ssl_context, config.tls)
        v5 = self._version.v5
        will = aiomqtt.Will(
            self.status_topic,
            encode(status_payload("offline", instance=self.instance, at=time.time())),
            qos=1,
            retain=True,
            properties=_json_properties(PacketTypes.WILLMESSAGE) if v5 else None,
        )
        return Link(
            self._endpoint.host,
            self._endpoint.port,
            username=config.username,
            password=password,
            identifier=self._client_id,
            protocol=self._version.protocol,
            will=will,
            clean_session=None if v5 else True,
            keepalive=self._keepalive,
            timeout=_CONNECT_TIMEOUT,
            max_inflight_messages=self._window + 2,
            tls_context=tls_context,
        )

    async def _serve(self, link: Link) -> None:
        """Online status, then heartbeats and the drain, until stopped or broken."""
        try:
            async with asyncio.TaskGroup() as tasks:
                watcher = tasks.create_task(_watch(link), name="mqtt-watch")
                try:
                    await self._confirm(link, self.status_topic, self._online(), retain=True)
                except PublishRefused as exc:  # events matter more than the status
                    self.last_error = str(exc)
                    log.error("mqtt: the broker refused the online status", error=str(exc))
                beats = tasks.create_task(self._heartbeats(link), name="mqtt-heartbeat")
                await self._drain(link)
                beats.cancel()
                watcher.cancel()
        except BaseExceptionGroup as group:
            first = _first(group)
            raise first from first.__cause__  # (keeps the reason, drops the group)

    def _online(self) -> bytes:
        return encode(
            status_payload(
                "online",
                instance=self.instance,
                at=time.time(),
                version=__version__,
                started_at=self._started_at,
                dead_letters=self._store.dead_letters(),
            )
        )

    async def _confirm(self, link: Link, topic: str, payload: bytes, *, retain: bool) -> None:
        ack = link.send(topic, payload, qos=1, retain=retain, properties=self._properties(payload))
        async with asyncio.timeout(self._ack_timeout):
            code = await ack
        if code is not None:
            raise PublishRefused(topic, code)

    async def _goodbye(self, link: Link) -> None:
        """After a stop: the retained offline status, then a clean DISCONNECT."""
        offline = encode(status_payload("offline", instance=self.instance, at=time.time()))
        try:
            await asyncio.wait_for(
                self._confirm(link, self.status_topic, offline, retain=True), _GOODBYE_TIMEOUT
            )
            link.timeout = _GOODBYE_TIMEOUT
            await link.__aexit__(None, None, None)
            log.info("mqtt disconnected", outbox=self._store.depth())
        except (aiomqtt.MqttError, PublishRefused, TimeoutError) as exc:
            link.abort()  # the will says offline instead
            log.warning("mqtt: could not say goodbye", error=describe_error(exc))
        except BaseException:
            link.abort()
            raise

    async def _drain(self, link: Link) -> None:
        """Publish the outbox in seq order; return once stopped and drained (or late)."""
        active = _Drain(link, max(1, min(self._window, link.receive_maximum - 1) // 2), deque())
        self._active = active
        self._lost = None
        try:
            await self._drain_with(active)
        finally:
            self._active = None
            self._lost = active.inflight[0] if active.inflight else None

    def _fill(self, active: _Drain) -> None:
        """Hand the broker the outbox's next records, as many as the window has room for."""
        inflight = active.inflight
        room = active.window - len(inflight)
        if room <= 0 or active.paused_until or self._store.depth() <= len(inflight):
            return
        link = active.link
        now = asyncio.get_running_loop().time()
        wake = self._wake.set
        sent = False
        for record in self._store.pending(limit=room, after=active.cursor):
            retained = bool(record.alert_topic)  # not for a dead letter whose alert moved on
            # no event message for a suppressed alert's record: its retained message only
            announced = bool(record.event_topic)
            topics = tuple(t for t in (record.event_topic, record.alert_topic) if t)
            flight = _InFlight(record.seq, now, topics, record.answered_at, event=announced)
            if announced:
                flight.acks += (
                    link.send(
                        record.event_topic,
                        record.event_payload,
                        qos=1,
                        properties=self._properties(record.event_payload),
                        on_ack=flight.stamp,
                    ),
                )
            if retained:
                flight.acks += (
                    link.send(
                        record.alert_topic,
                        record.alert_payload,
                        qos=1,
                        retain=True,
                        properties=self._properties(record.alert_payload),
                        on_ack=flight.stamp,
                    ),
                )
            for ack in flight.acks:
                ack.add_done_callback(lambda _: wake())
            inflight.append(flight)
            active.cursor = record.seq
            sent = True
        if sent:
            link.flush()

    async def _drain_with(self, active: _Drain) -> None:
        loop = asyncio.get_running_loop()
        store = self._store
        inflight = active.inflight
        wake = self._wake
        while True:
            wake.clear()
            if not inflight:
                if active.paused_until and loop.time() >= active.paused_until:
                    active.paused_until = 0.0  # the refused record goes again, in its place
                    active.cursor = min(active.cursor, active.resume_after)
                if self._rewind:
                    self._rewind = False
                    active.cursor = 0
                    self._status(active.link)
            self._fill(active)
            acked: list[_InFlight] = []
            while inflight and inflight[0].done():
                head = inflight.popleft()
                try:
                    head.check()
                except PublishRefused as exc:
                    # Not a delivery. The connection stays (no will, no churn); what was
                    # sent behind it is delivered, and the refused record is sent again
                    # after a back-off, unless it became a dead letter.
                    self._refused(active, head.seq, exc)
                    continue
                self._refusals.pop(head.seq, None)
                acked.append(head)
            if acked:
                self._acknowledge(acked)
                continue
            now = loop.time()
            if self._stopping.is_set():
                if not inflight and store.depth() == 0:
                    return
                if now >= self._deadline:
                    log.warning(
                        "mqtt: stop timeout reached; events left in the outbox",
                        outbox=store.depth(),
                    )
                    return
            if inflight and now - inflight[0].sent_at > self._ack_timeout:
                raise aiomqtt.MqttError(f"no PUBACK within {self._ack_timeout:g} s")
            timeout = _IDLE_POLL
            if self._stopping.is_set():
                timeout = min(timeout, self._deadline - now)
            if active.paused_until:
                timeout = min(timeout, active.paused_until - now)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, timeout)):
                    await wake.wait()

    def _refused(self, active: _Drain, seq: int, exc: PublishRefused) -> None:
        """The broker refused the record `seq`: a dead letter after `max_refusals` in a
        row, else sent again after a back-off."""
        self.last_error = str(exc)
        refusals = self._refusal(seq, exc.topic, exc.reason, str(exc))
        if refusals is not None:
            delay = self._reconnect.delay(refusals - 1)
            log.error(
                "mqtt: the broker refused a publish; sending it again",
                topic=exc.topic,
                reason=exc.reason,
                refusals=refusals,
                dead_letter_after=self._max_refusals,
                retry_in=round(delay, 2),
            )
            until = asyncio.get_running_loop().time() + delay
            active.resume_after = (
                seq - 1 if not active.paused_until else min(active.resume_after, seq - 1)
            )
            active.paused_until = max(active.paused_until, until)
            self._changed()
            return
        self._status(active.link)

    def _hung_up(self, exc: Exception) -> None:
        """MQTT 3.1.1 has no way to refuse a publish but hanging up: a connection lost
        with a record in flight counts as a refusal of the oldest one."""
        lost, self._lost = self._lost, None
        if lost is None or self._version.v5 or not isinstance(exc, aiomqtt.MqttError):
            return
        topic = lost.topics[0]
        text = f"broker disconnected while {topic} was in flight (MQTT 3.1.1)"
        refusals = self._refusal(lost.seq, topic, "Disconnected", text)
        if refusals is not None:
            log.error(
                "mqtt: the broker hung up with a publish in flight (MQTT 3.1.1's refusal);"
                " sending it again",
                topic=topic,
                refusals=refusals,
                dead_letter_after=self._max_refusals,
            )

    def _refusal(self, seq: int, topic: str, reason: str, text: str) -> int | None:
        """Count a refusal of the record `seq`; the refusals in a row, or None when it
        became a dead letter (`max_refusals`)."""
        refusals = self._refusals[seq] = self._refusals.get(seq, 0) + 1
        if self._on_refused is not None:
            try:
                self._on_refused(reason.lower().replace(" ", "_"))
            except Exception:
                log.exception("mqtt: the on_refused callback failed")
        if refusals >= self._max_refusals and self._dead_letter(seq, topic, reason, text):
            return None
        return refusals

    def _dead_letter(self, seq: int, topic: str, reason: str, text: str) -> bool:
        """Move the record `seq` to the dead letters; False when the store cannot."""
        try:
            self._store.dead_letter(seq, text)
        except StoreError as error:  # the disk: it stays in the outbox and is tried again
            log.error("mqtt: could not move a refused record to the dead letters", error=str(error))
            return False
        self._refusals.pop(seq, None)
        log.error(
            "mqtt: the broker refused a publish again and again; moved to the dead letters"
            " (re-queued at the next start or SIGHUP), the events behind it go on",
            topic=topic,
            reason=reason,
            refusals=self._max_refusals,
            dead_letters=self._store.dead_letters(),
        )
        self._changed()
        return True

    def _status(self, link: Link) -> None:
        """The retained online status again (the dead letters changed); not awaited."""
        with contextlib.suppress(aiomqtt.MqttError):
            link.send(
                self.status_topic,
                self._online(),
                qos=1,
                retain=True,
                properties=self._properties(b"{}"),
            )

    def _acknowledge(self, records: list[_InFlight]) -> None:
        if self._on_delivery is not None:
            now = time.time()
            for record in records:
                if record.answered_at is not None and record.event:
                    acked_at = now if record.acked_at is None else record.acked_at
                    self._delivered(max(0.0, acked_at - record.answered_at))
        self.published_total += sum(1 for record in records if record.event)
        seqs = self._unacknowledged + [record.seq for record in records]
        try:
            self._store.acknowledge(seqs)
        except StoreError as exc:  # published all the same; deleted when the disk lets us
            self._unacknowledged = seqs
            self._store_error(exc)
        else:
            if self._unacknowledged:
                self._unacknowledged = []
                self._store_error(None)
        self._changed()

    def _store_error(self, exc: StoreError | None) -> None:
        if self._on_store_error is not None:
            try:
                self._on_store_error("acknowledge", exc)
            except Exception:
                log.exception("mqtt: the on_store_error callback failed")

    async def _heartbeats(self, link: Link) -> None:
        loop = asyncio.get_running_loop()
        properties = None
        if self._version.v5:
            properties = _json_properties(PacketTypes.PUBLISH)
            properties.MessageExpiryInterval = max(1, round(3 * self._heartbeat_interval))
        due = loop.time()
        while True:
            link.send(self.heartbeat_topic, self._heartbeat_payload(), qos=0, properties=properties)
            due = max(due + self._heartbeat_interval, loop.time())
            await asyncio.sleep(due - loop.time())

    def _heartbeat_payload(self) -> bytes:
        try:
            figures = dict(self._heartbeat())
        except Exception:  # a broken callback must not cost the connection
            log.exception("mqtt: the heartbeat callback failed")
            figures = {}
        body = {"instance": self.instance, "at": rfc3339(time.time()), **figures}
        body["outbox_depth"] = self._store.depth()
        body["dead_letters"] = dead_letters = self._store.dead_letters()
        if dead_letters:  # as the retained status says it
            body["alerts"] = [EVENTS_UNDELIVERABLE]
        return json.dumps(body, separators=(",", ":"), default=str).encode("utf-8")

    # -- small things -----------------------------------------------------------------------

    def _properties(self, payload: bytes) -> Properties | None:
        """The properties of a JSON publish: none for an empty payload or MQTT 3.1.1."""
        if not payload or not self._version.v5:
            return None
        return _PUBLISH_JSON

    def _failed(self, exc: Exception, retry_in: float) -> None:
        message = describe_error(exc)
        self.last_error = message
        fields = {
            "host": self._endpoint.host,
            "port": self._endpoint.port,
            "error": message,
            "outbox": self._store.depth(),
            "retry_in": round(retry_in, 2),
        }
        if isinstance(exc, _EXPECTED):
            what = "mqtt connection lost" if self._connected else "mqtt connection failed"
            if isinstance(exc, PublishRefused):
                what = "mqtt: reconnecting to publish the refused record again"
            log.warning(what, **fields)
        else:  # a bug: keep trying, loudly
            log.error("mqtt publisher error", exc_info=exc, **fields)
        self._changed()

    def _set_connected(self, connected: bool) -> None:
        if connected != self._connected:
            self._connected = connected
            self._changed()

    def _delivered(self, seconds: float) -> None:
        assert self._on_delivery is not None
        try:
            self._on_delivery(seconds)
        except Exception:
            log.exception("mqtt: the on_delivery callback failed")

    def _changed(self) -> None:
        call_on_change(self._on_change, log, "mqtt")


async def _watch(link: Link) -> None:
    """Return never; raise MqttError when the connection is lost."""
    try:
        async for _message in link.messages:  # nothing is subscribed: this only waits
            pass
    except aiomqtt.MqttError as exc:
        cause = exc.__cause__
        raise aiomqtt.MqttError("connection lost") from cause
    raise aiomqtt.MqttError("connection lost")


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that broke a TaskGroup (a disconnect rather than its echoes)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return leaves[0] if leaves else group


def _json_properties(packet_type: int) -> Properties:
    properties = Properties(packet_type)  # type: ignore[no-untyped-call]
    properties.ContentType = JSON
    properties.PayloadFormatIndicator = 1
    return properties


_PUBLISH_JSON: Final = _json_properties(PacketTypes.PUBLISH)  # read-only once built
