"""Both venue adapters against the simulator, over real sockets."""

from __future__ import annotations

import asyncio
import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock, RsaKeyPair, SimCredentials

from monitor.config import AccountConfig, DiscoveryConfig, Secret, VenueConfig
from monitor.errors import (
    AccountNotFound,
    PollDeadlineExceeded,
    SnapshotParseError,
    VenueAuthError,
    VenueConnectionError,
    VenueError,
    VenueRateLimited,
    VenueRequestError,
)
from monitor.simulator import Simulator
from monitor.venue_fields import decimal_fields_map
from monitor.venues.clearstreet import ClearStreetAdapter
from monitor.venues.http import HttpClient
from monitor.venues.http_httpx import HttpxClient
from monitor.venues.polymarket import PolymarketAdapter

MAIN = "firms/ACME/accounts/main"


def deadline(seconds: float = 5.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def fetch(
    adapter: ClearStreetAdapter | PolymarketAdapter, account: str, seconds: float = 5.0
) -> Any:
    return await adapter.fetch(AccountConfig(account), deadline(seconds))


# -- Clear Street ----------------------------------------------------------------------


async def test_cs_balances_become_a_snapshot(
    simulator: Simulator, cs_config: VenueConfig, http_client: HttpClient
) -> None:
    simulator.set_fields("clearstreet", "19816", {"buying_power": "12345.67"})
    adapter = ClearStreetAdapter(cs_config, http_client)
    snap = await fetch(adapter, "19816")
    assert snap.venue == "cs"
    assert snap.venue_kind == "clearstreet"
    assert snap.account == "19816"
    assert snap.currency == "USD"
    assert snap.fields["buying_power"] == Decimal("12345.67")
    assert isinstance(snap.fields["margin_excess"], Decimal)
    assert snap.request_id
    # the parser's guarantee, which rules compiled for the kind take by identity
    assert snap.decimal_fields is decimal_fields_map()["clearstreet"]


async def test_cs_deprecated_pdt_fields_are_missing_not_false(
    cs_config: VenueConfig, http_client: HttpClient
) -> None:
    adapter = ClearStreetAdapter(cs_config, http_client)
    modern = await fetch(adapter, "19816")
    legacy = await fetch(adapter, "19818")
    for name in ("pattern_day_trader", "day_trade_count", "margin_details.day_trade_count"):
        assert name not in modern.fields
    assert legacy.fields["pattern_day_trader"] is False
    assert legacy.fields["day_trade_count"] == 2
    cash = await fetch(adapter, "19817")
    assert "margin_excess" not in cash.fields
    assert cash.fields["short_market_value"] == 0


async def test_cs_top_contributors_only_when_configured(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    plain = await fetch(ClearStreetAdapter(cs_config, http_client), "19816")
    assert "margin_details.top_contributors" not in plain.fields
    limited = dataclasses.replace(
        cs_config, settings=dataclasses.replace(cs_config.settings, top_margin_contributors_limit=1)
    )
    snap = await fetch(ClearStreetAdapter(limited, http_client), "19816")
    assert len(snap.fields["margin_details.top_contributors"]) == 1


async def test_cs_wrong_key_is_an_auth_failure_without_retries(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    bad = dataclasses.replace(
        cs_config,
        settings=dataclasses.replace(
            cs_config.settings, api_key=Secret.literal("cs api_key", "wrong-key")
        ),
    )
    with pytest.raises(VenueAuthError) as caught:
        await fetch(ClearStreetAdapter(bad, http_client), "19816")
    assert caught.value.status == 401
    assert caught.value.request_id
    assert "wrong-key" not in str(caught.value)
    assert len(simulator.requests(venue="clearstreet")) == 1


async def test_cs_key_file_rotation_is_picked_up(
    cs_config: VenueConfig,
    http_client: HttpClient,
    simulator: Simulator,
    tmp_path: Path,
    sim_credentials: SimCredentials,
) -> None:
    key_file = tmp_path / "clearstreet-key"
    key_file.write_text(sim_credentials.api_key + "\n")
    config = dataclasses.replace(
        cs_config,
        settings=dataclasses.replace(
            cs_config.settings, api_key=Secret.file("api_key_file", key_file)
        ),
    )
    adapter = ClearStreetAdapter(config, http_client)
    await fetch(adapter, "19816")
    simulator.configure(api_keys=["rotated-key-2"])
    with pytest.raises(VenueAuthError):
        await fetch(adapter, "19816")
    key_file.write_text("rotated-key-2\n")
    snap = await fetch(adapter, "19816")
    assert snap.account == "19816"


async def test_cs_unknown_account_is_not_found(
    cs_config: VenueConfig, http_client: HttpClient
) -> None:
    with pytest.raises(AccountNotFound) as caught:
        await fetch(ClearStreetAdapter(cs_config, http_client), "99999")
    assert caught.value.request_id


async def test_cs_discovery_walks_every_page_and_filters_status(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    for i in range(1200):
        simulator.add_account("clearstreet", str(200000 + i))
    simulator.add_account("clearstreet", "300000", status="CLOSED")
    config = dataclasses.replace(cs_config, discovery=DiscoveryConfig())
    ids = await ClearStreetAdapter(config, http_client).list_accounts(deadline())
    assert len(ids) == 1203
    assert len(set(ids)) == len(ids)
    assert "300000" not in ids
    assert len(simulator.requests(endpoint="accounts")) >= 3  # 500 per page


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
async def test_cs_retryable_statuses_are_retried(
    status: int, cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    simulator.add_fault(
        {
            "venue": "clearstreet",
            "kind": "status",
            "status": status,
            "count": 1,
            "retry_after_ms": 10,
        }
    )
    snap = await fetch(ClearStreetAdapter(cs_config, http_client), "19816")
    assert snap.fields["buying_power"] > 0
    assert [r["status"] for r in simulator.requests(endpoint="balances")] == [status, 200]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, VenueRequestError),
        (403, VenueAuthError),
        (404, AccountNotFound),
        (422, VenueRequestError),
    ],
)
async def test_cs_other_statuses_are_not_retried(
    status: int,
    error: type[VenueError],
    cs_config: VenueConfig,
    http_client: HttpClient,
    simulator: Simulator,
) -> None:
    simulator.add_fault({"venue": "clearstreet", "kind": "status", "status": status})
    with pytest.raises(error) as caught:
        await fetch(ClearStreetAdapter(cs_config, http_client), "19816")
    assert caught.value.status == status
    assert len(simulator.requests(endpoint="balances")) == 1


async def test_retry_after_is_honoured(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    simulator.add_fault(
        {"venue": "clearstreet", "kind": "status", "status": 503, "retry_after": 1, "count": 1}
    )
    await fetch(ClearStreetAdapter(cs_config, http_client), "19816")
    first, second = simulator.requests(endpoint="balances")
    assert second["t"] - first["t"] >= 1.0


async def test_retry_after_ms_is_honoured(
    pmx_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    simulator.add_fault(
        {
            "venue": "polymarket",
            "endpoint": "balances",
            "kind": "status",
            "status": 429,
            "retry_after_ms": 400,
            "count": 1,
        }
    )
    await fetch(PolymarketAdapter(pmx_config, http_client), MAIN)
    first, second = simulator.requests(endpoint="balances")
    assert first["status"] == 429
    assert second["t"] - first["t"] >= 0.4


async def test_no_retry_past_the_poll_deadline(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    simulator.add_fault(
        {"venue": "clearstreet", "kind": "status", "status": 429, "retry_after": 30}
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(VenueRateLimited) as caught:
        await fetch(ClearStreetAdapter(cs_config, http_client), "19816", seconds=2)
    assert caught.value.retry_after == 30
    assert loop.time() - started < 1
    assert len(simulator.requests(endpoint="balances")) == 1


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"kind": "malformed"}, "not valid JSON"),
        ({"kind": "truncated"}, "not valid JSON"),
        ({"kind": "oversized", "bytes": 2_000_000}, "larger than the"),
        ({"kind": "wrong_type", "path": "buying_power", "value": {"x": 1}}, "buying_power"),
        (
            {"kind": "wrong_type", "path": "margin_details.pattern_day_trader", "value": "yes"},
            "pattern_day_trader",
        ),
        ({"kind": "malformed", "body": "<html>502 Bad Gateway</html>"}, "not valid JSON"),
    ],
)
async def test_bad_bodies_are_clear_typed_errors(
    fault: dict[str, Any],
    message: str,
    cs_config: VenueConfig,
    http_client: HttpClient,
    simulator: Simulator,
) -> None:
    simulator.add_fault({"venue": "clearstreet", **fault})
    with pytest.raises(SnapshotParseError, match=message) as caught:
        await fetch(ClearStreetAdapter(cs_config, http_client), "19818")
    assert caught.value.account == "19818"
    assert caught.value.venue == "cs"


async def test_dropped_connections_are_connection_errors(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    simulator.add_fault({"venue": "clearstreet", "kind": "drop"})
    with pytest.raises(VenueConnectionError):
        await fetch(ClearStreetAdapter(cs_config, http_client), "19816", seconds=1.5)
    assert len(simulator.requests(endpoint="balances")) >= 2


async def test_slow_answers_time_out(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    simulator.add_fault({"venue": "clearstreet", "kind": "delay", "seconds": 3})
    config = dataclasses.replace(cs_config, timeout=0.3)
    with pytest.raises(PollDeadlineExceeded):
        await fetch(ClearStreetAdapter(config, http_client), "19816", seconds=0.5)


async def test_connection_refused_is_a_connection_error(
    cs_config: VenueConfig, http_client: HttpClient
) -> None:
    config = dataclasses.replace(cs_config, base_url="http://127.0.0.1:9/clearstreet")
    with pytest.raises((VenueConnectionError, PollDeadlineExceeded)):
        await fetch(ClearStreetAdapter(config, http_client), "19816", seconds=1)


async def test_request_rate_is_limited(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    config = dataclasses.replace(cs_config, max_requests_per_second=5)
    adapter = ClearStreetAdapter(config, http_client)
    await asyncio.gather(*(fetch(adapter, "19816") for _ in range(10)))
    times = [r["t"] for r in simulator.requests(endpoint="balances")]
    assert max(times) - min(times) >= (10 - 5) / 5 * 0.95  # a burst of 5, then 5/s


async def test_concurrency_is_capped(
    cs_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    simulator.add_fault({"venue": "clearstreet", "kind": "delay", "seconds": 0.2})
    adapter = ClearStreetAdapter(dataclasses.replace(cs_config, max_concurrency=2), http_client)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(fetch(adapter, "19816") for _ in range(6)))
    assert loop.time() - started >= 0.6


# -- Polymarket ------------------------------------------------------------------------


async def test_pmx_balance_with_minted_token(
    pmx_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    simulator.set_fields("polymarket", MAIN, {"buyingPower": "777.25"})
    adapter = PolymarketAdapter(pmx_config, http_client)
    snap = await fetch(adapter, MAIN)
    await fetch(adapter, "firms/ACME/accounts/hedge")
    assert snap.fields["buying_power"] == Decimal("777.25")
    assert snap.venue_kind == "polymarket"
    assert snap.currency == "USD"
    assert "excess_capital" in snap.fields
    assert snap.decimal_fields is decimal_fields_map()["polymarket"]
    assert adapter.auth.mints == 1
    assert len(simulator.requests(endpoint="token")) == 1


async def test_pmx_token_is_renewed_before_expiry(
    pmx_config: VenueConfig, http_client: HttpClient, simulator: Simulator, sim_clock: FakeClock
) -> None:
    adapter = PolymarketAdapter(pmx_config, http_client)
    adapter.auth.clock = sim_clock
    await fetch(adapter, MAIN)
    sim_clock.advance(140)  # 180 s tokens are renewed 30 s early
    await fetch(adapter, MAIN)
    assert adapter.auth.mints == 1
    sim_clock.advance(15)
    await fetch(adapter, MAIN)
    assert adapter.auth.mints == 2
    assert all(r["status"] == 200 for r in simulator.requests(endpoint="balances"))


async def test_pmx_401_mints_a_new_token_and_retries_once(
    pmx_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    adapter = PolymarketAdapter(pmx_config, http_client)
    await fetch(adapter, MAIN)
    simulator.expire_tokens()
    await fetch(adapter, MAIN)
    assert adapter.auth.mints == 2
    assert [r["status"] for r in simulator.requests(endpoint="balances")] == [200, 401, 200]


async def test_pmx_persistent_401_is_an_auth_failure(
    pmx_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    simulator.add_fault(
        {"venue": "polymarket", "endpoint": "balances", "kind": "status", "status": 401}
    )
    with pytest.raises(VenueAuthError):
        await fetch(PolymarketAdapter(pmx_config, http_client), MAIN)
    assert len(simulator.requests(endpoint="balances")) == 2  # the first and one re-mint


async def test_pmx_bad_signature_is_refused_once(
    pmx_config: VenueConfig,
    http_client: HttpClient,
    simulator: Simulator,
    other_rsa_keypair: RsaKeyPair,
) -> None:
    assert pmx_config.settings.auth is not None
    auth = dataclasses.replace(
        pmx_config.settings.auth,
        private_key=Secret.literal("pmx private_key", other_rsa_keypair.private_pem.decode()),
    )
    adapter = PolymarketAdapter(
        dataclasses.replace(
            pmx_config, settings=dataclasses.replace(pmx_config.settings, auth=auth)
        ),
        http_client,
    )
    with pytest.raises(VenueAuthError, match="token request refused with 401"):
        await fetch(adapter, MAIN)
    assert len(simulator.requests(endpoint="token")) == 1
    assert simulator.requests(endpoint="balances") == []


async def test_pmx_wrong_participant_is_forbidden(
    pmx_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    assert pmx_config.settings.auth is not None
    auth = dataclasses.replace(pmx_config.settings.auth, participant_id="firms/ACME/users/intruder")
    adapter = PolymarketAdapter(
        dataclasses.replace(
            pmx_config, settings=dataclasses.replace(pmx_config.settings, auth=auth)
        ),
        http_client,
    )
    with pytest.raises(VenueAuthError) as caught:
        await fetch(adapter, MAIN)
    assert caught.value.status == 403
    assert len(simulator.requests(endpoint="balances")) == 1


async def test_pmx_one_mint_in_flight_for_many_callers(
    pmx_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    adapter = PolymarketAdapter(pmx_config, http_client)
    await asyncio.gather(*(fetch(adapter, MAIN) for _ in range(20)))
    assert len(simulator.requests(endpoint="token")) == 1


async def test_pmx_assertion_claims(
    pmx_config: VenueConfig, http_client: HttpClient, rsa_keypair: RsaKeyPair
) -> None:
    import jwt

    adapter = PolymarketAdapter(pmx_config, http_client)
    first, second = adapter.auth.assertion(), adapter.auth.assertion()
    claims = jwt.decode(
        first,
        rsa_keypair.public_pem,
        algorithms=["RS256"],
        audience=pmx_config.settings.auth.token_url if pmx_config.settings.auth else "",
    )
    assert claims["iss"] == claims["sub"] == pmx_config.settings.auth.client_id  # type: ignore[union-attr]
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert jwt.get_unverified_header(first)["alg"] == "RS256"
    assert claims["jti"] != jwt.decode(second, options={"verify_signature": False})["jti"]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_pmx_retryable_statuses(
    status: int, pmx_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    simulator.add_fault(
        {
            "venue": "polymarket",
            "endpoint": "balances",
            "kind": "status",
            "status": status,
            "count": 1,
            "retry_after_ms": 10,
        }
    )
    await fetch(PolymarketAdapter(pmx_config, http_client), MAIN)
    assert [r["status"] for r in simulator.requests(endpoint="balances")] == [status, 200]


@pytest.mark.parametrize("status", [400, 403, 404, 405, 409, 413, 422])
async def test_pmx_never_retried_statuses(
    status: int, pmx_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    simulator.add_fault(
        {"venue": "polymarket", "endpoint": "balances", "kind": "status", "status": status}
    )
    with pytest.raises(VenueError) as caught:
        await fetch(PolymarketAdapter(pmx_config, http_client), MAIN)
    assert caught.value.status == status
    assert not caught.value.retryable
    assert len(simulator.requests(endpoint="balances")) == 1


async def test_pmx_wrong_types_and_missing_fields(
    pmx_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    adapter = PolymarketAdapter(pmx_config, http_client)
    simulator.add_fault(
        {
            "venue": "polymarket",
            "endpoint": "balances",
            "kind": "wrong_type",
            "path": "excessCapital",
            "value": [1],
            "count": 1,
        }
    )
    with pytest.raises(SnapshotParseError, match="excess_capital"):
        await fetch(adapter, MAIN)
    simulator.add_fault(
        {
            "venue": "polymarket",
            "endpoint": "balances",
            "kind": "remove_fields",
            "fields": ["marginRequirement"],
            "count": 1,
        }
    )
    snap = await fetch(adapter, MAIN)
    assert "margin_requirement" not in snap.fields


async def test_pmx_discovery(
    pmx_config: VenueConfig, http_client: HttpClient, simulator: Simulator
) -> None:
    simulator.add_account("polymarket", "firms/ACME/accounts/new")
    ids = await PolymarketAdapter(pmx_config, http_client).list_accounts(deadline())
    assert set(ids) == {MAIN, "firms/ACME/accounts/hedge", "firms/ACME/accounts/new"}


async def test_httpx_backend_speaks_the_same(cs_config: VenueConfig, simulator: Simulator) -> None:
    client = HttpxClient()
    try:
        snap = await fetch(ClearStreetAdapter(cs_config, client), "19816")
        assert snap.fields["buying_power"] > 0
        simulator.add_fault({"venue": "clearstreet", "kind": "oversized", "bytes": 2_000_000})
        with pytest.raises(SnapshotParseError, match="larger than"):
            await fetch(ClearStreetAdapter(cs_config, client), "19816")
    finally:
        await client.aclose()
