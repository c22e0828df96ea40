"""A lean HTTP/1.1 client on asyncio protocols: keep-alive pools, one deadline per call.

riskmon's venue calls are small JSON GETs and POSTs to two hosts, thousands a second.
aiohttp's client spends about 0.13 ms of CPU on each on this machine (its request and
response objects, streams, timers, tracing hooks), more than half of a whole poll's
0.2 ms budget (`python -m bench.http_clients`). This client does only what these calls
need: HTTP/1.1 over TCP or TLS, `Content-Length`, chunked and read-until-close bodies,
gzip and deflate bodies, keep-alive connections pooled per origin, and a size cap.
No proxies, redirects, cookies or HTTP/2: `HttpClient(backend="httpx")` has those.

A request on a pooled connection that the server had closed meanwhile is sent again
once on a new connection when nothing of an answer had arrived, as browsers and
aiohttp do, and only for GET: a POST might have been acted on.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import Mapping
from typing import Final, cast
from urllib.parse import urlencode, urlsplit

from monitor.errors import SnapshotParseError, VenueConnectionError

MAX_HEAD_BYTES: Final = 64 * 1024
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_NO_BODY_STATUSES: Final = frozenset({204, 304})
_HEX_DIGITS: Final = b"0123456789abcdefABCDEF"


class ResponseHeaders(dict[str, str]):
    """Response headers by lower-case name; `get`, `[]` and `in` ignore case."""

    def __getitem__(self, name: str) -> str:
        return dict.__getitem__(self, name.lower())

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return dict.get(self, name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and dict.__contains__(self, name.lower())


class _Origin:
    """Where requests to one scheme://host:port go, and its idle connections."""

    __slots__ = ("host", "host_header", "idle", "port", "tls")

    def __init__(self, scheme: str, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.tls = scheme == "https"
        default = _DEFAULT_PORTS[scheme]
        name = f"[{host}]" if ":" in host else host
        self.host_header = name if port == default else f"{name}:{port}"
        self.idle: deque[_Connection] = deque()


class _Answer:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: ResponseHeaders, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, the answer parsed as it arrives."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.received_any = False
        self.waiter: asyncio.Future[_Answer] | None = None
        self._reset(1 << 20, False)

    def _reset(self, max_bytes: int, head_only: bool) -> None:
        self.max_bytes = max_bytes
        self.head_only = head_only
        self.buffer = bytearray()
        self.status = 0
        self.headers: ResponseHeaders | None = None
        self.length = -1  # body bytes expected; -1 until known, -2: until the server closes
        self.chunked = False
        self.chunks: list[bytes] = []
        self.body_size = 0
        self.keep_alive = True

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        waiter = self.waiter
        if waiter is None or waiter.done():  # bytes nobody asked for: the connection is unusable
            self._close()
            return
        self.buffer += data
        try:
            if self.headers is None and not self._parse_head():
                return
            self._parse_body()
        except (SnapshotParseError, VenueConnectionError) as exc:
            self._close()
            waiter.set_exception(exc)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if exc is None and self.headers is not None and self.length == -2:
            try:
                self._finish(bytes(self.buffer))  # the body ran until the server closed
            except (SnapshotParseError, VenueConnectionError) as error:
                waiter.set_exception(error)
            return
        reason = f": {exc}" if exc is not None else ""
        waiter.set_exception(VenueConnectionError(f"connection closed by the server{reason}"))

    # ------------------------------------------------------------ parsing

    def _parse_head(self) -> bool:
        """Parse status line and headers once they are complete; False if not yet."""
        buffer = self.buffer
        while True:  # past any interim (1xx) answers
            end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise VenueConnectionError("response headers larger than 64 KiB")
                return False
            lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
            del buffer[: end + 4]
            version, _, rest = lines[0].partition(" ")
            code = rest[:3]
            if (
                not version.startswith("HTTP/1.")
                or not _is_digits(code)
                or rest[3:4] not in ("", " ")
            ):
                raise VenueConnectionError(f"not an HTTP/1.x response: {lines[0][:60]!r}")
            status = int(code)
            if not 100 <= status < 200:
                break  # not an interim answer (100 Continue) after which the real one follows
        headers = ResponseHeaders()
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise VenueConnectionError(f"malformed response header: {line[:60]!r}")
            name = name.strip().lower()
            value = value.strip()
            if name in headers:
                dict.__setitem__(headers, name, f"{dict.__getitem__(headers, name)}, {value}")
            else:
                dict.__setitem__(headers, name, value)
        connection = dict.get(headers, "connection", "").lower()
        self.keep_alive = (
            "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        )
        self.status, self.headers = status, headers
        if self.head_only or status in _NO_BODY_STATUSES:
            self.length = 0
        elif "chunked" in dict.get(headers, "transfer-encoding", "").lower():
            self.chunked = True
        elif (declared := headers.get("content-length")) is not None:
            if not _is_digits(declared):
                raise VenueConnectionError(f"bad Content-Length {declared[:40]!r}")
            if len(declared) > _MAX_LENGTH_DIGITS:  # int() refuses over 4,300 digits
                raise VenueConnectionError(
                    f"bad Content-Length: {len(declared)} digits, more than any body has"
                )
            self.length = int(declared)
            self._check_size(self.length)
        else:
            self.length = -2
            self.keep_alive = False
        return True

    def _parse_body(self) -> None:
        buffer = self.buffer
        if not self.chunked:
            if self.length == -2:
                self._check_size(len(buffer))
            elif len(buffer) >= self.length:
                if len(buffer) > self.length:
                    raise VenueConnectionError("more bytes than Content-Length announced")
                body = bytes(buffer)
                buffer.clear()
                self._finish(body)
            return
        while True:
            if self.length == -1:  # at a chunk-size line
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > 1024:
                        raise VenueConnectionError("malformed chunk size line")
                    return
                size_text = bytes(buffer[:end]).split(b";", 1)[0].strip()
                if not 0 < len(size_text) <= 16 or size_text.translate(None, _HEX_DIGITS):
                    raise VenueConnectionError(f"bad chunk size {size_text[:20]!r}")
                size = int(size_text, 16)
                del buffer[: end + 2]
                if size == 0:
                    self.length = -3  # trailers follow, up to an empty line
                else:
                    self.length = size
                    self._check_size(self.body_size + size)
            if self.length == -3:
                end = buffer.find(b"\r\n\r\n") if not buffer.startswith(b"\r\n") else 0
                if end < 0:
                    return
                del buffer[: end + (2 if end == 0 else 4)]
                if buffer:
                    raise VenueConnectionError("bytes after the end of a chunked body")
                self._finish(b"".join(self.chunks))
                return
            if len(buffer) < self.length + 2:
                return
            if buffer[self.length : self.length + 2] != b"\r\n":
                raise VenueConnectionError("a chunk does not end in CRLF")
            self.chunks.append(bytes(buffer[: self.length]))
            self.body_size += self.length
            del buffer[: self.length + 2]
            self.length = -1

    def _check_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise SnapshotParseError(
                f"response of {size} bytes or more is larger than the {self.max_bytes}-byte limit",
                status=self.status,
            )

    def _finish(self, body: bytes) -> None:
        headers = self.headers
        assert headers is not None
        assert self.waiter is not None
        encoding = headers.get("content-encoding")
        if encoding and body:
            body = self._decoded(body, encoding.strip().lower())
        self.waiter.set_result(_Answer(self.status, headers, body))

    def _decoded(self, body: bytes, encoding: str) -> bytes:
        if encoding not in ("gzip", "x-gzip", "deflate", "identity"):
            raise VenueConnectionError(f"unsupported Content-Encoding {encoding[:20]!r}")
        if encoding == "identity":
            return body
        wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, self.max_bytes + 1)
        except zlib.error as exc:
            raise VenueConnectionError(f"bad {encoding} body: {exc}") from None
        self._check_size(len(out))
        if not inflater.eof:
            raise VenueConnectionError(f"truncated {encoding} body")
        return out

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------ one exchange

    def send(
        self, request: bytes, max_bytes: int, head_only: bool, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[_Answer]:
        self._reset(max_bytes, head_only)
        self.received_any = False
        self.waiter = waiter = loop.create_future()
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            waiter.set_exception(VenueConnectionError("connection closed by the server"))
        else:
            transport.write(request)
        return waiter

    @property
    def reusable(self) -> bool:
        return self.keep_alive and not self.closed and not self.buffer


class Http1Pool:
    """Keep-alive connections per origin, at most `max_connections` open in all."""

    def __init__(
        self, *, max_connections: int, user_agent: str, tls: ssl.SSLContext | None = None
    ) -> None:
        self.max_connections = max_connections
        self.user_agent = user_agent
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._by_head: dict[str, _Origin] = {}  # "scheme://host:port" as written -> origin
        self._slots = asyncio.Semaphore(max_connections)
        self._open: set[_Connection] = set()
        self._tls = tls  # None: the system's trusted CAs, loaded on the first https URL

    def _split(self, url: str) -> tuple[_Origin, str]:
        """The origin of `url` and the request target to send it."""
        scheme_end = url.find("://")
        slash = url.find("/", scheme_end + 3) if scheme_end > 0 else -1
        # Cached by `scheme://host:port` (a few), not by URL (one per account: 380 bytes
        # an account of memory, bench/memory.py).
        origin = self._by_head.get(url[:slash]) if slash > 0 else None
        if origin is None:
            origin, target = self._parse(url, slash)
        else:
            target = url[slash:].partition("#")[0]
        if not target.isprintable() or " " in target:
            raise VenueConnectionError(f"unsupported URL {url[:80]!r}: blank or control character")
        return origin, target

    def _parse(self, url: str, slash: int) -> tuple[_Origin, str]:
        """`_split` the long way, for a URL whose origin is not cached yet (`slash`:
        where its path starts, -1 if it has none); caches the origin if it can."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            hostname, port = parts.hostname, parts.port
        except ValueError:  # a port that is not a number
            hostname = port = None
        if scheme not in _DEFAULT_PORTS or not hostname:
            raise VenueConnectionError(f"unsupported URL {url[:80]!r}: http or https only")
        port = port or _DEFAULT_PORTS[scheme]
        key = (scheme, hostname, port)
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _Origin(scheme, hostname, port)
        head = url[:slash] if slash > 0 else ""
        if head and "?" not in head and "#" not in head and len(self._by_head) < 1000:
            self._by_head[head] = origin
        return origin, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    async def request(
        self,
        method: str,
        url: str,
        *,
        deadline: float,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str | int] | None,
        body: bytes | None,
        content_type: str | None,
        max_bytes: int,
    ) -> tuple[int, ResponseHeaders, bytes]:
        """One exchange; TimeoutError at `deadline` (loop time)."""
        origin, target = self._split(url)
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        request = self._encode(method, target, origin, headers, body, content_type)
        loop = asyncio.get_running_loop()
        if self._slots.locked():  # every connection busy: the wait counts against the deadline
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        else:
            await self._slots.acquire()
        try:
            for attempt in (1, 2):
                connection = self._idle(origin)
                reused = connection is not None
                if connection is None:
                    connection = await self._connect(origin, deadline, loop)
                waiter = connection.send(request, max_bytes, method == "HEAD", loop)
                timer = loop.call_at(deadline, _expire, waiter)
                try:
                    answer = await waiter
                except VenueConnectionError:
                    self._drop(connection)
                    if reused and attempt == 1 and not connection.received_any and method == "GET":
                        continue  # the server had closed the idle connection
                    raise
                except BaseException:  # a timeout, a cancellation, a size refusal
                    self._drop(connection)
                    raise
                finally:
                    timer.cancel()
                connection.waiter = None
                if connection.reusable:
                    origin.idle.append(connection)
                else:
                    self._drop(connection)
                return answer.status, answer.headers, answer.body
        finally:
            self._slots.release()
        raise AssertionError("unreachable")  # pragma: no cover

    def _idle(self, origin: _Origin) -> _Connection | None:
        idle = origin.idle
        while idle:
            connection = idle.pop()  # the most recently used: the least likely closed
            transport = connection.transport
            if connection.reusable and transport is not None and not transport.is_closing():
                return connection
            self._drop(connection)
        return None

    async def _connect(
        self, origin: _Origin, deadline: float, loop: asyncio.AbstractEventLoop
    ) -> _Connection:
        if len(self._open) >= self.max_connections:  # idle ones elsewhere hold the slots
            self._close_one_idle()
        connection = _Connection(origin)
        tls = self._tls_context() if origin.tls else None
        async with asyncio.timeout_at(deadline):  # outside: its TimeoutError is an OSError
            try:
                await loop.create_connection(
                    lambda: connection,
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
            except OSError as exc:
                reason = exc.strerror or str(exc) or type(exc).__name__
                raise VenueConnectionError(
                    f"cannot connect to {origin.host_header}: {reason}"
                ) from None
        self._open.add(connection)
        return connection

    def _close_one_idle(self) -> None:
        for origin in self._origins.values():
            if origin.idle:
                self._drop(origin.idle.popleft())
                return

    def _drop(self, connection: _Connection) -> None:
        connection._close()
        self._open.discard(connection)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def _encode(
        self,
        method: str,
        target: str,
        origin: _Origin,
        headers: Mapping[str, str] | None,
        body: bytes | None,
        content_type: str | None,
    ) -> bytes:
        lines = [f"{method} {target} HTTP/1.1\r\nhost: {origin.host_header}\r\n"]
        lines.append(f"user-agent: {self.user_agent}\r\n")
        if headers:
            for name, value in headers.items():
                if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                    raise ValueError(f"header {name!r} holds a line break")
                lines.append(f"{name}: {value}\r\n")
        if body is not None:
            if content_type:
                lines.append(f"content-type: {content_type}\r\n")
            lines.append(f"content-length: {len(body)}\r\n\r\n")
            return "".join(lines).encode("latin-1") + body
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    async def aclose(self) -> None:
        for connection in list(self._open):
            self._drop(connection)
        for origin in self._origins.values():
            origin.idle.clear()


#: A Content-Length of more digits than this (a petabyte) is no length a body can have.
_MAX_LENGTH_DIGITS = 15


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()  # isdigit() alone takes "²", which int() refuses


def _expire(waiter: asyncio.Future[_Answer]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
