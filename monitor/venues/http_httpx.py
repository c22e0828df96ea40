"""`http_client: httpx`: httpx's client for a venue that wants HTTP/2 (with `h2`
installed; HTTP/1.1 otherwise), with the same proxy, TLS and size-cap behaviour as the
default aiohttp transport."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import httpx

from monitor.config.venue_transport import client_ssl_context
from monitor.errors import VenueConnectionError
from monitor.venues.http import (
    USER_AGENT,
    HttpClient,
    HttpResponse,
    check_size,
    closed_early,
    declared_size,
    read_capped,
)


class HttpxClient(HttpClient):
    _client: httpx.AsyncClient | None = None

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
        client = self._client
        if client is None:
            client = self._client = self._open()
        try:
            async with client.stream(
                method,
                url,
                headers=headers,
                params=params,
                json=json_body,
                data=form,
                timeout=httpx.Timeout(remaining),
            ) as response:
                status = response.status_code
                check_size(declared_size(response.headers.get("content-length")), max_bytes, status)
                body = await read_capped(response.aiter_bytes(), max_bytes, status)
                return HttpResponse(status, response.headers, body, url)
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.ProxyError as exc:
            raise VenueConnectionError(f"proxy failed: {self.scrub(_reason(exc))}") from None
        except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
            if "SSL" in str(exc).upper() or not str(exc) or "closed" in str(exc):
                raise VenueConnectionError(f"connection failed: {closed_early(url)}") from None
            raise VenueConnectionError(f"connection failed: {self.scrub(_reason(exc))}") from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            reason = self.scrub(_reason(exc))
            if "SSL" in reason or "CERTIFICATE" in reason.upper():
                raise VenueConnectionError(f"TLS failed: {reason}") from None
            raise VenueConnectionError(f"connection failed: {reason}") from None

    def _open(self) -> httpx.AsyncClient:
        proxy = self.transport.proxy_url
        limits = httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_connections,
        )
        return httpx.AsyncClient(
            limits=limits,
            headers={"user-agent": USER_AGENT},
            follow_redirects=False,
            verify=client_ssl_context(self.transport.tls),
            proxy=proxy,
            trust_env=proxy is None,
            http2=importlib.util.find_spec("h2") is not None,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
