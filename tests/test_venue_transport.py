"""A venue's transport settings end to end: `proxy_url` and the environment's proxies
through a real forward proxy process (tests/forward_proxy.py), `tls` against the
simulator served over TLS with a test CA and a required client certificate, and the
settings' checks at config load (`path:line:col`)."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pki import Pki, make_pki

from monitor.config import AccountConfig, Config, TlsConfig, VenueConfig, VenueTransport
from monitor.config.loader import parse_config
from monitor.errors import VenueConnectionError
from monitor.simulator import Simulator
from monitor.venues.base import create_adapter
from monitor.venues.http import http_client_for
from monitor.yamlsource import SourceError

HERE = Path(__file__).resolve().parent
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")


# -- a forward proxy in its own process ----------------------------------------------------


class Proxy:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.lines: list[str] = []

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.port}"

    async def carried(self, count: int) -> list[str]:
        """The first `count` lines of what it carried, waiting for them to be written."""
        assert self.process.stdout is not None
        async with asyncio.timeout(5):
            while len(self.lines) < count:
                line = await self.process.stdout.readline()
                assert line, "the proxy exited"
                self.lines.append(line.decode().strip())
        return self.lines[:count]


@pytest.fixture
async def start_proxy() -> AsyncIterator[Callable[..., Awaitable[Proxy]]]:
    proxies: list[Proxy] = []

    async def start(*args: str) -> Proxy:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "forward_proxy.py"),
            *args,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        async with asyncio.timeout(10):
            first = (await process.stdout.readline()).decode().split()
        proxies.append(proxy := Proxy(process, int(first[1])))
        return proxy

    yield start
    for proxy in proxies:
        proxy.process.terminate()
        await proxy.process.wait()


@pytest.fixture
def no_env_proxy(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


async def poll_once(config: VenueConfig, account: str = "19816", seconds: float = 5) -> Any:
    http = http_client_for(config)
    try:
        adapter = create_adapter(config, http)
        deadline = asyncio.get_running_loop().time() + seconds
        with adapter.errors_about(account):
            return await adapter.fetch(AccountConfig(account), deadline)
    finally:
        await http.aclose()


def via(config: VenueConfig, **settings: Any) -> VenueConfig:
    return replace(config, transport=replace(config.transport, **settings))


async def test_requests_go_through_proxy_url(
    cs_config: VenueConfig, start_proxy: Any, no_env_proxy: pytest.MonkeyPatch
) -> None:
    proxy = await start_proxy()
    snapshot = await poll_once(via(cs_config, proxy_url=proxy.url()))
    assert snapshot.fields["buying_power"] > 0
    (line,) = await proxy.carried(1)
    assert line == f"GET {cs_config.base_url}/v1/accounts/19816/balances"


async def test_the_environments_proxy_is_used_and_no_proxy_bypasses_it(
    cs_config: VenueConfig, start_proxy: Any, no_env_proxy: pytest.MonkeyPatch
) -> None:
    proxy = await start_proxy()
    no_env_proxy.setenv("HTTP_PROXY", proxy.url())
    no_env_proxy.setenv("HTTPS_PROXY", proxy.url())
    await poll_once(cs_config)
    assert await proxy.carried(1) == [f"GET {cs_config.base_url}/v1/accounts/19816/balances"]
    no_env_proxy.setenv("NO_PROXY", "127.0.0.1")
    await poll_once(cs_config, "19817")
    no_env_proxy.delenv("NO_PROXY")
    await poll_once(cs_config, "19818")
    # 19817 went straight to the venue: the next line the proxy wrote is 19818's
    assert (await proxy.carried(2))[1] == f"GET {cs_config.base_url}/v1/accounts/19818/balances"


async def test_proxy_credentials_are_sent_and_never_shown(
    cs_config: VenueConfig, start_proxy: Any, no_env_proxy: pytest.MonkeyPatch
) -> None:
    proxy = await start_proxy("--auth", "riskbot:pr0xy-s3cret")
    snapshot = await poll_once(via(cs_config, proxy_url=proxy.url("riskbot:pr0xy-s3cret@")))
    assert snapshot.fields["buying_power"] > 0
    with pytest.raises(VenueConnectionError) as caught:
        await poll_once(via(cs_config, proxy_url=proxy.url("riskbot:wr0ng-s3cret@")))
    message = str(caught.value)
    assert "the proxy refused the request: 407" in message
    assert "wr0ng-s3cret" not in message
    assert "riskbot" not in message
    assert await proxy.carried(2) == [
        f"GET {cs_config.base_url}/v1/accounts/19816/balances",
        f"refused GET {cs_config.base_url}/v1/accounts/19816/balances",
    ]


# -- TLS: a test CA, the simulator over TLS, a client certificate it requires ---------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), server_names=())


@pytest.fixture
async def tls_venue(
    simulator: Simulator, cs_config: VenueConfig, pki: Pki
) -> AsyncIterator[VenueConfig]:
    """cs_config, its base_url the simulator served over TLS: the server's certificate
    from the test CA, a client certificate from that CA required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(cafile=str(pki.ca))
    context.verify_mode = ssl.CERT_REQUIRED
    runner = web.AppRunner(simulator.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield replace(cs_config, base_url=f"https://127.0.0.1:{port}/clearstreet")
    finally:
        await runner.cleanup()


async def test_tls_with_a_private_ca_and_a_client_certificate(
    tls_venue: VenueConfig, pki: Pki, no_env_proxy: pytest.MonkeyPatch
) -> None:
    tls = TlsConfig(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    snapshot = await poll_once(via(tls_venue, tls=tls))
    assert snapshot.fields["buying_power"] > 0


@pytest.mark.parametrize("http_client", ["aiohttp", "httpx"])
async def test_tls_without_the_client_certificate_fails_naming_tls(
    tls_venue: VenueConfig, pki: Pki, no_env_proxy: pytest.MonkeyPatch, http_client: str
) -> None:
    for tls, problem in (
        (TlsConfig(ca_file=pki.ca), "TLS"),  # no client certificate
        (
            TlsConfig(ca_file=pki.ca, cert_file=pki.stranger_cert, key_file=pki.stranger_key),
            "TLS",
        ),
        (None, "certificate verify failed"),  # the system CAs do not know the test CA
    ):
        with pytest.raises(VenueConnectionError, match=problem) as caught:
            # a short poll: the adapter retries a failed connection until the deadline
            await poll_once(via(tls_venue, tls=tls, http_client=http_client), seconds=1)
        assert caught.value.venue == "cs"


async def test_httpx_speaks_tls_and_proxies_too(
    tls_venue: VenueConfig, pki: Pki, start_proxy: Any, no_env_proxy: pytest.MonkeyPatch
) -> None:
    proxy = await start_proxy()
    tls = TlsConfig(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    snapshot = await poll_once(via(tls_venue, tls=tls, http_client="httpx", proxy_url=proxy.url()))
    assert snapshot.fields["buying_power"] > 0
    port = tls_venue.base_url.split(":")[2].split("/")[0]
    assert await proxy.carried(1) == [f"CONNECT 127.0.0.1:{port}"]


async def test_aiohttp_tunnels_https_through_the_proxy(
    tls_venue: VenueConfig, pki: Pki, start_proxy: Any, no_env_proxy: pytest.MonkeyPatch
) -> None:
    proxy = await start_proxy()
    no_env_proxy.setenv("HTTPS_PROXY", proxy.url())
    tls = TlsConfig(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    assert (await poll_once(via(tls_venue, tls=tls))).fields["buying_power"] > 0
    port = tls_venue.base_url.split(":")[2].split("/")[0]
    assert await proxy.carried(1) == [f"CONNECT 127.0.0.1:{port}"]


# -- the settings at config load -----------------------------------------------------------


def venue_yaml(base_url: str, extra: str = "") -> str:
    return (
        "venues:\n"
        "  - name: cs\n"
        "    kind: clearstreet\n"
        f"    base_url: {base_url}\n"
        "    api_key: k\n"
        f"{extra}"
        "    accounts:\n"
        '      - id: "19816"\n'
    )


def parse(folder: Path, text: str) -> Config:
    return parse_config(text, "riskmon.yaml", base_dir=folder, environ={})


def problems(folder: Path, text: str) -> list[str]:
    with pytest.raises(SourceError) as info:
        parse(folder, text)
    return [str(p) for p in info.value.problems]


def test_transport_defaults(tmp_path: Path) -> None:
    (venue,) = parse(tmp_path, venue_yaml("https://api.clearstreet.com")).venues
    assert venue.transport == VenueTransport()
    assert venue.transport.http_client == "aiohttp"


def test_transport_settings_are_read(tmp_path: Path, pki: Pki) -> None:
    extra = (
        "    http_client: httpx\n"
        "    proxy_url: http://riskbot:s3cret@proxy.internal:3128\n"
        f"    tls: {{ca_file: {pki.ca}, cert_file: {pki.client_cert}, "
        f"key_file: {pki.client_key}}}\n"
    )
    (venue,) = parse(tmp_path, venue_yaml("https://api.clearstreet.com", extra)).venues
    assert venue.transport == VenueTransport(
        http_client="httpx",
        proxy_url="http://riskbot:s3cret@proxy.internal:3128",
        tls=TlsConfig(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key),
    )


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:8090/cs", "http://localhost:8090", "http://[::1]:8090", "http://127.9.9.9"],
)
def test_plain_http_to_this_machine_is_allowed(tmp_path: Path, base_url: str) -> None:
    parse(tmp_path, venue_yaml(base_url))


def test_plain_http_to_another_host_is_refused_unless_allowed(tmp_path: Path) -> None:
    (message,) = problems(tmp_path, venue_yaml("http://api.clearstreet.com"))
    assert message.startswith("riskmon.yaml:4:15: base_url 'http://api.clearstreet.com' is plain")
    assert "in clear" in message
    assert "allow_insecure_http: true" in message
    text = venue_yaml("http://10.0.0.7:8090", "    allow_insecure_http: true\n")
    (venue,) = parse(tmp_path, text).venues
    assert venue.transport.allow_insecure_http


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    http_client: requests\n", "6:18: http_client: expected one of aiohttp, httpx"),
        (
            "    proxy_url: socks5://riskbot:s3cret@proxy:1080\n",
            "6:16: proxy_url: expected an http:// proxy URL",
        ),
        ("    proxy_url: http://riskbot:s3cret@\n", "6:16: proxy_url: no valid host and port"),
        ("    proxy_url: http://proxy:3128/path\n", "6:16: proxy_url: a proxy URL has no path"),
        ("    allow_insecure_http: maybe\n", "6:26: allow_insecure_http: expected true or false"),
        ("    tls: {ca_file: missing.pem}\n", "6:20: ca_file {folder}/missing.pem does not exist"),
        ("    tls: {key_file: k.pem}\n", "6:11: key_file needs a cert_file too"),
        ("    tls: {insecure: true}\n", "6:11: unknown key 'insecure' in venue 'cs' tls"),
        ("    tls: {ca_file: junk.pem}\n", "6:20: ca_file: cannot be used for TLS"),
    ],
)
def test_transport_mistakes_are_located(
    tmp_path: Path, extra: str, expected: str, pki: Pki
) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    (tmp_path / "k.pem").write_text("not a key\n")
    (message,) = problems(tmp_path, venue_yaml("https://api.clearstreet.com", extra))
    assert f"riskmon.yaml:{expected.format(folder=tmp_path)}" in message
    assert "s3cret" not in message


def test_a_key_that_does_not_match_its_certificate_is_a_load_error(
    tmp_path: Path, pki: Pki
) -> None:
    extra = f"    tls: {{cert_file: {pki.client_cert}, key_file: {pki.stranger_key}}}\n"
    (message,) = problems(tmp_path, venue_yaml("https://api.clearstreet.com", extra))
    assert message.startswith("riskmon.yaml:6:")
    assert "cert_file: cannot be used for TLS" in message


def test_tls_on_a_plain_http_base_url_is_refused(tmp_path: Path, pki: Pki) -> None:
    extra = f"    tls: {{ca_file: {pki.ca}}}\n"
    (message,) = problems(tmp_path, venue_yaml("http://127.0.0.1:8090", extra))
    assert "riskmon.yaml:6:5: tls is set but base_url starts with http://" in message


# -- `riskmon snapshot`, a separate process, from a config file ----------------------------


async def riskmon_snapshot(config: Path, **environ: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in PROXY_VARS}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        "snapshot",
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**env, **environ},
    )
    async with asyncio.timeout(60):
        out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


def write_venue(folder: Path, base_url: str, api_key: str, extra: str = "") -> Path:
    (folder / "cs.key").write_text(api_key)
    config = folder / "riskmon.yaml"
    config.write_text(
        venue_yaml(base_url, extra).replace("    api_key: k\n", "    api_key_file: cs.key\n")
    )
    return config


async def test_snapshot_command_with_the_venues_tls_settings(
    tls_venue: VenueConfig, pki: Pki, tmp_path: Path, sim_credentials: Any
) -> None:
    key = sim_credentials.api_key
    tls = (
        f"    tls: {{ca_file: {pki.ca}, cert_file: {pki.client_cert}, "
        f"key_file: {pki.client_key}}}\n"
    )
    code, out = await riskmon_snapshot(write_venue(tmp_path, tls_venue.base_url, key, tls))
    assert code == 0, out
    assert "cs / 19816  ok" in out
    code, out = await riskmon_snapshot(
        write_venue(tmp_path, tls_venue.base_url, key, f"    tls: {{ca_file: {pki.ca}}}\n")
    )
    assert code == 2, out
    assert "cs / 19816  FAILED" in out
    assert "TLS" in out
    assert key not in out


async def test_snapshot_command_through_the_environments_proxy(
    cs_config: VenueConfig, start_proxy: Any, tmp_path: Path, sim_credentials: Any
) -> None:
    proxy = await start_proxy()
    config = write_venue(tmp_path, cs_config.base_url, sim_credentials.api_key)
    code, out = await riskmon_snapshot(config, HTTPS_PROXY=proxy.url(), HTTP_PROXY=proxy.url())
    assert code == 0, out
    assert await proxy.carried(1) == [f"GET {cs_config.base_url}/v1/accounts/19816/balances"]
