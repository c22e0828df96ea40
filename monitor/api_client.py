"""Calling riskmon's own HTTP API from the shell (`riskmon silence`, `riskmon history`
...): where it is, its token and how to trust its certificate, all from the config's
`http` section, so a command needs nothing but `-c riskmon.yaml`.

    target = api_target(load_config("riskmon.yaml"))
    status, body = call_api(target, "GET", "/api/v1/alerts")
    status, body = call_api(target, "POST", "/api/v2/silences", {"matchers": [...]})

- the URL: `http.listen`, with 0.0.0.0 / :: read as this host's loopback, `https` with
  `http.tls`; `RISKMON_API_URL` overrides it (another host, a Kubernetes port-forward);
- the token: `http.bearer_token_file` (read at each call), sent as `Authorization:
  Bearer ...`; `RISKMON_API_TOKEN_FILE` overrides it;
- trust: `RISKMON_API_CA_FILE` (the CA that signed the server's certificate) if set;
  otherwise, for a server on this host, its own `http.tls.cert_file` pinned (trusted
  as itself: whoever answers with it holds its key, so the host name is not checked
  then); otherwise the system's CAs;
- a client certificate (`http.tls.client_ca_file` asks for one): `RISKMON_API_CERT_FILE`
  and `RISKMON_API_KEY_FILE`.

`ApiError` says what failed (unreachable, TLS, an unreadable token file) in words,
naming the URL and never the token; an answer, 401 or 403 included, is returned.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from monitor.api_tls import client_ssl_context
from monitor.config.model import Config
from monitor.config.secret import Secret, SecretUnavailable
from monitor.schema import listen_address

__all__ = ["ApiError", "ApiTarget", "api_target", "call_api", "call_api_async"]

TIMEOUT = 10.0  # seconds for a whole call


class ApiError(Exception):
    """A call to riskmon's API that did not get an answer (or not a JSON one)."""


@dataclass(frozen=True, slots=True)
class ApiTarget:
    """Where riskmon's API is and how to call it."""

    url: str  # the base, no trailing slash: https://127.0.0.1:9817
    token: Secret | None = None
    ssl_context: ssl.SSLContext | None = None

    def headers(self) -> dict[str, str]:
        if self.token is None:
            return {}
        try:
            return {"Authorization": f"Bearer {self.token.get(fresh=True)}"}
        except SecretUnavailable as exc:
            raise ApiError(str(exc)) from None


def api_target(config: Config, environ: Mapping[str, str] | None = None) -> ApiTarget:
    """The API of the riskmon that `config` runs (see the module's docstring)."""
    env = os.environ if environ is None else environ
    http = config.http
    scheme = "https" if http.tls is not None else "http"
    local = not env.get("RISKMON_API_URL")  # this host's own riskmon, by its config
    url = f"{scheme}://{_local_host(http.listen)}" if local else env["RISKMON_API_URL"]
    token = http.bearer_token
    if env.get("RISKMON_API_TOKEN_FILE"):
        token = Secret.file("RISKMON_API_TOKEN_FILE", Path(env["RISKMON_API_TOKEN_FILE"]))
    context: ssl.SSLContext | None = None
    if url.startswith("https:"):
        ca_file = env.get("RISKMON_API_CA_FILE")
        pinned = http.tls if local and not ca_file else None
        trust = Path(ca_file) if ca_file else (pinned.cert_file if pinned else None)
        cert = env.get("RISKMON_API_CERT_FILE")
        key = env.get("RISKMON_API_KEY_FILE")
        try:
            context = client_ssl_context(
                trust, Path(cert) if cert else None, Path(key) if key else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise ApiError(f"cannot set up TLS to {url}: {exc}") from None
        if pinned is not None:
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
            context.check_hostname = False
    return ApiTarget(url.rstrip("/"), token, context)


def _local_host(listen: str) -> str:
    """`http.listen` as an address to connect to: every-interface becomes loopback."""
    address = listen_address(listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(address.host, address.host)
    return f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"


async def call_api_async(
    target: ApiTarget, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    """`method path` with an optional JSON `body`: the status and the decoded JSON
    answer (its text when it is not JSON; None when empty). ApiError when there is no
    answer."""
    url = target.url + path
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    headers = target.headers()
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(
                method,
                url,
                json=body,
                headers=headers,
                ssl=target.ssl_context if target.ssl_context is not None else True,
            ) as response,
        ):
            text = await response.text()
            status = response.status
    except aiohttp.ClientSSLError as exc:
        raise ApiError(f"{method} {url}: TLS failed: {exc.strerror or exc}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ApiError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
    except TimeoutError:
        raise ApiError(f"{method} {url}: no answer within {TIMEOUT:g}s") from None
    if not text:
        return status, None
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text  # /metrics, the index, a proxy's error page


def call_api(target: ApiTarget, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """`call_api_async` for a command that runs no event loop of its own."""
    return asyncio.run(call_api_async(target, method, path, body))
