"""The HTTP seam every adapter talks through: one client per venue, a size cap and one
deadline per call, and the same named errors whichever library carries the request.

Two implementations of one interface: aiohttp's client (`http_aiohttp.py`, the
default: pooled keep-alive connections, proxies from the environment or `proxy_url`,
a private CA and a client certificate) and httpx's (`http_httpx.py`, `http_client:
httpx`, for a venue that wants HTTP/2). The request budget, not CPU, limits how often a
venue is polled, so the client is chosen for what a brokerage network needs.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from monitor import __version__
from monitor.config.model import VenueConfig, VenueTransport
from monitor.errors import PollDeadlineExceeded, SnapshotParseError, VenueConnectionError

# moved to the shared package; the venues import it from here
from monitor.infra.retry_after import retry_after_seconds as retry_after_seconds
from monitor.schema import redact_userinfo

USER_AGENT = f"riskmon/{__version__}"


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes
    url: str


class HttpClient(abc.ABC):
    """One venue's pooled HTTP client, shared by its adapter's calls."""

    def __init__(
        self, *, max_connections: int = 256, transport: VenueTransport | None = None
    ) -> None:
        self.max_connections = max_connections
        self.transport = transport or VenueTransport()

    async def request(
        self,
        method: str,
        url: str,
        *,
        deadline: float,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str | int] | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        max_bytes: int = 1 << 20,
    ) -> HttpResponse:
        """Send one request; the answer must arrive, whole, before `deadline` (loop time).

        Raises VenueConnectionError (connect, TLS, proxy, reset, drop, malformed answer),
        PollDeadlineExceeded, or SnapshotParseError for a body larger than `max_bytes`
        (reading stops at the cap).
        """
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise PollDeadlineExceeded("deadline passed before the request was sent")
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to cancel at the deadline
            raise RuntimeError("HttpClient.request must run in a task")
        expiry = _Expiry(task)
        timer = loop.call_at(deadline, expiry.fire)
        try:
            response = await self._send(
                method, url, remaining, headers, params, json_body, form, max_bytes
            )
        except asyncio.CancelledError:
            if expiry.expired():
                raise PollDeadlineExceeded(f"no answer within {remaining:.3g}s") from None
            raise
        except TimeoutError:  # the library's own timeout (httpx's)
            expiry.expired()
            raise PollDeadlineExceeded(f"no answer within {remaining:.3g}s") from None
        else:
            expiry.expired()
        finally:
            timer.cancel()
        if response.status == 407:  # only a proxy answers 407: not the venue's answer
            raise VenueConnectionError(
                "the proxy refused the request: 407 Proxy Authentication Required "
                "(the credentials in proxy_url, or in HTTPS_PROXY / HTTP_PROXY)"
            )
        return response

    @abc.abstractmethod
    async def _send(
        self,
        method: str,
        url: str,
        remaining: float,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str | int] | None,
        json_body: Any,
        form: Mapping[str, str] | None,
        max_bytes: int,
    ) -> HttpResponse:
        """One request and its whole answer; TimeoutError past `remaining` seconds."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the pooled connections."""

    def scrub(self, text: str) -> str:
        """`text` (a library's error message) without the proxy's credentials."""
        proxy = self.transport.proxy_url
        if proxy is None or "@" not in proxy:
            return text
        return text.replace(proxy, redact_userinfo(proxy)).replace(
            proxy.split("://", 1)[-1].rsplit("@", 1)[0], "***"
        )


class _Expiry:
    """What `asyncio.timeout` does for one request, at a third of its CPU (it is entered
    once per poll): the task is cancelled at the deadline, and that cancellation, told
    apart from any other the task gets, becomes PollDeadlineExceeded."""

    __slots__ = ("cancelling", "fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.cancelling = task.cancelling()
        self.fired = False

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()

    def expired(self) -> bool:
        """Whether the deadline cancelled the task; that cancellation is withdrawn (as
        `asyncio.timeout` withdraws its own), so a caller's own stands alone."""
        return self.fired and self.task.uncancel() <= self.cancelling


def closed_early(url: str) -> str:
    """The message for a connection the server closed before answering; over TLS 1.3
    that is also how a venue refuses a client certificate (its alert comes after the
    handshake, and is not always read before the close)."""
    message = "connection closed by the server before the answer was complete"
    if url.startswith("https://"):
        message += (
            " (over TLS: a venue that wants a client certificate refuses a missing or "
            "unknown one this way; see the venue's tls: cert_file)"
        )
    return message


def http_client_for(venue: VenueConfig) -> HttpClient:
    """The client `venue` asked for (`http_client`), with its proxy and TLS settings."""
    if venue.transport.http_client == "httpx":
        from monitor.venues.http_httpx import HttpxClient

        return HttpxClient(max_connections=venue.max_concurrency, transport=venue.transport)
    from monitor.venues.http_aiohttp import AiohttpClient

    return AiohttpClient(max_connections=venue.max_concurrency, transport=venue.transport)


def declared_size(declared: str | None) -> int | None:
    """A Content-Length's value; one of too many digits for `int()` (over 4,300) is
    larger than any limit."""
    if not declared or not declared.isascii() or not declared.isdigit():
        return None
    return int(declared) if len(declared) <= 15 else 10**15


def check_size(size: int | None, max_bytes: int, status: int) -> None:
    if size is not None and size > max_bytes:
        raise SnapshotParseError(
            f"response of {size} bytes or more is larger than the {max_bytes}-byte limit "
            "(max_response_bytes); stopped reading",
            status=status,
        )


async def read_capped(chunks: AsyncIterator[bytes], max_bytes: int, status: int) -> bytes:
    """A body read chunk by chunk as it arrives; reading stops (SnapshotParseError) as
    soon as it passes `max_bytes`."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        check_size(size, max_bytes, status)
        parts.append(chunk)
    return b"".join(parts)
