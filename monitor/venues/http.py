"""The HTTP seam every adapter talks through, with a size cap and one deadline per call.

Measured here against the simulator (`python -m bench.http_clients`), CPU per request on
this 2-core machine: riskmon's own HTTP/1.1 client (`monitor/venues/http1.py`) 0.07 ms,
aiohttp 0.13-0.16 ms, httpx 3.5 ms. A whole poll (HTTP, parsing, rules, metrics) has a
0.2 ms budget, so the default backend is the lean one; `backend="aiohttp"` and
`backend="httpx"` stay available, the latter where its features (proxies from the
environment, HTTP/2) matter more than CPU.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp

from monitor import __version__
from monitor.errors import PollDeadlineExceeded, SnapshotParseError, VenueConnectionError
from monitor.venues.http1 import Http1Pool

Backend = Literal["http1", "aiohttp", "httpx"]
USER_AGENT = f"riskmon/{__version__}"


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes
    url: str


class HttpClient:
    """One pooled client shared by every adapter of a process."""

    def __init__(
        self,
        *,
        max_connections: int = 256,
        backend: Backend = "http1",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.backend = backend
        self.tls = tls
        self._http1: Http1Pool | None = None
        self._session: aiohttp.ClientSession | None = None
        self._httpx: Any = None

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

        Raises VenueConnectionError (connect, reset, drop), PollDeadlineExceeded,
        or SnapshotParseError for a body larger than `max_bytes`.
        """
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise PollDeadlineExceeded("deadline passed before the request was sent")
        try:
            if self.backend == "http1":
                return await self._send_http1(
                    method, url, deadline, headers, params, json_body, form, max_bytes
                )
            send = self._send_httpx if self.backend == "httpx" else self._send_aiohttp
            return await send(method, url, remaining, headers, params, json_body, form, max_bytes)
        except TimeoutError:
            raise PollDeadlineExceeded(f"no answer within {remaining:.3g}s") from None

    async def _send_http1(
        self,
        method: str,
        url: str,
        deadline: float,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str | int] | None,
        json_body: Any,
        form: Mapping[str, str] | None,
        max_bytes: int,
    ) -> HttpResponse:
        pool = self._http1
        if pool is None:
            pool = self._http1 = Http1Pool(
                max_connections=self.max_connections, user_agent=USER_AGENT, tls=self.tls
            )
        body: bytes | None = None
        content_type = None
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            content_type = "application/json"
        elif form is not None:
            body = urlencode(form).encode()
            content_type = "application/x-www-form-urlencoded"
        status, response_headers, content = await pool.request(
            method,
            url,
            deadline=deadline,
            headers=headers,
            params=params,
            body=body,
            content_type=content_type,
            max_bytes=max_bytes,
        )
        return HttpResponse(status, response_headers, content, url)

    async def _send_aiohttp(
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
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                headers={"user-agent": USER_AGENT},
                trust_env=False,
            )
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                params=params,
                json=json_body,
                data=form,
                timeout=aiohttp.ClientTimeout(total=remaining),
                allow_redirects=False,
            ) as response:
                declared = response.content_length
                _check_size(declared, max_bytes, response.status)
                if declared is not None:
                    body = await response.read()
                else:
                    body = await _read_capped(response.content, max_bytes, response.status)
                return HttpResponse(response.status, response.headers, body, url)
        except aiohttp.ClientError as exc:
            reason = str(exc) or type(exc).__name__
            raise VenueConnectionError(f"connection failed: {reason}") from None

    async def _send_httpx(
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
        import httpx

        if self._httpx is None:
            limits = httpx.Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_connections,
            )
            self._httpx = httpx.AsyncClient(
                limits=limits, headers={"user-agent": USER_AGENT}, follow_redirects=False
            )
        try:
            async with (
                asyncio.timeout(remaining),
                self._httpx.stream(
                    method,
                    url,
                    headers=headers,
                    params=params,
                    json=json_body,
                    data=form,
                    timeout=httpx.Timeout(remaining),
                ) as response,
            ):
                declared = response.headers.get("content-length")
                _check_size(_declared_size(declared), max_bytes, response.status_code)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    _check_size(size, max_bytes, response.status_code)
                    chunks.append(chunk)
                return HttpResponse(response.status_code, response.headers, b"".join(chunks), url)
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise VenueConnectionError(f"connection failed: {reason}") from None

    async def aclose(self) -> None:
        if self._http1 is not None:
            await self._http1.aclose()
            self._http1 = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._httpx is not None:
            await self._httpx.aclose()
            self._httpx = None


def _declared_size(declared: str | None) -> int | None:
    """A Content-Length's value; one of too many digits for `int()` (over 4,300) is
    larger than any limit."""
    if not declared or not declared.isascii() or not declared.isdigit():
        return None
    return int(declared) if len(declared) <= 15 else 10**15


def _check_size(size: int | None, max_bytes: int, status: int) -> None:
    if size is not None and size > max_bytes:
        raise SnapshotParseError(
            f"response of {size} bytes or more is larger than the {max_bytes}-byte limit",
            status=status,
        )


async def _read_capped(stream: aiohttp.StreamReader, max_bytes: int, status: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.readany():
        size += len(chunk)
        _check_size(size, max_bytes, status)
        chunks.append(chunk)
    return b"".join(chunks)


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The server's retry hint: `retry-after-ms`, else `Retry-After` (seconds or a date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000
        except ValueError:
            value = -1
        if value >= 0:
            return value
    text = headers.get("retry-after")
    if text is None:
        return None
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds)
