"""The HTTP seam every adapter talks through: httpx over the aiohttp transport.

httpx is the request/response API; its default transport costs about 1 ms of CPU per
request here, the aiohttp transport about 0.15 ms (bench/http_clients.py prints both),
so the aiohttp transport is the default. Bodies are read with a size cap, and the whole
exchange runs under one deadline, so a slow or huge answer can never stall a poll.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from monitor import __version__
from monitor.errors import PollDeadlineExceeded, SnapshotParseError, VenueConnectionError

Backend = Literal["aiohttp", "httpx"]


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: httpx.Headers
    body: bytes
    url: str


class HttpClient:
    """One pooled client shared by every adapter of a process."""

    def __init__(self, *, max_connections: int = 256, backend: Backend = "aiohttp") -> None:
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        transport: httpx.AsyncBaseTransport | None = None
        if backend == "aiohttp":
            from httpx_aiohttp import AiohttpTransport

            transport = AiohttpTransport(limits=limits, trust_env=False)
        self._client = httpx.AsyncClient(
            transport=transport,
            limits=limits,
            headers={"user-agent": f"riskmon/{__version__}"},
            follow_redirects=False,
            trust_env=False,
        )

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
            async with asyncio.timeout(remaining):
                async with self._client.stream(
                    method,
                    url,
                    headers=headers,
                    params=params,
                    json=json_body,
                    data=form,
                    timeout=httpx.Timeout(remaining),
                ) as response:
                    body = await _read_capped(response, max_bytes)
        except TimeoutError:
            raise PollDeadlineExceeded(f"no answer within {remaining:.3g}s") from None
        except httpx.TimeoutException:
            raise PollDeadlineExceeded(f"no answer within {remaining:.3g}s") from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise VenueConnectionError(f"connection failed: {reason}") from None
        return HttpResponse(response.status_code, response.headers, body, url)

    async def aclose(self) -> None:
        await self._client.aclose()


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise SnapshotParseError(
            f"response of {int(declared)} bytes is larger than the {max_bytes}-byte limit",
            status=response.status_code,
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > max_bytes:
            raise SnapshotParseError(
                f"response larger than the {max_bytes}-byte limit", status=response.status_code
            )
        chunks.append(chunk)
    return b"".join(chunks)


def retry_after_seconds(headers: httpx.Headers, *, now: float | None = None) -> float | None:
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
