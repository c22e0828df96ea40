"""Shared fixtures. Simulator fixtures: `rsa_keypair`, `sim_clock`, `sim_credentials`,
`sim_scenario_data`, `simulator`. MQTT: `mosquitto`, `mosquitto_factory`,
`mqtt_collector`. `riskmon run` end to end: `riskmon_config`."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import settings

from monitor.config import AccountConfig, PolymarketAuthConfig, Secret, VenueConfig
from monitor.simulator import Scenario, Simulator
from monitor.venues.clearstreet import ClearStreetSettings
from monitor.venues.http import HttpClient
from monitor.venues.http_aiohttp import AiohttpClient
from monitor.venues.polymarket import PolymarketSettings

# CI runs the property tests on a fixed seed, so a green main stays green; local runs
# explore new examples every time (and keep failing ones in .hypothesis/).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@dataclass(frozen=True)
class RsaKeyPair:
    private_key: rsa.RSAPrivateKey
    private_pem: bytes  # PKCS#8
    public_pem: bytes


def _keypair() -> RsaKeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return RsaKeyPair(key, private_pem, public_pem)


@pytest.fixture(scope="session")
def rsa_keypair() -> RsaKeyPair:
    """An RSA-2048 key pair (generated once per test session)."""
    return _keypair()


@pytest.fixture(scope="session")
def other_rsa_keypair() -> RsaKeyPair:
    """A second, unrelated key pair (for wrong-signature tests)."""
    return _keypair()


class FakeClock:
    """A wall clock that moves only when told to; starts at the real time."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def sim_clock() -> FakeClock:
    return FakeClock()


@dataclass(frozen=True)
class SimCredentials:
    """What a client of the `simulator` fixture needs to call it."""

    api_key: str
    client_id: str
    participant_id: str
    keypair: RsaKeyPair

    def assertion(self, audience: str, *, now: float | None = None, **claims: Any) -> str:
        """A valid RS256 client assertion for the token endpoint; `claims` override."""
        issued = int(time.time() if now is None else now)
        payload: dict[str, Any] = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "iat": issued,
            "exp": issued + 60,
            "jti": str(uuid.uuid4()),
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, self.keypair.private_pem, algorithm="RS256")


@pytest.fixture
def sim_credentials(rsa_keypair: RsaKeyPair) -> SimCredentials:
    return SimCredentials("test-api-key", "riskmon-test", "firms/ACME/users/riskbot", rsa_keypair)


@pytest.fixture
def sim_scenario_data(sim_credentials: SimCredentials) -> dict[str, Any]:
    """A small scenario as plain data; tests may change it before `simulator` starts."""
    return {
        "seed": 7,
        "clearstreet": {
            "api_keys": [sim_credentials.api_key],
            "accounts": [
                {"id": "19816", "template": "margin"},
                {"id": "19817", "template": "cash"},
                {"id": "19818", "template": "legacy_pdt"},
            ],
        },
        "polymarket": {
            "clients": [
                {
                    "client_id": sim_credentials.client_id,
                    "public_key": sim_credentials.keypair.public_pem.decode(),
                    "participant_id": sim_credentials.participant_id,
                }
            ],
            "accounts": [
                {"id": "firms/ACME/accounts/main"},
                {"id": "firms/ACME/accounts/hedge"},
            ],
        },
    }


@pytest.fixture
async def simulator(
    sim_scenario_data: dict[str, Any], sim_clock: FakeClock
) -> AsyncIterator[Simulator]:
    """A started Simulator on a free port, on the fake `sim_clock`."""
    sim = Simulator(Scenario.from_dict(sim_scenario_data), clock=sim_clock)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


# -- venue configs pointing at the `simulator` fixture (adapter and poller tests) ---------


@pytest.fixture
def cs_config(simulator: Simulator, sim_credentials: SimCredentials) -> VenueConfig:
    """A Clear Street venue on the simulator with its three accounts."""
    return VenueConfig(
        name="cs",
        kind="clearstreet",
        base_url=simulator.clearstreet_url,
        settings=ClearStreetSettings(Secret.literal("cs api_key", sim_credentials.api_key)),
        accounts=(AccountConfig("19816"), AccountConfig("19817"), AccountConfig("19818")),
        poll_interval=1.0,
        timeout=2.0,
        max_requests_per_second=1000,
    )


@pytest.fixture
def pmx_config(simulator: Simulator, sim_credentials: SimCredentials) -> VenueConfig:
    """A Polymarket venue on the simulator with its two accounts."""
    return VenueConfig(
        name="pmx",
        kind="polymarket",
        base_url=simulator.polymarket_url,
        settings=PolymarketSettings(
            PolymarketAuthConfig(
                token_url=simulator.token_url,
                client_id=sim_credentials.client_id,
                private_key=Secret.literal(
                    "pmx private_key", sim_credentials.keypair.private_pem.decode()
                ),
                participant_id=sim_credentials.participant_id,
            )
        ),
        accounts=(
            AccountConfig("firms/ACME/accounts/main"),
            AccountConfig("firms/ACME/accounts/hedge"),
        ),
        poll_interval=1.0,
        timeout=2.0,
        max_requests_per_second=1000,
    )


@pytest.fixture
async def http_client() -> AsyncIterator[HttpClient]:
    client = AiohttpClient()
    try:
        yield client
    finally:
        await client.aclose()


# -- MQTT: a real Mosquitto broker, and a subscriber that collects what arrives -----------


class MosquittoBroker:
    """A Mosquitto child process on 127.0.0.1 for one test; `stop()`/`start()` keep its
    port and its persistence (retained messages, persistent sessions) across restarts.

    `extra` is added to the generated config, after the one listener (so TLS options
    apply to it); a password file, an ACL file.
    """

    host = "127.0.0.1"

    def __init__(
        self, binary: str, folder: Path, *, extra: str = "", allow_anonymous: bool = True
    ) -> None:
        self.binary = binary
        self.folder = folder
        self.port = _free_port()
        self.log_path = folder / "mosquitto.log"
        self.config_path = folder / "mosquitto.conf"
        (folder / "data").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            f"listener {self.port} {self.host}\n"
            f"allow_anonymous {'true' if allow_anonymous else 'false'}\n"
            "persistence true\n"
            f"persistence_location {folder / 'data'}/\n"
            f"log_dest file {self.log_path}\n"
            "log_type all\n"
            f"user {getpass.getuser()}\n" + extra,
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait until its port accepts connections."""
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                self.process = None
                raise RuntimeError(f"mosquitto exited at start: {err}{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop(signal.SIGKILL)
                    raise RuntimeError(f"mosquitto did not listen in {timeout} s") from None
                time.sleep(0.01)  # poll the port: Mosquitto has no readiness signal

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: a clean shutdown that saves its persistence) and wait."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or shutil.which("/usr/sbin/mosquitto")
    if found is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    return found


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """Makes started brokers (`MosquittoBroker` keywords); all stopped at teardown."""
    binary = _mosquitto_binary()
    brokers: list[MosquittoBroker] = []

    def make(**kwargs: Any) -> MosquittoBroker:
        broker = MosquittoBroker(binary, tmp_path / f"mosquitto-{len(brokers)}", **kwargs)
        brokers.append(broker)
        broker.start()
        return broker

    try:
        yield make
    finally:
        for broker in brokers:
            broker.stop(signal.SIGKILL)


@pytest.fixture
def mosquitto(mosquitto_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    """A started Mosquitto on a free port of 127.0.0.1 (anonymous, persistent)."""
    return mosquitto_factory()


class MqttCollector:
    """Subscribes to `topics` (QoS 1) and keeps every message in `messages`.

    MQTT 3.1.1 unless `protocol` says otherwise (MQTT 5 shows message properties).
    `client_id` with `clean_session=False` (3.1.1) makes a persistent session: what is
    published while it is away (a broker restart) is delivered when a collector with the
    same id connects again.
    """

    def __init__(
        self,
        broker: MosquittoBroker,
        topics: Sequence[str],
        *,
        client_id: str | None = None,
        clean_session: bool = True,
        protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V311,
    ) -> None:
        self.broker = broker
        self.topics = list(topics)
        self.messages: list[aiomqtt.Message] = []
        v5 = protocol == aiomqtt.ProtocolVersion.V5
        self._client = aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=client_id,
            clean_session=None if v5 else clean_session,
            protocol=protocol,
        )
        self._arrived = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MqttCollector:
        await self._client.__aenter__()
        for topic in self.topics:
            await self._client.subscribe(topic, qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(None, None, None)

    async def _read(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):  # the broker went away
            async for message in self._client.messages:
                self.messages.append(message)
                self._arrived.set()

    async def publish(self, topic: str, payload: bytes) -> None:
        await self._client.publish(topic, payload, qos=1)

    def on(self, topic: str) -> list[aiomqtt.Message]:
        """The messages that arrived on `topic` (a filter: `+` and `#` allowed)."""
        return [m for m in self.messages if m.topic.matches(topic)]

    async def wait_for(
        self,
        done: Callable[[list[aiomqtt.Message]], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 (a test helper: the timeout is the point)
    ) -> list[aiomqtt.Message]:
        """Wait until `done(messages)` holds; AssertionError after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not done(self.messages):
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            seen = [(str(m.topic), m.payload[:80]) for m in self.messages[-10:]]
            raise AssertionError(
                f"not there after {timeout} s; {len(self.messages)} messages, last: {seen}"
            ) from None
        return self.messages


@pytest.fixture
def mqtt_collector(
    mosquitto: MosquittoBroker,
) -> Callable[..., MqttCollector]:
    """`async with mqtt_collector(["riskmon/#"]) as sub: await sub.wait_for(...)`."""

    def make(topics: Sequence[str], **kwargs: Any) -> MqttCollector:
        broker = kwargs.pop("broker", mosquitto)
        return MqttCollector(broker, topics, **kwargs)

    return make


# -- the config of `riskmon run` over the simulator and Mosquitto (end-to-end tests) --------

#: The simulator's three Clear Street accounts, as riskmon.yaml lists them.
CS_ACCOUNTS: tuple[dict[str, Any], ...] = ({"id": "19816"}, {"id": "19817"}, {"id": "19818"})


@pytest.fixture
def riskmon_config(
    tmp_path: Path,
    simulator: Simulator,
    mosquitto: MosquittoBroker,
    sim_credentials: SimCredentials,
) -> Callable[..., tuple[Path, int]]:
    """`config, http_port = riskmon_config(instance=..., rules=..., stale_after=...)`.

    Writes `tmp_path/riskmon.yaml` (and the key files it names) for a daemon polling
    both of the `simulator`'s venues (cs: the Clear Street accounts `cs_accounts`; pmx:
    the two Polymarket ones) every 200 ms and publishing to `mosquitto`, serving HTTP on
    a free port; `venue_settings` are added to both venues. Relative paths in it are
    relative to `tmp_path`.
    """

    def write(
        *,
        instance: str,
        rules: str,
        stale_after: str,
        cs_accounts: Sequence[dict[str, Any]] = CS_ACCOUNTS,
        venue_settings: dict[str, Any] | None = None,
    ) -> tuple[Path, int]:
        (tmp_path / "cs-key").write_text(sim_credentials.api_key)
        (tmp_path / "pmx.pem").write_bytes(sim_credentials.keypair.private_pem)
        extra = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in (venue_settings or {}).items())
        http_port = _free_port()
        config = tmp_path / "riskmon.yaml"
        config.write_text(f"""\
instance: {instance}
state_dir: state
http: {{listen: "127.0.0.1:{http_port}"}}
mqtt: {{url: "{mosquitto.url}", topic_prefix: riskmon}}
rules: [{json.dumps(rules)}]
stale_after: {stale_after}
venues:
  - name: cs
    kind: clearstreet
    base_url: {simulator.clearstreet_url}
    api_key_file: cs-key
    poll_interval: 200ms
    timeout: 1s
{extra}    accounts: {json.dumps(list(cs_accounts))}
  - name: pmx
    kind: polymarket
    base_url: {simulator.polymarket_url}
    poll_interval: 200ms
    timeout: 1s
{extra}    auth:
      token_url: {simulator.token_url}
      client_id: {sim_credentials.client_id}
      private_key_file: pmx.pem
      participant_id: {sim_credentials.participant_id}
    accounts: [{{id: firms/ACME/accounts/main}}, {{id: firms/ACME/accounts/hedge}}]
""")
        return config, http_port

    return write
