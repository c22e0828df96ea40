"""The venue HTTP transport (aiohttp's client behind `HttpClient`, `monitor/venues/http*.py`)
against real sockets: small servers on 127.0.0.1 port 0 that write crafted raw responses,
so every framing case goes over the wire byte for byte. Reuse is counted by the server's
accepted connections; nothing waits on a clock except the deadline tests' own short
deadlines. These are the cases the hand-written HTTP/1.1 client this replaced was tested
on; the errors are aiohttp's, wrapped in riskmon's named errors."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import ipaddress
import json
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from monitor.config import TlsConfig, VenueTransport
from monitor.errors import PollDeadlineExceeded, SnapshotParseError, VenueConnectionError
from monitor.venues.http import USER_AGENT, HttpClient
from monitor.venues.http_aiohttp import AiohttpClient

# -- a raw HTTP server ------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes


class Conn:
    """One accepted connection, as a handler sees it."""

    def __init__(
        self, server: Server, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.index = index  # 1 for the first connection the server accepted
        self.reader = reader
        self.writer = writer
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def request(self) -> Request | None:
        """The next request, recorded on the server; None once the client closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")[:-2]
        method, target, version = lines[0].split(" ")
        assert version == "HTTP/1.1"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        request = Request(method, target, headers, body)
        self.server.requests.append(request)
        return request

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def trickle(self, raw: bytes) -> None:
        """Send one byte at a time, letting the client read each before the next."""
        for i in range(len(raw)):
            self.writer.write(raw[i : i + 1])
            await self.writer.drain()
            await asyncio.sleep(0)  # a yield, so the client's reader runs in between
            await asyncio.sleep(0)

    async def until_client_closes(self) -> None:
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


Handler = Callable[[Conn], Awaitable[None]]


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.accepted = 0
        self.conns: list[Conn] = []
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self, path: str = "/", *, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Conn(self, self.accepted, reader, writer)
        self.conns.append(conn)
        try:
            await self.handler(conn)
        except ConnectionError:
            pass  # the client hung up: expected in many of these tests
        except asyncio.CancelledError:
            pass  # stop(): the test is over (a cancelled task upsets asyncio's streams)
        except Exception as exc:  # a broken test handler: reported by stop()
            self.errors.append(exc)
        finally:
            writer.close()
            conn.finished.set_result(None)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        assert not self.errors, self.errors


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    servers: list[Server] = []

    async def start(handler: Handler, *, tls: ssl.SSLContext | None = None) -> Server:
        server = Server(handler)
        await server.start(tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture(autouse=True)
async def no_loop_errors() -> AsyncIterator[None]:
    """Fail a test whose client let an exception escape into the event loop."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield
    await asyncio.sleep(0)  # callbacks the teardown scheduled (connection_lost) run first
    loop.set_exception_handler(None)
    assert not seen, [context.get("message") for context in seen]


def response(status_line: str, *headers: str, body: bytes = b"") -> bytes:
    return ("\r\n".join((status_line, *headers)) + "\r\n\r\n").encode("latin-1") + body


def ok(body: bytes, *headers: str) -> bytes:
    return response("HTTP/1.1 200 OK", *headers, f"Content-Length: {len(body)}", body=body)


def answering(*answers: bytes) -> Handler:
    """Answer each request, on whichever connection, with the next of `answers`."""
    pending = list(answers)

    async def handler(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.send(pending.pop(0))

    return handler


async def silent(conn: Conn) -> None:
    """Read the request, never answer."""
    await conn.request()
    await conn.until_client_closes()


def soon(seconds: float = 5.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def until(predicate: Callable[[], bool]) -> None:
    """Yield to the loop until `predicate()` holds (it must within 2 s): for state that
    no event announces, such as the client having read a FIN."""
    async with asyncio.timeout(2):
        while not predicate():  # noqa: ASYNC110 - no fixed wait: one loop turn at a time
            await asyncio.sleep(0)


def pooled(client: HttpClient) -> list[Any]:
    """The client's open connections, busy or idle (aiohttp's connector's)."""
    assert isinstance(client, AiohttpClient)
    if client._session is None:
        return []
    connector: Any = client._session.connector
    idle = [proto for conns in connector._conns.values() for proto, _t in conns]
    return [proto for proto in (*idle, *connector._acquired) if proto.is_connected()]


async def get(client: HttpClient, server: Server, path: str = "/", **kwargs: Any) -> Any:
    return await client.request("GET", server.url(path), deadline=soon(), **kwargs)


# -- framing ----------------------------------------------------------------------------


async def test_content_length_body_status_and_headers(serve: Any, http_client: HttpClient) -> None:
    body = b'{"buying_power":"25000.00"}'
    server = await serve(
        answering(
            response(
                "HTTP/1.1 201 Created",
                "Content-Type: application/json",
                "X-Multi: a",
                "x-multi: b",
                "X-Empty:",
                f"content-length: {len(body)}",
                body=body,
            )
        )
    )
    answer = await get(http_client, server, "/accounts/19816")
    assert answer.status == 201
    assert answer.body == body
    assert answer.url == server.url("/accounts/19816")
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers.get("CONTENT-TYPE") == "application/json"
    assert "Content-Length" in answer.headers
    assert answer.headers["X-Multi"] == "a"  # the first of repeated headers
    assert answer.headers["x-empty"] == ""
    assert answer.headers.get("x-missing") is None
    (request,) = server.requests
    assert (request.method, request.target) == ("GET", "/accounts/19816")
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    assert request.headers["user-agent"] == USER_AGENT
    assert "content-length" not in request.headers
    assert request.body == b""


@pytest.mark.parametrize(
    ("status_line", "connection", "connections"),
    [
        ("HTTP/1.1 200 OK", None, 1),
        ("HTTP/1.1 200 OK", "Connection: close", 2),
        ("HTTP/1.1 200 OK", "Connection: Close", 2),
        ("HTTP/1.0 200 OK", None, 2),
        ("HTTP/1.0 200 OK", "Connection: keep-alive", 1),
    ],
)
async def test_keep_alive_reuses_one_connection_unless_the_server_says_close(
    serve: Any,
    http_client: HttpClient,
    status_line: str,
    connection: str | None,
    connections: int,
) -> None:
    extra = (connection,) if connection else ()
    answers = [response(status_line, *extra, "Content-Length: 3", body=b"one")]
    answers.append(response(status_line, *extra, "Content-Length: 3", body=b"two"))
    server = await serve(answering(*answers))  # keeps every connection open regardless
    assert (await get(http_client, server)).body == b"one"
    assert (await get(http_client, server)).body == b"two"
    assert server.accepted == connections
    if connections == 2:  # the client closed the first connection itself
        async with asyncio.timeout(2):
            await server.conns[0].finished
    assert len(pooled(http_client)) == (1 if connections == 1 else 0)


CHUNKED = response(
    "HTTP/1.1 200 OK",
    "Transfer-Encoding: chunked",
    "Trailer: X-Checksum",
    body=b"5;name=value\r\nhello\r\n"
    b"7;another=ext\r\n, world\r\n"
    b"A\r\n0123456789\r\n"
    b"0\r\nX-Checksum: abc\r\nX-More: def\r\n\r\n",
)


@pytest.mark.parametrize("trickle", [False, True], ids=["whole", "byte-by-byte"])
async def test_chunked_body_with_extensions_and_trailers(
    serve: Any, http_client: HttpClient, trickle: bool
) -> None:
    async def handler(conn: Conn) -> None:
        while await conn.request() is not None:
            await (conn.trickle(CHUNKED) if trickle else conn.send(CHUNKED))

    server = await serve(handler)
    for _ in range(2):  # and the connection is reused after the last chunk and trailers
        answer = await get(http_client, server)
        assert answer.status == 200
        assert answer.body == b"hello, world0123456789"
    assert server.accepted == 1


async def test_chunked_body_without_trailers_and_an_empty_one(
    serve: Any, http_client: HttpClient
) -> None:
    server = await serve(
        answering(
            response(
                "HTTP/1.1 200 OK", "Transfer-Encoding: chunked", body=b"3\r\nabc\r\n0\r\n\r\n"
            ),
            response("HTTP/1.1 200 OK", "transfer-encoding: Chunked", body=b"0\r\n\r\n"),
        )
    )
    assert (await get(http_client, server)).body == b"abc"
    assert (await get(http_client, server)).body == b""
    assert server.accepted == 1


@pytest.mark.parametrize("trickle", [False, True], ids=["whole", "byte-by-byte"])
async def test_body_until_the_server_closes(
    serve: Any, http_client: HttpClient, trickle: bool
) -> None:
    raw = response("HTTP/1.1 200 OK", "Content-Type: text/plain", body=b"all of it, until EOF")

    async def handler(conn: Conn) -> None:
        await conn.request()
        await (conn.trickle(raw) if trickle else conn.send(raw))
        await conn.close()

    server = await serve(handler)
    answer = await get(http_client, server)
    assert answer.body == b"all of it, until EOF"
    assert answer.headers["content-type"] == "text/plain"
    assert (await get(http_client, server)).body == b"all of it, until EOF"
    assert server.accepted == 2  # such a connection cannot be reused


async def test_interim_responses_are_skipped(serve: Any, http_client: HttpClient) -> None:
    interim = response("HTTP/1.1 100 Continue") + response(
        "HTTP/1.1 103 Early Hints", "Link: </style.css>; rel=preload"
    )
    whole = interim + ok(b"final", "X-Final: yes")

    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(whole)  # all in one write
        await conn.request()
        await conn.send(interim)  # the interim answers first, the real one later
        await conn.send(ok(b"later"))
        await conn.request()
        await conn.trickle(whole)

    server = await serve(handler)
    first = await get(http_client, server)
    assert (first.status, first.body, first.headers["x-final"]) == (200, b"final", "yes")
    assert "link" not in first.headers
    assert (await get(http_client, server)).body == b"later"
    assert (await get(http_client, server)).body == b"final"
    assert server.accepted == 1


async def test_many_interim_responses_in_one_read(serve: Any, http_client: HttpClient) -> None:
    server = await serve(answering(response("HTTP/1.1 100 Continue") * 3000 + ok(b"done")))
    assert (await get(http_client, server)).body == b"done"


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses_and_head(serve: Any, http_client: HttpClient, status: int) -> None:
    server = await serve(
        answering(
            # 204 and 304 have no body whatever the headers say
            response(f"HTTP/1.1 {status} Nothing", "Content-Length: 10"),
            response("HTTP/1.1 200 OK", "Content-Length: 1234"),  # to a HEAD: no body
            ok(b"after"),
        )
    )
    answer = await get(http_client, server)
    assert (answer.status, answer.body) == (status, b"")
    head = await http_client.request("HEAD", server.url(), deadline=soon())
    assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "1234")
    assert (await get(http_client, server)).body == b"after"
    assert server.accepted == 1
    assert [request.method for request in server.requests] == ["GET", "HEAD", "GET"]


# -- content encodings ------------------------------------------------------------------

PAYLOAD = json.dumps({"positions": [{"symbol": f"S{i}", "qty": i} for i in range(200)]}).encode()


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("GZip", gzip.compress),
        ("identity", lambda body: body),
    ],
)
async def test_encoded_bodies_are_decoded(
    serve: Any, http_client: HttpClient, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    encoded = compress(PAYLOAD)
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(encoded[i : i + 100]), encoded[i : i + 100])
        for i in range(0, len(encoded), 100)
    )
    server = await serve(
        answering(
            ok(encoded, f"Content-Encoding: {encoding}"),
            response(
                "HTTP/1.1 200 OK",
                f"Content-Encoding: {encoding}",
                "Transfer-Encoding: chunked",
                body=chunked + b"0\r\n\r\n",
            ),
        )
    )
    assert (await get(http_client, server)).body == PAYLOAD
    assert (await get(http_client, server)).body == PAYLOAD
    assert server.accepted == 1


@pytest.mark.parametrize("until_close", [False, True], ids=["content-length", "until-close"])
@pytest.mark.parametrize(
    ("encoding", "body", "message"),
    [
        ("br", b"\x1b\x03\x00", "Can not decode content-encoding: brotli"),
        ("gzip", b"not gzip at all", "Can not decode content-encoding: gzip"),
        ("deflate", zlib.compress(PAYLOAD)[:30], "malformed answer.*deflate"),
    ],
    ids=["unknown", "not gzip", "truncated deflate"],
)
async def test_undecodable_bodies_are_connection_errors(
    serve: Any,
    http_client: HttpClient,
    encoding: str,
    body: bytes,
    message: str,
    until_close: bool,
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        if until_close:
            await conn.send(response("HTTP/1.1 200 OK", f"Content-Encoding: {encoding}") + body)
            await conn.close()
        else:
            await conn.send(ok(body, f"Content-Encoding: {encoding}"))
            await conn.until_client_closes()

    server = await serve(handler)
    with pytest.raises(VenueConnectionError, match=message):
        await get(http_client, server)
    assert not pooled(http_client)


# -- the size cap -----------------------------------------------------------------------


async def test_declared_content_length_over_max_bytes(serve: Any, http_client: HttpClient) -> None:
    server = await serve(answering(ok(b"x" * 2000), ok(b"x" * 1000)))
    with pytest.raises(SnapshotParseError, match="larger than the 1000-byte limit") as caught:
        await get(http_client, server, max_bytes=1000)
    assert caught.value.status == 200
    assert (await get(http_client, server, max_bytes=1000)).body == b"x" * 1000  # at the cap


async def test_chunked_body_growing_over_max_bytes(serve: Any, http_client: HttpClient) -> None:
    chunk = b"258\r\n" + b"y" * 600 + b"\r\n"
    server = await serve(
        answering(
            response("HTTP/1.1 200 OK", "Transfer-Encoding: chunked", body=chunk * 2),
            ok(b"fine"),
        )
    )
    with pytest.raises(SnapshotParseError, match="1200 bytes or more is larger than the 1000-byte"):
        await get(http_client, server, max_bytes=1000)
    assert (await get(http_client, server, max_bytes=1000)).body == b"fine"
    assert server.accepted == 2


async def test_body_until_close_growing_over_max_bytes(serve: Any, http_client: HttpClient) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(response("HTTP/1.1 200 OK", body=b"z" * 500))
        await conn.send(b"z" * 600)
        await conn.until_client_closes()  # never closes by itself

    server = await serve(handler)
    with pytest.raises(SnapshotParseError, match="1000-byte limit"):
        await get(http_client, server, max_bytes=1000)
    assert not pooled(http_client)


async def test_decompressed_body_over_max_bytes(serve: Any, http_client: HttpClient) -> None:
    server = await serve(answering(ok(gzip.compress(b"0" * 100_000), "Content-Encoding: gzip")))
    with pytest.raises(SnapshotParseError, match="1000-byte limit"):
        await get(http_client, server, max_bytes=1000)


# -- deadlines and cancellation ---------------------------------------------------------


async def test_a_server_that_never_answers_hits_the_deadline(
    serve: Any, http_client: HttpClient
) -> None:
    server = await serve(silent)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PollDeadlineExceeded, match=r"no answer within 0\.2s"):
        await http_client.request("GET", server.url(), deadline=started + 0.2)
    assert 0.19 <= loop.time() - started < 1.5
    async with asyncio.timeout(2):
        await server.conns[0].finished  # the client dropped the connection
    assert not pooled(http_client)


async def test_the_deadline_cancels_only_its_request(serve: Any, http_client: HttpClient) -> None:
    """The deadline ends the request by cancelling its task: that cancellation is taken
    back (the task goes on), and one from outside, sooner, stays the caller's."""
    server = await serve(silent)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    with pytest.raises(PollDeadlineExceeded):
        await http_client.request("GET", server.url(), deadline=loop.time() + 0.1)
    assert task.cancelling() == 0
    await asyncio.sleep(0.01)  # no cancellation left pending to land here
    with pytest.raises(TimeoutError):  # the caller's own timeout, not PollDeadlineExceeded
        async with asyncio.timeout(0.1):
            await http_client.request("GET", server.url(), deadline=loop.time() + 30)
    assert task.cancelling() == 0
    outer = asyncio.create_task(http_client.request("GET", server.url(), deadline=loop.time() + 30))
    await until(lambda: len(server.requests) == 3)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer


async def test_a_stalled_tls_handshake_hits_the_deadline(serve: Any, tls_files: TlsFiles) -> None:
    server = await serve(Conn.until_client_closes)  # plain TCP: never says a TLS word
    client = AiohttpClient(transport=VenueTransport(tls=TlsConfig(ca_file=tls_files.cert)))
    try:
        with pytest.raises(PollDeadlineExceeded):
            await client.request(
                "GET", server.url(scheme="https"), deadline=asyncio.get_running_loop().time() + 0.2
            )
        async with asyncio.timeout(2):
            await server.conns[0].finished
    finally:
        await client.aclose()


async def test_a_deadline_already_passed_sends_nothing(serve: Any, http_client: HttpClient) -> None:
    server = await serve(answering())
    with pytest.raises(PollDeadlineExceeded, match="before the request was sent"):
        await http_client.request("GET", server.url(), deadline=soon(-1))
    assert server.accepted == 0


async def test_waiting_for_a_free_connection_counts_against_the_deadline(serve: Any) -> None:
    server = await serve(silent)
    client = AiohttpClient(max_connections=1)
    first = asyncio.create_task(client.request("GET", server.url("/slow"), deadline=soon(30)))
    try:
        await until(lambda: len(server.requests) == 1)  # it holds the only connection
        async with asyncio.timeout(3):
            with pytest.raises(PollDeadlineExceeded):
                await client.request(
                    "GET", server.url("/fast"), deadline=asyncio.get_running_loop().time() + 0.2
                )
        assert not first.done()
        assert server.accepted == 1
    finally:
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await client.aclose()


async def test_a_cancelled_request_drops_its_connection_and_frees_its_slot(
    serve: Any,
) -> None:
    async def handler(conn: Conn) -> None:
        if conn.index == 1:
            await silent(conn)
        else:
            await answering(ok(b"next"))(conn)

    server = await serve(handler)
    client = AiohttpClient(max_connections=1)
    try:
        task = asyncio.create_task(client.request("GET", server.url(), deadline=soon(30)))
        await until(lambda: len(server.requests) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(2):
            await server.conns[0].finished
        assert (await get(client, server)).body == b"next"
    finally:
        await client.aclose()


# -- stale pooled connections -----------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_an_idle_connection_the_server_closed_is_not_used(
    serve: Any, http_client: HttpClient, method: str
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(ok(f"answer {conn.index}".encode()))
        if conn.index == 1:
            await conn.close()  # the server's idle timeout
        else:
            await conn.until_client_closes()

    server = await serve(handler)
    assert (await get(http_client, server)).body == b"answer 1"
    (connection,) = pooled(http_client)
    await server.conns[0].finished
    await until(lambda: connection.transport is not None and connection.transport.is_closing())
    answer = await http_client.request(method, server.url(), deadline=soon(), json_body={})
    assert answer.body == b"answer 2"
    assert server.accepted == 2
    assert len(server.requests) == 2  # nothing was sent on the closed connection


async def test_a_get_on_a_connection_closed_meanwhile_is_retried_once(
    serve: Any, http_client: HttpClient
) -> None:
    async def handler(conn: Conn) -> None:
        while await conn.request() is not None:
            if conn.index == 1 and len(server.requests) == 2:
                await conn.close()  # gave up on the connection as the request arrived
                return
            await conn.send(ok(f"answer {len(server.requests)}".encode()))

    server = await serve(handler)
    assert (await get(http_client, server, "/a")).body == b"answer 1"
    assert (await get(http_client, server, "/b")).body == b"answer 3"
    assert server.accepted == 2
    assert [request.target for request in server.requests] == ["/a", "/b", "/b"]
    assert len(pooled(http_client)) == 1


async def test_a_get_retried_once_only(serve: Any, http_client: HttpClient) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        if conn.index == 1:
            await conn.send(ok(b"first"))
            await conn.request()
        await conn.close()  # every later request: closed without an answer

    server = await serve(handler)
    assert (await get(http_client, server)).body == b"first"
    with pytest.raises(VenueConnectionError, match="connection closed by the server"):
        await get(http_client, server)
    assert server.accepted == 2


async def test_a_post_on_a_connection_closed_meanwhile_is_not_retried(
    serve: Any, http_client: HttpClient
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(ok(b"warm"))
        await conn.request()
        await conn.close()

    server = await serve(handler)
    assert (await get(http_client, server)).body == b"warm"
    with pytest.raises(VenueConnectionError, match="connection closed by the server"):
        await http_client.request("POST", server.url("/orders"), deadline=soon(), json_body={})
    assert server.accepted == 1
    assert [request.method for request in server.requests] == ["GET", "POST"]


async def test_bytes_nobody_asked_for_make_a_connection_unusable(
    serve: Any, http_client: HttpClient
) -> None:
    answered = asyncio.Event()

    async def handler(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.send(ok(b"answer"))
            if conn.index == 1:  # then, once idle, an unsolicited one, as servers do
                await answered.wait()
                await conn.send(response("HTTP/1.1 408 Request Timeout", "Content-Length: 0"))

    server = await serve(handler)
    assert (await get(http_client, server)).body == b"answer"
    (idle,) = pooled(http_client)
    answered.set()
    await until(lambda: idle.should_close)  # the stray bytes have arrived
    assert (await get(http_client, server)).status == 200  # not the 408: a new connection
    assert not idle.is_connected()
    assert server.accepted == 2


# -- malformed answers ------------------------------------------------------------------

CHUNKED_HEAD = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

MALFORMED = {
    "not HTTP": (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "malformed answer: Bad status line$"),
    "HTTP/2 preface": (b"HTTP/2 200\r\n\r\n", "Bad status line"),
    "status not a number": (b"HTTP/1.1 abc OK\r\n\r\n", "Bad status line"),
    "status with 4 digits": (b"HTTP/1.1 2000 OK\r\n\r\n", "Bad status line"),
    "status not ASCII digits": (b"HTTP/1.1 2\xb20 OK\r\n\r\n", "Bad status line"),
    "header without colon": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nno colon here\r\n\r\n",
        "malformed answer: Invalid header token$",
    ),
    "bad Content-Length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\n",
        "Invalid character in Content-Length$",
    ),
    "negative Content-Length": (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
    "Content-Length of 5,000 digits": (
        b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
        "malformed answer: Content-Length overflow$",  # and not the 5,000 digits
    ),
    "Content-Length not ASCII digits": (
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb9\r\n\r\n",
        "Invalid character in Content-Length",
    ),
    "head over 64 KiB": (
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000,
        "Got more than 8190 bytes when reading$",  # and not the bytes
    ),
    "head over 64 KiB, complete in one read": (
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\nContent-Length: 0\r\n\r\n",
        "Got more than 8190 bytes when reading$",
    ),
    "bad chunk size": (CHUNKED_HEAD.encode() + b"zz\r\nhello\r\n0\r\n\r\n", "chunk size$"),
    "negative chunk size": (
        CHUNKED_HEAD.encode() + b"-5\r\nhello\r\n0\r\n\r\n",
        "Invalid character in chunk size",
    ),
    "chunk size with 0x": (CHUNKED_HEAD.encode() + b"0x5\r\nhello\r\n0\r\n\r\n", "chunk size"),
    "chunk size line too long": (CHUNKED_HEAD.encode() + b"5" * 2000, "Chunk size overflow$"),
    "chunk without CRLF": (
        CHUNKED_HEAD.encode() + b"5\r\nhelloXX0\r\n\r\n",
        "Expected LF after chunk data",
    ),
    "more than Content-Length": (ok(b"abc") + b"def", "malformed answer"),
}


@pytest.mark.parametrize(("raw", "message"), MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_answers_are_clear_connection_errors(
    serve: Any, http_client: HttpClient, raw: bytes, message: str
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(raw)
        await conn.until_client_closes()

    server = await serve(handler)
    with pytest.raises(VenueConnectionError, match=message):
        await get(http_client, server)
    assert not pooled(http_client)
    async with asyncio.timeout(2):
        await server.conns[0].finished


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"HTTP/1.1 200 OK\r\nContent-",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        CHUNKED_HEAD.encode() + b"5\r\nhel",
        CHUNKED_HEAD.encode() + b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n",
    ],
    ids=["nothing", "half a head", "short body", "half a chunk", "half the trailers"],
)
async def test_an_answer_cut_short_is_a_connection_error(
    serve: Any, http_client: HttpClient, raw: bytes
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(raw)
        await conn.close()

    server = await serve(handler)
    with pytest.raises(VenueConnectionError, match="connection closed by the server"):
        await get(http_client, server)


# -- connecting -------------------------------------------------------------------------


async def test_connection_refused_names_host_and_port(http_client: HttpClient) -> None:
    with socket.socket() as bound:  # bound, not listening: nobody else takes the port
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        with pytest.raises(VenueConnectionError, match=f"cannot connect to 127.0.0.1:{port}"):
            await http_client.request("GET", f"http://127.0.0.1:{port}/", deadline=soon())


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/x",
        "http:///nohost",
        "127.0.0.1:80/x",
        "http://127.0.0.1:port/x",
    ],
)
async def test_unsupported_urls(http_client: HttpClient, url: str) -> None:
    with pytest.raises(VenueConnectionError, match="unsupported URL"):
        await http_client.request("GET", url, deadline=soon())


async def test_blanks_and_line_breaks_in_a_url_are_escaped(
    serve: Any, http_client: HttpClient
) -> None:
    server = await serve(answering(ok(b"1"), ok(b"2")))
    await get(http_client, server, "/a b")
    await get(http_client, server, "/a\r\nX-Injected: 1")
    assert [r.target for r in server.requests] == ["/a%20b", "/aX-Injected:%201"]
    assert "x-injected" not in server.requests[1].headers


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Api-Key": "secret\r\nX-Injected: 1"},
        {"X-Api-Key": "secret\nX-Injected: 1"},
        {"X-Injected: 1\r\nX-Api-Key": "secret"},
    ],
)
async def test_header_with_a_line_break_is_refused_and_not_sent(
    serve: Any, http_client: HttpClient, headers: dict[str, str]
) -> None:
    server = await serve(answering(ok(b"")))
    with pytest.raises(VenueConnectionError, match="Forbidden control character"):
        await get(http_client, server, headers=headers)
    assert server.requests == []


async def test_params_and_bodies_are_encoded(serve: Any, http_client: HttpClient) -> None:
    server = await serve(answering(ok(b"1"), ok(b"2"), ok(b"3"), ok(b"4")))
    await get(
        http_client,
        server,
        "/positions?z=1",
        params={"a": "x y&", "b": 2, "c": "é"},
        headers={"X-Api-Key": "k1", "Accept": "application/json"},
    )
    await get(http_client, server, "/p", params={"only": "one"})
    payload = {"account": "19816", "qty": [1, 2.5], "note": "é"}
    await http_client.request("POST", server.url("/orders"), deadline=soon(), json_body=payload)
    await http_client.request(
        "PUT", server.url("/form"), deadline=soon(), form={"a": "b&c", "d": "e f"}
    )
    query, only, posted, form = server.requests
    assert query.target == "/positions?z=1&a=x+y%26&b=2&c=%C3%A9"
    assert query.headers["x-api-key"] == "k1"
    assert query.headers["accept"] == "application/json"
    assert only.target == "/p?only=one"
    assert (posted.method, posted.target) == ("POST", "/orders")
    assert posted.headers["content-type"] == "application/json"
    assert posted.headers["content-length"] == str(len(posted.body))
    assert json.loads(posted.body) == payload
    assert (form.method, form.body) == ("PUT", b"a=b%26c&d=e+f")
    assert form.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form.headers["content-length"] == "13"
    assert server.accepted == 1


async def test_targets_as_sent_for_every_url_shape(serve: Any, http_client: HttpClient) -> None:
    server = await serve(answering(*(ok(b"x") for _ in range(4))))
    origin = server.url("/").removesuffix("/")
    for url in (f"{origin}/a/b?c=1#frag", f"{origin}?only=query", origin, f"{origin}/a%2Fb"):
        response = await http_client.request("GET", url, deadline=soon())
        assert response.status == 200
    assert [r.target for r in server.requests] == ["/a/b?c=1", "/?only=query", "/", "/a%2Fb"]
    assert server.accepted == 1


# -- TLS --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "riskmon test server")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    files = TlsFiles(directory / "cert.pem", directory / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_tls_with_a_trusted_certificate(serve: Any, tls_files: TlsFiles, host: str) -> None:
    server = await serve(
        answering(ok(b"secure one"), ok(gzip.compress(b"secure two"), "Content-Encoding: gzip")),
        tls=tls_files.server_context(),
    )
    client = AiohttpClient(transport=VenueTransport(tls=TlsConfig(ca_file=tls_files.cert)))
    try:
        url = server.url("/tls", scheme="https", host=host)
        assert (await client.request("GET", url, deadline=soon())).body == b"secure one"
        assert (await client.request("GET", url, deadline=soon())).body == b"secure two"
        assert server.accepted == 1
        assert server.requests[0].headers["host"] == f"{host}:{server.port}"
    finally:
        await client.aclose()


async def test_tls_refuses_an_untrusted_certificate(
    serve: Any, http_client: HttpClient, tls_files: TlsFiles
) -> None:
    server = await serve(answering(ok(b"never")), tls=tls_files.server_context())
    with pytest.raises(
        VenueConnectionError,
        match=r"cannot connect to 127\.0\.0\.1:\d+: .*certificate verify failed",
    ):
        await http_client.request("GET", server.url(scheme="https"), deadline=soon())
    assert server.requests == []


# -- the connection cap -----------------------------------------------------------------


async def test_max_connections_caps_concurrent_requests(serve: Any) -> None:
    both_busy = asyncio.Event()
    waiting = 0

    async def handler(conn: Conn) -> None:
        nonlocal waiting
        while (request := await conn.request()) is not None:
            waiting += 1
            if waiting == 2:
                both_busy.set()
            await both_busy.wait()  # hold the first answers until two requests are in flight
            await conn.send(ok(request.target.encode()))

    server = await serve(handler)
    client = AiohttpClient(max_connections=2)
    try:
        async with asyncio.timeout(5):
            answers = await asyncio.gather(*(get(client, server, f"/{i}") for i in range(8)))
        assert [answer.body for answer in answers] == [f"/{i}".encode() for i in range(8)]
        assert server.accepted == 2
        assert len(pooled(client)) == 2
    finally:
        await client.aclose()


async def test_an_idle_connection_to_another_origin_does_not_hold_the_only_slot(serve: Any) -> None:
    first = await serve(answering(ok(b"first")))
    second = await serve(answering(ok(b"second")))
    client = AiohttpClient(max_connections=1)
    try:
        assert (await get(client, first)).body == b"first"
        async with asyncio.timeout(2):  # an idle connection elsewhere does not hold its slot
            assert (await get(client, second)).body == b"second"
    finally:
        await client.aclose()


# -- endless answers ----------------------------------------------------------------------


async def endless(conn: Conn, head: bytes, unit: bytes) -> None:
    """Answer with `head`, then `unit` again and again until the client hangs up."""
    await conn.request()
    await conn.send(head)
    while not conn.writer.is_closing():
        await conn.send(unit * 64)


@pytest.mark.parametrize(
    ("head", "unit"),
    [
        (CHUNKED_HEAD.encode() + b"3\r\nabc\r\n0\r\n", b"X-Trailer: " + b"t" * 100 + b"\r\n"),
        (CHUNKED_HEAD.encode(), b"400\r\n" + b"c" * 1024 + b"\r\n"),
        (b"HTTP/1.1 200 OK\r\n", b"X-Header: " + b"h" * 100 + b"\r\n"),
    ],
    ids=["trailers", "chunks", "headers"],
)
async def test_an_endless_answer_is_cut_off(
    serve: Any, http_client: HttpClient, head: bytes, unit: bytes
) -> None:
    server = await serve(lambda conn: endless(conn, head, unit))
    with pytest.raises((VenueConnectionError, SnapshotParseError)) as caught:
        await get(http_client, server, max_bytes=100_000)
    assert len(str(caught.value)) < 300
    async with asyncio.timeout(2):
        await server.conns[0].finished  # the client hung up


async def test_connections_use_tcp_keepalive(serve: Any, http_client: HttpClient) -> None:
    """A pooled connection a firewall dropped silently is noticed by the kernel."""
    server = await serve(answering(ok(b"x")))
    await get(http_client, server)
    (connection,) = pooled(http_client)
    sock = connection.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1


async def test_origins_are_parsed_once_and_every_path_goes_where_it_says(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The aiohttp client parses each origin once and puts the request's path into it
    (bench/poll_cost.py); nothing is kept per URL (a parsed URL per account cost 1 KB,
    bench/memory.py), the table of origins starts again when full, and a path yarl would
    change (escapes, dot segments, a query) is still sent as yarl sends it."""
    monkeypatch.setattr("monitor.venues.http_aiohttp._ORIGINS_HELD", 1)
    paths = ["/a", "/v1/accounts/100001/balances", "/a%2Fb", "/x/../y", "/q?z=1", "/sp ace"]
    server = await serve(answering(*(ok(str(i).encode()) for i in range(len(paths) + 1))))
    other = await serve(answering(ok(b"other")))
    client = AiohttpClient()
    try:
        answers = [await get(client, server, path) for path in paths]
        assert len(client._origins) == 1
        assert (await get(client, other, "/b")).body == b"other"
        assert len(client._origins) == 1  # the first origin gave way
        assert (await get(client, server, "/a")).body == str(len(paths)).encode()
        assert [r.target for r in server.requests] == [
            "/a",
            "/v1/accounts/100001/balances",
            "/a%2Fb",
            "/y",
            "/q?z=1",
            "/sp%20ace",
            "/a",
        ]
        assert [r.target for r in other.requests] == ["/b"]
        assert [a.body for a in answers] == [str(i).encode() for i in range(len(paths))]
        assert answers[0].url == server.url("/a")  # the URL as given, not the parsed one
    finally:
        await client.aclose()
