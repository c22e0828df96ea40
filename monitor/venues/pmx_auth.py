"""Polymarket Exchange auth: OAuth2 client credentials with a private-key JWT (RFC 7523).

The client signs a short-lived RS256 assertion (`iss` = `sub` = client_id, `aud` = the
token URL, a fresh `jti`) and trades it for an access token that lives about 180 s and
has no refresh token. Tokens are minted ahead of expiry, one mint in flight at a time.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from monitor.config import PolymarketAuthConfig, SecretUnavailable
from monitor.config.secret import digest_of, header_value_problem
from monitor.errors import (
    SnapshotParseError,
    VenueAuthError,
    VenueError,
    VenueRateLimited,
    VenueRequestError,
    VenueUnavailable,
)
from monitor.snapshot import to_decimal
from monitor.venues.http import HttpClient, HttpResponse, retry_after_seconds
from monitor.venues.limits import VenueLimits
from monitor.venues.wire import clip, decode_json, try_decode_json

ASSERTION_LIFETIME = 300.0  # the most the token endpoint accepts between iat and exp
RENEW_BEFORE_EXPIRY = 30.0
#: What a token lives when the answer does not say (or says nonsense), as documented.
DEFAULT_TOKEN_LIFETIME = 180.0
#: A token is renewed after an hour at the latest, whatever `expires_in` says.
MAX_TOKEN_LIFETIME = 3600.0
# RFC 6750's b64token: what `Authorization: Bearer` can carry.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

log = structlog.get_logger("riskmon.venues")
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str
    expires_at: float  # wall-clock seconds

    def __repr__(self) -> str:
        return f"AccessToken(expires_at={self.expires_at:.0f}, value hidden)"


class TokenProvider:
    """Hands out a valid access token, minting a new one shortly before expiry."""

    def __init__(
        self,
        config: PolymarketAuthConfig,
        http: HttpClient,
        *,
        audience: str,
        venue: str,
        limits: VenueLimits,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`limits`: the venue's: the token endpoint counts against its budget."""
        self.config = config
        self.http = http
        self.limits = limits
        self.audience = audience
        self.venue = venue
        self.clock = clock
        self._token: AccessToken | None = None
        self._minting: asyncio.Future[AccessToken] | None = None
        self._key: tuple[str, RSAPrivateKey] | None = None
        self.mints = 0

    async def token(self, deadline: float) -> AccessToken:
        current = self._token
        if current is not None and self.clock() < current.expires_at - RENEW_BEFORE_EXPIRY:
            return current
        return await self._mint_once(deadline)

    def invalidate(self, token: AccessToken) -> None:
        """The venue refused `token` (401): the next call mints a new one."""
        if self._token is token:
            self._token = None

    async def _mint_once(self, deadline: float) -> AccessToken:
        # One mint in flight: every caller that finds the token stale awaits the same one.
        if self._minting is None:
            self._minting = asyncio.ensure_future(self._mint(deadline))
            self._minting.add_done_callback(self._minted)
        return await asyncio.shield(self._minting)

    def _minted(self, future: asyncio.Future[AccessToken]) -> None:
        self._minting = None
        if not future.cancelled() and future.exception() is None:
            self._token = future.result()

    def assertion(self) -> str:
        """A fresh signed client assertion (unique `jti`, `exp` within 5 minutes)."""
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.config.client_id,
            "sub": self.config.client_id,
            "aud": self.config.token_url,
            "iat": now,
            "exp": now + int(ASSERTION_LIFETIME) - 60,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._private_key(), algorithm="RS256")

    def _private_key(self) -> RSAPrivateKey:
        try:
            pem = self.config.private_key.get()
        except SecretUnavailable as exc:
            raise VenueAuthError(str(exc), venue=self.venue) from None
        if self._key is not None and self._key[0] == pem:
            return self._key[1]
        try:
            key = load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError):
            raise VenueAuthError(
                f"{self.config.private_key.name} is not an unencrypted PEM private key",
                venue=self.venue,
            ) from None
        if not isinstance(key, RSAPrivateKey):
            raise VenueAuthError(
                f"{self.config.private_key.name} is not an RSA key (RS256 needs one)",
                venue=self.venue,
            )
        self._key = (pem, key)
        return key

    async def _mint(self, deadline: float) -> AccessToken:
        assertion = self.assertion()
        signed_with = self._key[0] if self._key is not None else None
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
            "audience": self.audience,
        }
        started = self.clock()
        try:
            async with self.limits.slot(deadline):
                response = await self.http.request(
                    "POST", self.config.token_url, form=form, deadline=deadline, max_bytes=64 * 1024
                )
        except VenueError as exc:
            exc.venue = self.venue
            exc.message = f"token request: {exc.message}"
            raise
        if response.status != 200:
            error = self._error(response)
            if isinstance(error, VenueAuthError) and signed_with is not None:
                error.credential_digest = digest_of(signed_with)
            raise error
        body = decode_json(response)
        token = body.get("access_token") if isinstance(body, dict) else None
        expires_in = body.get("expires_in") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise SnapshotParseError("token answer has no access_token", venue=self.venue)
        if not _BEARER_TOKEN.fullmatch(token):
            # It could not be sent (a line break would end the header); minting again at
            # once would get the same: an auth failure, which backs off.
            problem = header_value_problem(token) or "holds a character a bearer token cannot"
            raise VenueAuthError(f"token answer: the access_token {problem}", venue=self.venue)
        self.mints += 1
        return AccessToken(token, started + self._lifetime(expires_in))

    def _lifetime(self, expires_in: object) -> float:
        """Seconds the token lives: `expires_in` when it is a number of seconds from 1 to
        MAX_TOKEN_LIFETIME (a longer one is cut to it). Anything else (-1, "NaN", true,
        1e999) is the venue's documented DEFAULT_TOKEN_LIFETIME, with a warning: the
        token may still work, and one that expires earlier is refused with 401, which
        mints a new one."""
        if expires_in is None:
            return DEFAULT_TOKEN_LIFETIME
        seconds = None if isinstance(expires_in, bool) else to_decimal(expires_in)
        if seconds is None or seconds < 1:
            log.warning(
                "token answer: expires_in is not a number of seconds; assuming the default",
                venue=self.venue,
                expires_in=clip(repr(expires_in), 40),
                assumed_seconds=DEFAULT_TOKEN_LIFETIME,
            )
            return DEFAULT_TOKEN_LIFETIME
        if seconds > MAX_TOKEN_LIFETIME:
            log.warning(
                "token answer: expires_in is longer than riskmon keeps a token; cut",
                venue=self.venue,
                expires_in=clip(str(seconds), 40),
                assumed_seconds=MAX_TOKEN_LIFETIME,
            )
            return MAX_TOKEN_LIFETIME
        return float(seconds)

    def _error(self, response: HttpResponse) -> VenueError:
        body = try_decode_json(response)
        reason = ""
        if isinstance(body, dict):
            reason = clip(body.get("error_description") or body.get("error") or "")
        status = response.status
        what = f"token request refused with {status}" + (f": {reason}" if reason else "")
        context: dict[str, Any] = {"venue": self.venue, "status": status}
        if status in (400, 401, 403):
            return VenueAuthError(what, **context)
        if status == 429:
            return VenueRateLimited(
                what, retry_after=retry_after_seconds(response.headers), **context
            )
        if status >= 500:
            return VenueUnavailable(
                what, retry_after=retry_after_seconds(response.headers), **context
            )
        return VenueRequestError(what, **context)
