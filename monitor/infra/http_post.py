"""POSTing JSON and reading a bounded answer: the HTTP a sender of events needs.

`JsonPoster` owns one pooled aiohttp session (keep-alive between posts, redirects not
followed: a redirected events URL is an answer to report, not to follow). An answer of
any status is a `PostAnswer` (its body cut at `max_bytes`); no answer at all
(connection refused or reset, TLS, timeout) is `PostFailed`, whose message is the
error's type and the library's text.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from multidict import CIMultiDict

__all__ = ["JsonPoster", "PostAnswer", "PostFailed"]


@dataclass(frozen=True, slots=True)
class PostAnswer:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes  # at most the post's `max_bytes`


class PostFailed(Exception):
    """No answer arrived; the message is `Type: text` (or the type alone)."""


class JsonPoster:
    """`async with JsonPoster() as poster:` then `await poster.post(...)`; `tls` is the
    context for https:// (the system's CAs when None)."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> JsonPoster:
        connector = aiohttp.TCPConnector(ssl=self._tls if self._tls is not None else True)
        self._session = aiohttp.ClientSession(connector=connector)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        within: float,
        max_bytes: int,
        headers: Mapping[str, str] | None = None,
    ) -> PostAnswer:
        """POST `body` as application/json; the answer, whole within `within` seconds."""
        if self._session is None:
            raise RuntimeError("JsonPoster is not open: use `async with`")
        sent = {"Content-Type": "application/json", **(headers or {})}
        try:
            async with self._session.post(
                url,
                data=body,
                headers=sent,
                timeout=aiohttp.ClientTimeout(total=within),
                allow_redirects=False,
            ) as response:
                answer = await response.content.read(max_bytes)
                return PostAnswer(response.status, CIMultiDict(response.headers), answer)
        except (aiohttp.ClientError, TimeoutError) as exc:
            text = str(exc)
            raise PostFailed(
                f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            ) from None
