"""The default venue transport: aiohttp's client, one session per venue.

Connections are pooled and kept alive (HTTP keep-alive, and TCP keep-alive so a
connection a firewall dropped silently is noticed); the proxy is the venue's
`proxy_url`, else HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment; the TLS
context carries the venue's `ca_file` and client certificate. A body is read chunk by
chunk and reading stops once it passes `max_bytes`.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.connector import Connection
from aiohttp.helpers import get_env_proxy_for_url
from aiohttp.tracing import Trace
from yarl import URL

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

# seconds an idle pooled connection is kept: longer than any poll interval worth pooling for
KEEPALIVE_SECONDS = 60.0
# origins whose parsed form and proxy are kept (one or two per venue); then the table
# starts again
_ORIGINS_HELD = 1_000
# a scheme and host[:port] with nothing yarl would change or read further
_PLAIN_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?")
# a path in the form yarl would give it: nothing to escape, no query or fragment
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@/-]*")


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector, minus one hazard: aiohttp (3.14) hands out an idle pooled
    connection on which the server sent bytes nobody asked for (an unsolicited
    `408 Request Timeout` before it closes, say) and reads them as the next request's
    answer. Such a connection is closed instead."""

    async def _get(self, key: ConnectionKey, traces: list[Trace]) -> Connection | None:
        idle = self._conns.get(key)
        while idle and idle[0][0].should_close:  # super()._get takes them from the left
            idle.popleft()[0].close()
        return await super()._get(key, traces)


class AiohttpClient(HttpClient):
    _session: aiohttp.ClientSession | None = None
    # origin -> (its yarl URL, proxy, proxy credentials), found once per origin.
    # The proxy: aiohttp's trust_env looks it (and ~/.netrc) up in a worker thread for
    # every request, which cost three quarters of a poll's CPU.
    # The URL: aiohttp parses a str URL at every request (2.1 us; yarl's cache holds the
    # last 128 URLs, not an account each), and one parsed URL kept per account cost 1 KB
    # of memory each (bench/memory.py). The origin is parsed once and the path put in it
    # (0.4 us): a URL object aiohttp takes as it is.
    _origins: dict[str, tuple[URL | None, URL | str | None, aiohttp.BasicAuth | None]]

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._origins = {}

    def _target(self, url: str) -> tuple[URL | str, URL | str | None, aiohttp.BasicAuth | None]:
        slash = url.find("/", url.find("//") + 2)
        origin, path = (url, "") if slash < 0 else (url[:slash], url[slash:])
        entry = self._origins.get(origin)
        if entry is None:
            proxy, proxy_auth = self._proxy(origin)
            try:
                base = URL(origin) if _PLAIN_ORIGIN.fullmatch(origin) else None
            except ValueError:
                base = None
            entry = (base, proxy, proxy_auth)
            if len(self._origins) >= _ORIGINS_HELD:
                self._origins.clear()
            self._origins[origin] = entry
        base, proxy, proxy_auth = entry
        if base is not None and _PLAIN_PATH.fullmatch(path) and "/." not in path:
            return base.with_path(path, encoded=True), proxy, proxy_auth
        try:  # what the path would mean to yarl (escapes, dot segments, a query): its own
            return URL(url), proxy, proxy_auth
        except ValueError:  # aiohttp's own error for it, at the request
            return url, proxy, proxy_auth

    def _proxy(self, origin: str) -> tuple[URL | str | None, aiohttp.BasicAuth | None]:
        if self.transport.proxy_url is not None:
            return self.transport.proxy_url, None
        try:
            found: tuple[URL | None, aiohttp.BasicAuth | None] = get_env_proxy_for_url(URL(origin))
        except (LookupError, ValueError):
            found = (None, None)
        return found

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
        session = self._session
        if session is None or session.closed:
            session = self._session = self._open()
        target, proxy, proxy_auth = self._target(url)
        try:
            async with session.request(
                method,
                target,
                headers=headers,
                params=params,
                json=json_body,
                data=form,
                allow_redirects=False,
                proxy=proxy,
                proxy_auth=proxy_auth,
            ) as response:
                status = response.status
                declared = declared_size(response.headers.get("content-length"))
                check_size(declared, max_bytes, status)
                if declared is not None and response.headers.get("content-encoding") is None:
                    # the length is known and within the cap: one read (aiohttp stops at it)
                    return HttpResponse(status, response.headers, await response.read(), url)
                body = await read_capped(response.content.iter_any(), max_bytes, status)
                return HttpResponse(status, response.headers, body, url)
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            raise VenueConnectionError(f"TLS failed: {self.scrub(_reason(exc))}") from None
        except aiohttp.ClientHttpProxyError as exc:
            raise VenueConnectionError(
                f"the proxy refused the connection: {exc.status} {self.scrub(exc.message)}"
            ) from None
        except aiohttp.ClientProxyConnectionError as exc:
            raise VenueConnectionError(f"proxy unreachable: {self.scrub(_reason(exc))}") from None
        except aiohttp.ServerDisconnectedError:
            raise VenueConnectionError(f"connection failed: {closed_early(url)}") from None
        except (aiohttp.ClientError, ValueError) as exc:
            # ValueError: aiohttp's parser on some malformed answers (a bad header)
            raise VenueConnectionError(f"connection failed: {self.scrub(_reason(exc))}") from None

    def _open(self) -> aiohttp.ClientSession:
        tls = self.transport.tls
        connector = _Connector(
            limit=self.max_connections,
            keepalive_timeout=KEEPALIVE_SECONDS,
            ssl=client_ssl_context(tls) if tls is not None else True,
            socket_factory=_keepalive_socket,
        )
        return aiohttp.ClientSession(
            connector=connector,
            headers={"user-agent": USER_AGENT},
            # the deadline is HttpClient.request's, one timer for the whole call
            timeout=aiohttp.ClientTimeout(total=None),
            cookie_jar=aiohttp.DummyCookieJar(),  # venue APIs take keys, not cookies
            trust_env=False,  # the environment's proxies: _proxy()
            auto_decompress=True,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _keepalive_socket(addr_info: AddrInfoType) -> socket.socket:
    family, kind, proto, _name, _address = addr_info
    sock = socket.socket(family=family, type=kind, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def _reason(exc: BaseException) -> str:
    """What went wrong, in one short line: aiohttp's parser errors quote the hostile
    bytes they stopped at (a 5,000-digit Content-Length whole), and its response
    errors carry the request URL."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error.strerror or type(exc.os_error).__name__
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            cause = str(exc.certificate_error)
        return f"cannot connect to {exc.host}:{exc.port}: {cause}"
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return f"unsupported URL {_short(str(exc.args[0]) if exc.args else '')}"
    if isinstance(exc, aiohttp.ClientPayloadError):
        text = str(exc)
        if "Not enough data" in text:
            return "connection closed by the server before the answer was complete"
        return f"malformed answer body: {_short(text)}"
    if isinstance(exc, aiohttp.ClientResponseError):  # the parser's: no status to speak of
        return f"malformed answer: {_short(exc.message)}"
    return _short(str(exc)) or type(exc).__name__


# "400, message='...', url=..." of aiohttp's parser errors, the message nested once more
# inside a payload error's text
_STATUS_MESSAGE = re.compile(r"^(?:.*?<\w+: )?\d{3}, message[:=]\s*['\"]?", re.DOTALL)
# where aiohttp's parser messages start quoting the answer's bytes
_QUOTED_BYTES = re.compile(r"""[:\s]*\bb['"].*""", re.DOTALL)


def _short(text: str, limit: int = 160) -> str:
    """The first line of `text` without quoted answer bytes, cut at `limit` characters."""
    text = _STATUS_MESSAGE.sub("", text.strip())
    line = _QUOTED_BYTES.sub("", text).strip().split("\n", 1)[0].rstrip(":'\">, ")
    return line if len(line) <= limit else line[: limit - 3] + "..."
