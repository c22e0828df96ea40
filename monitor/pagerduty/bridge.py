"""`PagerDutyBridge`: alert events from MQTT to PagerDuty's Events API v2.

Receiving. The bridge subscribes to `{prefix}/events/#` at QoS 1 with a persistent
session under its `client_id` (MQTT 5 with a Session Expiry Interval of
`session_expiry` and Clean Start off; on a broker that refuses MQTT 5, 3.1.1 with
`clean_session` false), so the broker queues the events published while the bridge is
away and delivers them when it is back. Messages are acknowledged by hand: the PUBACK
of an event goes out only after the event is committed to the bridge's SQLite store
(`BridgeStore`) as pending, so a crash at any point either leaves the message with the
broker (re-delivered on reconnect) or in the store (forwarded on start). A payload that
is not a valid event is logged with its topic and acknowledged (skipped); the bridge
never stops on one.

De-duplication. The store remembers every `event_id` for `dedup_retention` (default 7
days); an event whose id it has seen (a re-delivery, a re-publish from the daemon's
outbox) is acknowledged and not forwarded again.

Routing. The first route whose `match` takes the event (severity, labels) gives the
routing key; an event no route takes is logged and remembered as unrouted.

Forwarding. Each routing key (a key file or environment variable: `Route.key_id`) has
its own queue, worker and token bucket, so a key being retried or rate limited never
holds back another. A worker forwards its events one at a time, in the order received
(a trigger and its resolve stay in order), through `EventsApi.deliver`: the event's
`pagerduty` body plus `routing_key`, retried on 429, 5xx and network errors, dropped on
400 with an error log naming the event_id, the alertname and PagerDuty's message. Only
then is the event marked sent (or dropped) in the store. A stop or crash in between
sends it again at the next start: PagerDuty de-duplicates that by `dedup_key`.

Routing keys never appear in logs or errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Final

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from monitor import __version__
from monitor.config.secret import SecretUnavailable
from monitor.infra.backoff import Backoff
from monitor.infra.http_post import JsonPoster
from monitor.infra.mqtt_link import (
    Endpoint,
    Link,
    MqttVersion,
    call_on_change,
    describe_error,
    open_link,
    ssl_context,
)
from monitor.infra.ratelimit import RateLimiter
from monitor.infra.reconnect import RECONNECT, reconnect_forever
from monitor.infra.supervise import Supervisor
from monitor.pagerduty.config import PagerDutyConfig, Route, load_pagerduty_config
from monitor.pagerduty.inbound import BadEvent, InboundEvent, parse_event
from monitor.pagerduty.sender import EventsApi
from monitor.pagerduty.store import BridgeStore, StoreError

__all__ = ["STORE_FILE", "PagerDutyBridge", "run_bridge"]

log = structlog.get_logger("riskmon.pagerduty")

STORE_FILE: Final = "pagerduty.db"
_CONNECT_TIMEOUT: Final = 10.0
_GOODBYE_TIMEOUT: Final = 2.0
_PRUNE_INTERVAL: Final = 3600.0
_EXPECTED: Final = (aiomqtt.MqttError, OSError, TimeoutError, SecretUnavailable)


@dataclass(slots=True)
class _Channel:
    """One routing key's queue, rate limit and worker."""

    key_id: str
    bucket: RateLimiter
    queue: asyncio.Queue[tuple[InboundEvent, Route]] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


class PagerDutyBridge:
    """Forwards the events of `config.mqtt` to `config.events_url` (module docstring).

    `counts` holds how many events were `received`, `duplicate`, `invalid`,
    `unrouted`, `forwarded` and `dropped`, and how many times a task of the bridge
    crashed (`internal_errors`: logged with the traceback, the task started again);
    `on_change` is called (on the event loop)
    after each of those and when the connection comes or goes; `ready` is set while
    the bridge is connected and subscribed.
    """

    def __init__(
        self,
        config: PagerDutyConfig,
        *,
        on_change: Callable[[], None] | None = None,
        reconnect_min: float = RECONNECT.initial,
        reconnect_max: float = RECONNECT.max,
        keepalive: int = 30,
    ) -> None:
        self.config = config
        self._endpoint = Endpoint.parse(config.mqtt.url)
        prefix = config.mqtt.topic_prefix
        if not prefix or "+" in prefix or "#" in prefix:
            raise ValueError("mqtt topic_prefix must be non-empty and hold no + or #")
        self.topic = f"{prefix}/events/#"
        self.client_id = config.mqtt.client_id or "riskmon-pagerduty"
        self.counts: Counter[str] = Counter()
        self.ready = asyncio.Event()
        self._on_change = on_change
        self._reconnect = Backoff(reconnect_min, reconnect_max)
        self._keepalive = keepalive
        self._version = MqttVersion()
        self.supervisor = Supervisor(self._crashed)
        self._stopping = asyncio.Event()
        self._store: BridgeStore | None = None
        self._api: EventsApi | None = None
        limit = config.rate_limit
        self._channels: dict[str, _Channel] = {}
        for route in config.routes:
            if route.key_id not in self._channels:
                bucket = RateLimiter(limit.per_second, burst=limit.burst)
                self._channels[route.key_id] = _Channel(route.key_id, bucket)

    @property
    def store(self) -> BridgeStore:
        if self._store is None:
            raise RuntimeError("the bridge is not running")
        return self._store

    def stop(self) -> None:
        """Ask `run()` to disconnect cleanly and return (at once if it has not started:
        a bridge runs once). Safe from a signal handler."""
        self._stopping.set()

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Receive and forward until `stop()`; raises StoreLocked when another bridge
        owns the state folder (StoreError when it cannot be used), otherwise only
        CancelledError."""
        config = self.config
        store = BridgeStore(config.state_dir / STORE_FILE, retention=config.dedup_retention)
        self._store = store
        try:
            async with JsonPoster() as poster:
                self._api = EventsApi(
                    config.events_url, poster, timeout=config.timeout, backoff=config.backoff
                )
                await self._serve(store)
        finally:
            for channel in self._channels.values():
                channel.task = None
                while not channel.queue.empty():  # they stay pending in the store
                    channel.queue.get_nowait()
            self._api = None
            self._store = None
            store.close()

    async def _serve(self, store: BridgeStore) -> None:
        pruned = store.prune()
        resumed = self._resume()
        log.info(
            "pagerduty bridge starting",
            version=__version__,
            topic=self.topic,
            client_id=self.client_id,
            routes=[route.name for route in self.config.routes],
            resumed=resumed,
            pruned=pruned,
        )
        tasks: list[asyncio.Task[None]] = []
        try:
            for channel in self._channels.values():
                channel.task = self.supervisor.start("pd-worker", partial(self._work, channel))
                tasks.append(channel.task)
            tasks.append(self.supervisor.start("pd-prune", self._prune_forever))
            mqtt = self.supervisor.start("pd-mqtt", self._mqtt_forever)
            tasks.append(mqtt)
            await self._stopping.wait()
            # a clean DISCONNECT first (the workers go on meanwhile), then the workers stop:
            # an event in flight stays pending and is sent again at the next start
            await asyncio.wait({mqtt}, timeout=_CONNECT_TIMEOUT + _GOODBYE_TIMEOUT)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        log.info("pagerduty bridge stopped", pending=sum(1 for _ in store.pending()))

    def _resume(self) -> int:
        """Queue the events left pending by the last run; how many."""
        count = 0
        for event_id, payload in self.store.pending():
            try:
                event = parse_event(payload)
            except BadEvent as exc:  # only if the store was edited by hand
                log.error("pagerduty: unreadable pending event", event_id=event_id, error=str(exc))
                self.store.finish(event_id, "dropped")
                continue
            route = self.config.route_for(event.severity, event.labels)
            if route is None:
                self._unrouted(event, topic=None)
                self.store.finish(event_id, "unrouted")
                continue
            self._channels[route.key_id].queue.put_nowait((event, route))
            count += 1
        return count

    # -- receiving --------------------------------------------------------------------------

    async def _mqtt_forever(self) -> None:
        await reconnect_forever(
            self._session, backoff=self._reconnect, stopping=self._stopping, failed=self._failed
        )

    def _failed(self, exc: Exception, delay: float) -> None:
        fields = {
            "host": self._endpoint.host,
            "port": self._endpoint.port,
            "error": describe_error(exc),
            "retry_in": round(delay, 2),
        }
        if isinstance(exc, _EXPECTED):
            log.warning("pagerduty bridge: mqtt connection failed", **fields)
        else:
            log.error("pagerduty bridge: mqtt error", exc_info=exc, **fields)
        self._changed()

    async def _session(self) -> None:
        link = await self._connect()
        graceful = False
        try:
            await self._subscribe(link)
            self.ready.set()
            self._changed()
            log.info(
                "pagerduty bridge connected",
                host=self._endpoint.host,
                port=self._endpoint.port,
                protocol=self._version.number,
                client_id=self.client_id,
                topic=self.topic,
            )
            reader = asyncio.create_task(self._read(link), name="pd-mqtt-read")
            stopping = asyncio.create_task(self._stopping.wait())
            try:
                await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                reader.cancel()
                await asyncio.wait({reader, stopping})
            if not reader.cancelled():
                reader.result()  # the reason the connection ended
            graceful = True
        finally:
            self.ready.clear()
            if not graceful:
                link.abort()
        try:  # a clean DISCONNECT: the broker keeps the session and queues for us
            link.timeout = _GOODBYE_TIMEOUT
            await link.__aexit__(None, None, None)
            log.info("pagerduty bridge disconnected")
        except (aiomqtt.MqttError, TimeoutError) as exc:
            link.abort()
            log.warning("pagerduty bridge: unclean disconnect", error=describe_error(exc))

    async def _connect(self) -> Link:
        return await open_link(self._new_link, self._version)

    async def _new_link(self) -> Link:
        mqtt = self.config.mqtt
        password = mqtt.password.get(fresh=True) if mqtt.password is not None else None
        tls_context = None
        if self._endpoint.tls:
            tls_context = await asyncio.to_thread(ssl_context, mqtt.tls)
        if self._version.v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            expiry = min(max(0, round(self.config.session_expiry)), 0xFFFFFFFF)
            properties.SessionExpiryInterval = expiry
            session: dict[str, object] = {
                "clean_session": None,
                "clean_start": False,
                "properties": properties,
            }
        else:
            session = {"clean_session": False}
        link = Link(
            self._endpoint.host,
            self._endpoint.port,
            username=mqtt.username,
            password=password,
            identifier=self.client_id,
            protocol=self._version.protocol,
            keepalive=self._keepalive,
            timeout=_CONNECT_TIMEOUT,
            tls_context=tls_context,
            **session,
        )
        # PUBACK only once an event is stored (see _read): paho must not ack on receipt.
        link.paho.manual_ack_set(True)
        return link

    async def _subscribe(self, link: Link) -> None:
        granted = await link.subscribe(self.topic, qos=1)
        for code in granted:
            value = code.value if isinstance(code, ReasonCode) else int(code)
            if value >= 0x80:
                raise aiomqtt.MqttError(
                    f"the broker refused the subscription to {self.topic} (0x{value:02x})"
                )
            if value == 0:
                log.warning(
                    "pagerduty bridge: the broker granted QoS 0 only; events published "
                    "while the bridge is away will be lost",
                    topic=self.topic,
                )

    async def _read(self, link: Link) -> None:
        """Store each message, then acknowledge it; return never."""
        async for message in link.messages:
            self._receive(message)  # raises (no PUBACK) when the store fails
            if message.qos > 0:
                link.paho.ack(message.mid, message.qos)
        raise aiomqtt.MqttError("connection lost")

    def _receive(self, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        payload = bytes(message.payload)  # paho hands over bytes
        self.counts["received"] += 1
        try:
            event = parse_event(payload)
        except BadEvent as exc:
            self.counts["invalid"] += 1
            log.warning("pagerduty: invalid event skipped", topic=topic, error=str(exc))
            self._changed()
            return
        route = self.config.route_for(event.severity, event.labels)
        if route is None:
            stored = self.store.add(event.event_id, None, "unrouted")
        else:
            stored = self.store.add(event.event_id, payload)
        if not stored:
            self.counts["duplicate"] += 1
            log.info(
                "pagerduty: duplicate event ignored",
                event_id=event.event_id,
                alertname=event.alertname,
                topic=topic,
            )
        elif route is None:
            self._unrouted(event, topic=topic)
        else:
            self._channels[route.key_id].queue.put_nowait((event, route))
        self._changed()

    def _unrouted(self, event: InboundEvent, *, topic: str | None) -> None:
        self.counts["unrouted"] += 1
        log.warning(
            "pagerduty: no route takes this event; not forwarded",
            event_id=event.event_id,
            alertname=event.alertname,
            severity=event.severity,
            labels=dict(event.labels),
            topic=topic,
        )

    # -- forwarding -------------------------------------------------------------------------

    async def _work(self, channel: _Channel) -> None:
        """Forward the channel's events one at a time, in order; return never."""
        while True:
            event, route = await channel.queue.get()
            api = self._api
            assert api is not None
            try:
                outcome = await api.deliver(
                    event, route.routing_key, channel.bucket, route=route.name
                )
            except Exception:  # a bug: the event stays pending for the next start
                log.exception(
                    "pagerduty: delivery failed",
                    event_id=event.event_id,
                    alertname=event.alertname,
                    route=route.name,
                )
                continue
            try:
                self.store.finish(event.event_id, "sent" if outcome.accepted else "dropped")
            except Exception:
                log.exception("pagerduty: cannot record the outcome", event_id=event.event_id)
            fields = {
                "event_id": event.event_id,
                "alertname": event.alertname,
                "action": event.body.get("event_action"),
                "route": route.name,
                "status": outcome.status,
                "attempts": outcome.attempts,
            }
            if outcome.accepted:
                self.counts["forwarded"] += 1
                log.info("pagerduty: event forwarded", **fields)
            else:
                self.counts["dropped"] += 1
                log.error("pagerduty refused the event; dropped", error=outcome.error, **fields)
            self._changed()

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(_PRUNE_INTERVAL)
            try:
                self.store.prune()
            except Exception:
                log.exception("pagerduty: pruning the store failed")

    def _changed(self) -> None:
        call_on_change(self._on_change, log, "pagerduty")

    def _crashed(self, task: str, error: BaseException) -> None:
        """The supervisor's report of a crash (logged with its traceback already)."""
        self.counts["internal_errors"] += 1
        self._changed()


async def run_bridge(config_path: Path) -> int:
    """`riskmon pagerduty`: run until SIGTERM or SIGINT; the exit code."""
    config = load_pagerduty_config(config_path)
    bridge = PagerDutyBridge(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, bridge.stop)
    bridge.supervisor.install(loop)  # what escapes on the loop or in a thread: logged
    try:
        await bridge.run()
    except StoreError as exc:  # StoreLocked: another bridge owns the state folder
        log.error("pagerduty bridge cannot start", error=str(exc))
        return 1
    finally:
        bridge.supervisor.uninstall(loop)
    return 0
