"""The authenticated, encrypted API: `http.bearer_token_file`, `http.tls` (with client
certificates) and writes only with a token or on loopback, against a real daemon over
real HTTPS, with certificates made here by a test CA."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from pki import Pki, make_pki
from test_api import FakeSource
from test_daemon import RiskmonProcess, riskmon_process

from monitor.api import create_app, start_http
from monitor.api_auth import ApiAuth, is_loopback_listen
from monitor.api_client import ApiError, api_target, call_api_async
from monitor.config import load_config
from monitor.config.secret import Secret
from monitor.simulator import Simulator

TOKEN = "s3cr3t-token-of-the-test-0123456789"
NEW_TOKEN = "rotated-token-of-the-test-9876543210"

# -- certificates -----------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "tls")


def write_token(path: Path, token: str) -> None:
    """As a Kubernetes Secret rotates: a new file swapped in whole."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(token + "\n")
    fresh.chmod(0o600)
    os.replace(fresh, path)


def secure_config(config: Path, http: str) -> None:
    """Replace the `http:` line of a config written by `riskmon_config`."""
    lines = config.read_text().splitlines(keepends=True)
    [at] = [i for i, line in enumerate(lines) if line.startswith("http:")]
    lines[at] = http + "\n"
    config.write_text("".join(lines))


# -- a real daemon over HTTPS -----------------------------------------------------------


class HttpsClient:
    """Requests to the daemon over HTTPS, trusting the test CA."""

    def __init__(self, process: RiskmonProcess, pki: Pki, *, client_cert: bool = False) -> None:
        self.url = f"https://127.0.0.1:{process.http_port}"
        self.context = ssl.create_default_context(cafile=pki.ca)
        if client_cert:
            self.context.load_cert_chain(pki.client_cert, pki.client_key)

    async def get(
        self, path: str, token: str | None = None, method: str = "GET"
    ) -> tuple[int, dict[str, str], str]:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, headers=headers, ssl=self.context) as resp,
        ):
            return resp.status, dict(resp.headers), await resp.text()


async def wait_ready(process: RiskmonProcess, client: HttpsClient) -> None:
    async def ready() -> bool:
        status, _, _ = await client.get("/readyz")
        return status == 200

    await process.until(ready, "readiness over HTTPS")


@pytest.fixture
def secured(
    tmp_path: Path, riskmon_config: Callable[..., tuple[Path, int]], pki: Pki
) -> Iterator[RiskmonProcess]:
    """A daemon serving HTTPS with the test server certificate and a token file."""
    with riskmon_process(tmp_path, riskmon_config) as process:
        write_token(tmp_path / "api-token", TOKEN)
        secure_config(
            process.config,
            f'http: {{listen: "127.0.0.1:{process.http_port}", bearer_token_file: api-token, '
            f"tls: {{cert_file: {pki.server_cert}, key_file: {pki.server_key}}}}}",
        )
        yield process


async def test_the_api_answers_401_without_the_token_and_the_probes_stay_open(
    secured: RiskmonProcess, pki: Pki, simulator: Simulator
) -> None:
    secured.start()
    client = HttpsClient(secured, pki)
    await wait_ready(secured, client)
    for probe in ("/healthz", "/readyz", "/livez"):
        status, _, _ = await client.get(probe)
        assert status == 200, probe
    for path in ("/metrics", "/api/v1/alerts", "/api/v1/accounts", "/api/v1/status", "/", "/nope"):
        status, headers, body = await client.get(path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Bearer"), path
        status, headers, body = await client.get(path, token="wrong")
        assert status == 401, path
        assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    status, _, body = await client.get("/metrics", token=TOKEN)
    assert status == 200
    assert "riskmon_" in body
    status, _, body = await client.get("/api/v1/accounts", token=TOKEN)
    assert status == 200
    assert "19816" in body
    # a write passes the token check (and is then not a route: 405)
    status, _, _ = await client.get("/api/v1/alerts", token=TOKEN, method="POST")
    assert status == 405
    status, _, _ = await client.get("/api/v1/alerts", method="POST")
    assert status == 401
    # plain HTTP gets no answer from an HTTPS listener
    with pytest.raises(aiohttp.ClientError):
        async with aiohttp.ClientSession() as session:
            await session.get(f"http://127.0.0.1:{secured.http_port}/healthz")
    assert TOKEN not in secured.log()


async def test_a_rotated_token_file_takes_effect_without_a_restart(
    secured: RiskmonProcess, pki: Pki, tmp_path: Path, simulator: Simulator
) -> None:
    secured.start()
    client = HttpsClient(secured, pki)
    await wait_ready(secured, client)
    assert (await client.get("/api/v1/alerts", token=TOKEN))[0] == 200
    write_token(tmp_path / "api-token", NEW_TOKEN)
    assert (await client.get("/api/v1/alerts", token=NEW_TOKEN))[0] == 200
    assert (await client.get("/api/v1/alerts", token=TOKEN))[0] == 401
    # an unreadable token file refuses everyone, and says so in the log (not the token)
    (tmp_path / "api-token").unlink()
    assert (await client.get("/api/v1/alerts", token=NEW_TOKEN))[0] == 401
    assert (await client.get("/healthz"))[0] == 200
    write_token(tmp_path / "api-token", TOKEN)
    assert (await client.get("/api/v1/alerts", token=TOKEN))[0] == 200
    log = secured.log()
    assert "the API token cannot be read" in log
    assert TOKEN not in log
    assert NEW_TOKEN not in log


async def test_the_cli_client_finds_the_api_and_its_token_in_the_config(
    secured: RiskmonProcess, pki: Pki, simulator: Simulator
) -> None:
    secured.start()
    await wait_ready(secured, HttpsClient(secured, pki))
    target = api_target(load_config(secured.config), environ={})
    assert target.url == f"https://127.0.0.1:{secured.http_port}"
    status, body = await call_api_async(target, "GET", "/api/v1/alerts")
    assert status == 200
    assert body == {"alerts": []}
    # trusting the test CA instead of the pinned certificate works too
    environ = {"RISKMON_API_CA_FILE": str(pki.ca)}
    status, _ = await call_api_async(api_target(load_config(secured.config), environ), "GET", "/")
    assert status == 200
    # a server it cannot trust: a clear error, no token in it
    other = make_pki(secured.folder / "other")
    environ = {"RISKMON_API_CA_FILE": str(other.ca)}
    with pytest.raises(ApiError) as refused:
        await call_api_async(api_target(load_config(secured.config), environ), "GET", "/")
    assert "TLS" in str(refused.value) or "certificate" in str(refused.value)
    assert TOKEN not in str(refused.value)


async def test_client_ca_file_refuses_the_handshake_without_a_client_certificate(
    tmp_path: Path,
    riskmon_config: Callable[..., tuple[Path, int]],
    pki: Pki,
    simulator: Simulator,
) -> None:
    with riskmon_process(tmp_path, riskmon_config) as process:
        secure_config(
            process.config,
            f'http: {{listen: "127.0.0.1:{process.http_port}", tls: {{cert_file: '
            f"{pki.server_cert}, key_file: {pki.server_key}, client_ca_file: {pki.ca}}}}}",
        )
        process.start()
        with_cert = HttpsClient(process, pki, client_cert=True)
        await wait_ready(process, with_cert)
        assert (await with_cert.get("/api/v1/alerts"))[0] == 200
        with pytest.raises(aiohttp.ClientError):  # the handshake fails, probes included
            await HttpsClient(process, pki).get("/healthz")
        environ = {"RISKMON_API_CERT_FILE": str(pki.client_cert)}
        environ["RISKMON_API_KEY_FILE"] = str(pki.client_key)
        status, _ = await call_api_async(
            api_target(load_config(process.config), environ), "GET", "/api/v1/alerts"
        )
        assert status == 200


# -- writes and the listener ------------------------------------------------------------


async def _answer(request: aiohttp.web.Request) -> aiohttp.web.Response:
    return aiohttp.web.json_response({"ok": True})


@pytest.mark.parametrize(
    ("listen", "token", "write_status"),
    [
        ("127.0.0.1:0", False, 200),  # loopback: only this host can write
        ("0.0.0.0:0", False, 403),  # every interface, no token: no writes
        ("0.0.0.0:0", True, 200),  # with the token
    ],
)
async def test_writes_need_a_token_unless_the_listener_is_loopback(
    tmp_path: Path, listen: str, token: bool, write_status: int
) -> None:
    secret = None
    if token:
        write_token(tmp_path / "token", TOKEN)
        secret = Secret.file("http bearer_token_file", tmp_path / "token")
    app = create_app(FakeSource(), ApiAuth(secret, loopback=is_loopback_listen(listen)))
    # a route added after create_app, as the silences API is: covered all the same
    app.router.add_post("/api/v2/silences", _answer)
    app.router.add_delete("/api/v2/silence/{id}", _answer)
    server = await start_http(app, listen)
    headers = {"Authorization": f"Bearer {TOKEN}"} if token else {}
    url = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.post(f"{url}/api/v2/silences", json={}) as resp:
                assert resp.status == write_status
                if write_status == 403:
                    assert "bearer_token_file" in (await resp.json())["error"]
            async with session.delete(f"{url}/api/v2/silence/x") as resp:
                assert resp.status == write_status
            async with session.get(f"{url}/api/v1/alerts") as resp:
                assert resp.status == 200  # reads stay open without a token file
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:9817", True),
        ("127.0.0.2:9817", True),
        ("[::1]:9817", True),
        ("localhost:9817", True),
        ("0.0.0.0:9817", False),
        ("[::]:9817", False),
        ("10.0.0.5:9817", False),
        ("riskmon.internal:9817", False),
    ],
)
def test_is_loopback_listen(listen: str, loopback: bool) -> None:
    assert is_loopback_listen(listen) is loopback


async def test_riskmon_silence_finds_a_secured_daemon_by_its_config(
    secured: RiskmonProcess, pki: Pki, simulator: Simulator
) -> None:
    secured.start()
    await wait_ready(secured, HttpsClient(secured, pki))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RISKMON_")}
        return subprocess.run(
            [sys.executable, "-m", "monitor", "silence", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    async def silence(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(run, *args)

    config = str(secured.config)
    added = await silence(
        "-c", config, "add", "alertname=VenueDown", "--duration", "1h", "--comment", "drill"
    )
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.strip()
    listed = await silence("-c", config, "list")
    assert listed.returncode == 0, listed.stderr
    assert silence_id in listed.stdout
    # the same daemon by its URL alone: no token, so refused, and the token never shown
    refused = await silence("--url", f"https://127.0.0.1:{secured.http_port}", "list")
    assert refused.returncode == 1
    assert TOKEN not in refused.stderr + refused.stdout
    assert (await silence("-c", config, "expire", silence_id)).returncode == 0
