"""Who may use the HTTP API: the bearer token, and writes only where they are safe.

One aiohttp middleware over the whole application, so every route (those added later
included, 404s too) is covered without each handler knowing:

- with `http.bearer_token_file`, every path but the probes (`/healthz`, `/readyz`,
  `/livez`: the kubelet calls them without credentials) answers 401 with
  `WWW-Authenticate: Bearer` unless the request carries `Authorization: Bearer <token>`;
  the token is compared in constant time (`hmac.compare_digest`) with the file's
  content, looked at on every request, so a rotated file takes effect at once;
- without it, a write (any method but GET and HEAD) is refused with 403 unless the
  listener is loopback: only processes on the host itself can reach that one.

Neither the token nor what a client sent is ever logged or echoed in a response.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from typing import Final

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from monitor import schema
from monitor.config.secret import Secret, SecretUnavailable

__all__ = ["OPEN_PATHS", "ApiAuth", "auth_middleware", "is_loopback_listen"]

log = structlog.get_logger("riskmon.api")

#: The probes: answered to anyone, as the kubelet and Docker's HEALTHCHECK send no token.
OPEN_PATHS: Final = frozenset({"/healthz", "/readyz", "/livez"})
READ_METHODS: Final = frozenset({"GET", "HEAD"})
_CHALLENGE: Final = 'Bearer realm="riskmon"'


def is_loopback_listen(listen: str) -> bool:
    """Whether `HOST:PORT` listens on the loopback interface only (127.0.0.0/8, ::1,
    localhost); 0.0.0.0 and :: are every interface, so not."""
    host = schema.listen_address(listen).host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to may change


@dataclass(slots=True)
class ApiAuth:
    """What the middleware enforces: the token (None: no token configured) and whether
    the listener is loopback."""

    token: Secret | None
    loopback: bool
    _unreadable: bool = False  # the token file could not be read (logged once)

    def current_token(self) -> bytes | None:
        """The token in the file now; None when it cannot be read (every request is
        then refused: failing open would serve every balance to anyone)."""
        assert self.token is not None
        try:
            value = self.token.get(fresh=True)
        except SecretUnavailable as exc:
            if not self._unreadable:
                log.error("the API token cannot be read; refusing every request", error=str(exc))
            self._unreadable = True
            return None
        if self._unreadable:
            log.info("the API token can be read again")
        self._unreadable = False
        return value.encode() if value else None

    def authorized(self, header: str | None) -> bool:
        """Whether an `Authorization` header value carries the token."""
        if header is None:
            return False
        scheme, _, presented = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        expected = self.current_token()
        if expected is None:
            return False
        return hmac.compare_digest(presented.strip().encode(), expected)


def _refuse(status: int, message: str, *, challenge: str | None = None) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if challenge is not None:
        headers["WWW-Authenticate"] = challenge
    return web.json_response({"error": message}, status=status, headers=headers)


def auth_middleware(auth: ApiAuth) -> Middleware:
    """The middleware enforcing `auth` (see the module's docstring)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS and request.method in READ_METHODS:
            return await handler(request)
        if auth.token is not None:
            header = request.headers.get("Authorization")
            if not auth.authorized(header):
                if header is None:
                    return _refuse(
                        401, "this needs Authorization: Bearer <token>", challenge=_CHALLENGE
                    )
                return _refuse(
                    401,
                    "the bearer token was not accepted",
                    challenge=f'{_CHALLENGE}, error="invalid_token"',
                )
        elif request.method not in READ_METHODS and not auth.loopback:
            return _refuse(
                403,
                "writes need http.bearer_token_file when the API listens beyond loopback",
            )
        return await handler(request)

    return middleware
