"""Shared fixtures. Simulator fixtures: `rsa_keypair`, `sim_clock`, `sim_credentials`,
`sim_scenario_data`, `simulator`."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import settings

from monitor.config import AccountConfig, PolymarketAuthConfig, Secret, VenueConfig
from monitor.simulator import Scenario, Simulator
from monitor.venues.http import HttpClient

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
        api_key=Secret.literal("cs api_key", sim_credentials.api_key),
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
        auth=PolymarketAuthConfig(
            token_url=simulator.token_url,
            client_id=sim_credentials.client_id,
            private_key=Secret.literal(
                "pmx private_key", sim_credentials.keypair.private_pem.decode()
            ),
            participant_id=sim_credentials.participant_id,
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
    client = HttpClient()
    try:
        yield client
    finally:
        await client.aclose()
