"""One MQTT connection, as the daemon's publisher and the PagerDuty bridge both make it.

`Endpoint` is a broker's host, port and TLS flag from an `mqtt://` or `mqtts://` url;
`Link` is one connection (aiomqtt's Client plus PUBACK reason codes, the broker's
Receive Maximum and an abort without DISCONNECT); `ssl_context` builds the TLS context
of a `TlsConfig`; `open_link` connects, stepping down to MQTT 3.1.1 when the broker
refuses MQTT 5 (`MqttVersion` remembers it); `describe_error` is the short text of a
failure for logs; `call_on_change` calls an owner's `on_change` callback, logging (not
raising) its failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import aiomqtt
import structlog
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.client import MQTT_ERR_SUCCESS
from paho.mqtt.client import Client as PahoClient
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from structlog.typing import FilteringBoundLogger

from monitor.config.model import TlsConfig

__all__ = [
    "Endpoint",
    "Link",
    "MqttVersion",
    "call_on_change",
    "describe_error",
    "open_link",
    "ssl_context",
]

log = structlog.get_logger("riskmon.mqtt")

_UNSUPPORTED_PROTOCOL: Final = (1, 132)  # CONNACK: MQTT 3.1.1 code 1, MQTT 5 code 0x84


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        if url == "embedded":
            raise ValueError(
                "mqtt url 'embedded': start the embedded broker first and pass its mqtt:// url"
            )
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or "@" in parts.netloc:
            raise ValueError("mqtt url: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port
        except ValueError:
            raise ValueError("mqtt url: invalid port") from None
        return cls(parts.hostname, port or (8883 if tls else 1883), tls)


class Link(aiomqtt.Client):
    """One connection: aiomqtt's Client plus what its public API does not offer.

    `send` hands a message to paho at once (so messages go out in call order) and
    returns a future resolved with the PUBACK's reason code, where aiomqtt's `publish`
    would hide failure reason codes; `receive_maximum` is the broker's MQTT 5 Receive
    Maximum; `abort` drops the connection without DISCONNECT, so the broker publishes
    the will. These rely on aiomqtt 2.x internals (`_client`, `_on_connect`,
    `_on_publish`, `_on_socket_register_write`, `_on_socket_close`, `_disconnected`),
    checked by tests/test_mqtt.py and tests/test_refused.py.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: dict[
            int, tuple[asyncio.Future[ReasonCode | None], Callable[[], None] | None]
        ] = {}
        self.receive_maximum = 65535

    @property
    def paho(self) -> PahoClient:
        client: PahoClient = self._client
        return client

    def send(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool = False,
        properties: Properties | None = None,
        on_ack: Callable[[], None] | None = None,
    ) -> asyncio.Future[ReasonCode | None]:
        """Publish; the future resolves with None on success (PUBACK, or written for
        QoS 0), with the reason code when the broker refused the message. `on_ack` is
        called the moment the PUBACK is read (the future's callbacks run a loop turn
        later)."""
        info = self.paho.publish(topic, payload, qos, retain, properties)
        if info.rc != MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        done: asyncio.Future[ReasonCode | None] = self._loop.create_future()
        if qos == 0 or info.is_published():
            done.set_result(None)
        else:
            self._acks[info.mid] = (done, on_ack)
        return done

    def flush(self) -> None:
        """Write what `send` queued now, rather than when the loop next finds the socket
        writable: one loop turn less between an alert and its PUBLISH. What does not fit
        in the socket's buffer is written later, as before."""
        self.paho.loop_write()

    # Watching the socket. aiomqtt registers the socket's writer through
    # call_soon_threadsafe, even on the loop's own thread, and forgets the writer when
    # paho closes the socket. A registration that ran after paho had written (and
    # unregistered) stayed behind, and one that ran after the socket closed watched a
    # closed descriptor (or the next connection's, reusing its number): uvloop's libuv
    # answers a watcher on a closed descriptor with abort(), "Fatal Python error:
    # Aborted" at the first refused publish. So the writer is registered at once on the
    # loop's thread, from another thread only while paho still wants to write on that
    # very socket, and removed before the socket closes.

    def _on_socket_register_write(self, client: PahoClient, userdata: Any, sock: Any) -> None:
        if _running_loop() is self._loop:
            self._watch_writes(sock)
        else:  # paho's connect, in an executor thread
            self._loop.call_soon_threadsafe(self._watch_writes, sock)

    def _watch_writes(self, sock: Any) -> None:
        paho = self.paho
        current = paho.socket()
        if current is not None and current is sock and paho._registered_write:
            self._loop.add_writer(current.fileno(), self._writable)

    def _writable(self) -> None:
        try:
            self.paho.loop_write()
        except Exception as exc:  # a broken connection: the session ends with it
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)

    def _on_socket_close(self, client: PahoClient, userdata: Any, sock: Any) -> None:
        fileno = sock.fileno()
        if fileno > -1:
            self._loop.remove_writer(fileno)
        super()._on_socket_close(client, userdata, sock)

    def _on_connect(
        self,
        client: PahoClient,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        maximum = getattr(properties, "ReceiveMaximum", None)
        if isinstance(maximum, int) and maximum > 0:
            self.receive_maximum = maximum
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_publish(
        self,
        client: PahoClient,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        waiting = self._acks.pop(mid, None)
        if waiting is not None:
            done, on_ack = waiting
            if on_ack is not None:
                on_ack()
            if not done.done():
                done.set_result(reason_code if reason_code.is_failure else None)
        super()._on_publish(client, userdata, mid, reason_code, properties)

    def abort(self) -> None:
        """Close the connection without DISCONNECT (the broker then sends the will)."""
        # Nobody awaits the disconnection any more: mark its error as seen.
        self._disconnected.add_done_callback(_consume)
        sock = self.paho.socket()
        if isinstance(sock, socket.socket):  # an SSLSocket too
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # not on a thread that runs a loop
        return None


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class MqttVersion:
    """The MQTT version an owner connects with: 5 until a broker refuses it, then 3.1.1
    from then on (`open_link` steps down)."""

    __slots__ = ("protocol",)

    def __init__(self) -> None:
        self.protocol = aiomqtt.ProtocolVersion.V5

    @property
    def v5(self) -> bool:
        return self.protocol == aiomqtt.ProtocolVersion.V5

    @property
    def number(self) -> int:
        """4 or 5, as the status payloads give it."""
        return 5 if self.v5 else 4

    def downgrade(self) -> bool:
        """Use MQTT 3.1.1 from now on; False if already so."""
        if not self.v5:
            return False
        self.protocol = aiomqtt.ProtocolVersion.V311
        return True


async def open_link(make: Callable[[], Awaitable[Link]], version: MqttVersion) -> Link:
    """A connected link from `make()` (which connects with `version.protocol`); when the
    broker refuses MQTT 5, try again with 3.1.1."""
    while True:
        link = await make()
        try:
            await link.__aenter__()
        except MqttConnectError as exc:
            link.abort()
            if exc.rc in _UNSUPPORTED_PROTOCOL and version.downgrade():
                log.info("mqtt broker refuses MQTT 5; using MQTT 3.1.1")
                continue
            raise
        except BaseException:
            link.abort()
            raise
        return link


def describe_error(exc: BaseException) -> str:
    """A short text for logs and `last_error`; never holds a password (none is ever in
    an exception here: paho and aiomqtt do not echo credentials)."""
    cause = exc.__cause__
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aiomqtt.MqttError) and cause is not None and str(cause):
        text = f"{text}: {cause}"
    return text


def call_on_change(
    on_change: Callable[[], None] | None, logger: FilteringBoundLogger, owner: str
) -> None:
    """Call `on_change` if there is one; a failure in it is logged under `owner`, never
    raised into the publisher's or the bridge's loop."""
    if on_change is not None:
        try:
            on_change()
        except Exception:
            logger.exception(f"{owner}: the on_change callback failed")


def ssl_context(tls: TlsConfig | None) -> ssl.SSLContext:
    """Runs in a thread: loading certificates reads files."""
    ca = str(tls.ca_file) if tls is not None and tls.ca_file is not None else None
    context = ssl.create_default_context(cafile=ca)
    if tls is not None and tls.cert_file is not None:
        key = str(tls.key_file) if tls.key_file is not None else None
        context.load_cert_chain(str(tls.cert_file), key)
    if tls is not None and tls.insecure:
        context.check_hostname = False
    return context
