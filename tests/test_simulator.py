"""The venue simulator, over real sockets."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import stat
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from conftest import FakeClock, RsaKeyPair, SimCredentials

from monitor.simulator import FaultSpecError, Scenario, Simulator, default_scenario, load_scenario
from monitor.simulator.keys import ensure_demo_credentials
from monitor.simulator.keys import main as keys_main
from monitor.simulator.templates import CS_DEPRECATED_FIELDS
from monitor.yamlsource import SourceError

REPO = Path(__file__).resolve().parent.parent
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAIN = "firms/ACME/accounts/main"

# Clear Street's API reference: the two examples of AccountBalances.
SEED_CASH: dict[str, Any] = {
    "account_id": 19816,
    "buying_power": "45000.00",
    "currency": "USD",
    "daily_realized_pnl": "700.00",
    "daily_total_pnl": "1250.00",
    "daily_unrealized_pnl": "550.00",
    "equity": "100000.00",
    "long_market_value": "30000.00",
    "margin_type": "NONE",
    "open_order_adjustment": "-5000.00",
    "settled_cash": "60000.00",
    "sod": {
        "asof": "2023-09-27",
        "buying_power": "45000.00",
        "equity": "100000.00",
        "long_market_value": "30000.00",
    },
    "trade_cash": "60000.00",
    "unsettled_credits": "20000.00",
    "unsettled_debits": "10000.00",
    "withdrawable_cash": "55000.00",
}
SEED_MARGIN: dict[str, Any] = {
    "account_id": 19816,
    "buying_power": "90000.00",
    "currency": "USD",
    "daily_realized_pnl": "700.00",
    "daily_total_pnl": "1250.00",
    "daily_unrealized_pnl": "550.00",
    "equity": "100000.00",
    "long_market_value": "40000.00",
    "margin_details": {
        "day_trade_buying_power_usage": "0.00",
        "day_trade_count": 2,
        "initial_margin_excess": "50000.00",
        "initial_margin_requirement": "50000.00",
        "maintenance_margin_excess": "75000.00",
        "maintenance_margin_requirement": "25000.00",
        "pattern_day_trader": False,
        "top_contributors": [
            {
                "initial_margin_requirement": "25000.00",
                "maintenance_margin_requirement": "15000.00",
                "market_value": "50000.00",
                "underlying_instrument_id": "a1a2a3a4-b1b2-c1c2-d1d2-d3d4d5d6d7d8",
            }
        ],
        "usage": {"total": "100000.00", "used": "5000.00"},
    },
    "margin_type": "REG_T",
    "multiplier": "2",
    "open_order_adjustment": "-10000.00",
    "settled_cash": "99775.05",
    "short_market_value": "10000.00",
    "sod": {
        "asof": "2023-09-27",
        "buying_power": "90000.00",
        "day_trade_buying_power": "200000.00",
        "equity": "100000.00",
        "long_market_value": "40000.00",
        "maintenance_margin_excess": "50000.00",
        "maintenance_margin_requirement": "50000.00",
        "short_market_value": "10000.00",
        "trade_cash": "70000.00",
    },
    "trade_cash": "70000.00",
    "unsettled_credits": "20000.00",
    "unsettled_debits": "10000.00",
    "withdrawable_cash": "75000.00",
}
NEW_FIELDS = {"daily_change", "daily_pnl", "unrealized_pnl"}
# Polymarket's Positions API reference: GetAccountBalanceResponse and SecurityEntry properties.
PM_FIELDS = {
    "balance",
    "capitalRequirement",
    "excessCapital",
    "buyingPower",
    "securities",
    "totalSecurityNotionalValue",
    "totalSecurityAvailableValue",
    "openOrders",
    "alternateCapitalRequirementCurrency",
    "alternateCapitalRequirement",
    "unsettledFunds",
    "marginRequirement",
    "updateTime",
}
SECURITY_FIELDS = {"balance", "marketValue", "haircut", "notionalValue", "availableValue"}


def flatten(body: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in body.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Client:
    """Calls the simulator the way the monitor does."""

    def __init__(self, sim: Simulator, http: aiohttp.ClientSession, creds: SimCredentials) -> None:
        self.sim = sim
        self.http = http
        self.creds = creds

    async def cs(
        self, path: str, *, key: str | None = "", **params: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        key = self.creds.api_key if key == "" else key
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        url = f"{self.sim.clearstreet_url}{path}"
        async with self.http.get(url, headers=headers, params=params) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None, resp

    async def balance(self, account: str = "19816", **params: Any) -> dict[str, Any]:
        status, body, _ = await self.cs(f"/v1/accounts/{account}/balances", **params)
        assert status == 200, body
        data: dict[str, Any] = body["data"]
        return data

    async def token_request(self, **form: Any) -> tuple[int, Any]:
        fields = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "audience": self.sim.polymarket_url,
        }
        if "client_assertion" not in form:
            fields["client_assertion"] = self.creds.assertion(
                self.sim.token_url, now=self.sim.clock()
            )
        fields.update({k: v for k, v in form.items() if v is not None})
        fields = {k: v for k, v in fields.items() if form.get(k, "") is not None}
        async with self.http.post(self.sim.token_url, data=fields) as resp:
            return resp.status, await resp.json(content_type=None)

    async def token(self) -> str:
        status, body = await self.token_request()
        assert status == 200, body
        token: str = body["access_token"]
        return token

    async def pm(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        participant: str | None = "",
        json_body: Any = None,
        data: bytes | None = None,
    ) -> tuple[int, Any]:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        participant = self.creds.participant_id if participant == "" else participant
        if participant is not None:
            headers["x-participant-id"] = participant
        url = f"{self.sim.polymarket_url}{path}"
        async with self.http.request(
            method, url, headers=headers, json=json_body, data=data
        ) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None

    async def pm_balance(self, token: str, name: str = MAIN) -> dict[str, Any]:
        status, body = await self.pm(
            "POST",
            "/v1/positions/balance",
            token=token,
            json_body={"name": name, "currency": "USD"},
        )
        assert status == 200, body
        result: dict[str, Any] = body
        return result


@pytest.fixture
def client(
    simulator: Simulator, http: aiohttp.ClientSession, sim_credentials: SimCredentials
) -> Client:
    return Client(simulator, http, sim_credentials)


def make_sim(data: dict[str, Any], clock: FakeClock) -> Simulator:
    return Simulator(Scenario.from_dict(data), clock=clock)


# --- shapes --------------------------------------------------------------------------


async def test_legacy_pdt_is_the_seed_margin_example(client: Client) -> None:
    without = dict(SEED_MARGIN, account_id=19818)
    without["margin_details"] = {
        k: v for k, v in SEED_MARGIN["margin_details"].items() if k != "top_contributors"
    }
    assert await client.balance("19818") == without
    assert await client.balance("19818", top_margin_contributors_limit=1) == dict(
        SEED_MARGIN, account_id=19818
    )


async def test_margin_is_the_seed_example_after_the_2026_drift(client: Client) -> None:
    data = await client.balance("19816")
    seed = flatten(SEED_MARGIN)
    got = flatten(data)
    del seed["margin_details.top_contributors"]
    for path in CS_DEPRECATED_FIELDS:
        assert path not in got
        del seed[path]
    assert {k: got[k] for k in seed} == seed
    extra = set(got) - set(seed)
    assert extra == NEW_FIELDS | {
        "margin_details.intraday_details.buying_power",
        "margin_details.intraday_details.multiplier",
        "margin_details.overnight_details.buying_power",
        "margin_details.overnight_details.multiplier",
    }


async def test_cash_is_the_seed_cash_example_without_margin_details(client: Client) -> None:
    data = await client.balance("19817")
    expected = {k: v for k, v in SEED_CASH.items() if k != "daily_total_pnl"}
    expected["account_id"] = 19817
    assert {k: data[k] for k in expected} == expected
    assert set(data) - set(expected) == NEW_FIELDS
    assert "margin_details" not in data
    # asking for contributors does not invent margin details
    assert "margin_details" not in await client.balance("19817", top_margin_contributors_limit=3)


async def test_clear_street_envelope(client: Client) -> None:
    status, body, resp = await client.cs("/v1/accounts/19816/balances")
    assert status == 200
    assert resp.content_type == "application/json"
    assert set(body) == {"data", "error", "metadata"}
    assert body["error"] is None
    uuid.UUID(body["metadata"]["request_id"])


async def test_top_contributors_only_on_request(client: Client) -> None:
    assert "top_contributors" not in (await client.balance())["margin_details"]
    three = (await client.balance(top_margin_contributors_limit=3))["margin_details"]
    assert len(three["top_contributors"]) == 3
    assert list(three) == sorted(three)  # where the venue puts it: alphabetical
    many = (await client.balance(top_margin_contributors_limit=1000))["margin_details"]
    assert 3 < len(many["top_contributors"]) <= 1000
    for bad in ("0", "x", "-1"):
        status, body, _ = await client.cs(
            "/v1/accounts/19816/balances", top_margin_contributors_limit=bad
        )
        assert status == 400
        assert body["error"]["code"] == 400


async def test_polymarket_balance_shape(client: Client) -> None:
    token = await client.token()
    body = await client.pm_balance(token)
    assert set(body) == PM_FIELDS
    assert len(body["securities"]) >= 2
    for entry in body["securities"].values():
        assert set(entry) == SECURITY_FIELDS
        assert entry["haircut"].isdigit()
        assert "." in entry["marketValue"]
    for key in PM_FIELDS - {"securities", "updateTime", "alternateCapitalRequirementCurrency"}:
        assert re.fullmatch(r"-?\d+\.\d\d", body[key]), key
    stamp = datetime.fromisoformat(body["updateTime"].replace("Z", "+00:00"))
    assert body["updateTime"].endswith("Z")
    assert abs(stamp.timestamp() - client.sim.clock()) < 1

    status, all_ccy = await client.pm(
        "POST", "/v1/positions/balances", token=token, json_body={"name": MAIN}
    )
    assert status == 200
    assert list(all_ccy) == ["balances"]
    assert set(all_ccy["balances"]["USD"]) == PM_FIELDS


async def test_polymarket_health_whoami_and_accounts(client: Client) -> None:
    assert await client.pm("GET", "/v1/health", participant=None) == (200, {"status": "SERVING"})
    token = await client.token()
    status, who = await client.pm("GET", "/v1/whoami", token=token, participant=None)
    assert (status, who) == (200, {"user": "firms/ACME/users/riskbot", "firm": "firms/ACME"})
    status, listing = await client.pm(
        "GET", "/v1/accounts?user=firms/ACME/users/riskbot", token=token
    )
    assert status == 200
    assert listing == {
        "accounts": [MAIN, "firms/ACME/accounts/hedge"],
        "displayNames": ["main", "hedge"],
    }


# --- Clear Street auth and errors ----------------------------------------------------


async def test_clear_street_auth_and_errors(client: Client) -> None:
    for key in (None, "wrong"):
        status, body, _ = await client.cs("/v1/accounts/19816/balances", key=key)
        assert status == 401
        assert body["error"]["code"] == 401
        assert body["error"]["message"]
        uuid.UUID(body["metadata"]["request_id"])
    status, body, _ = await client.cs("/v1/accounts/99999/balances")
    assert status == 404
    assert body["error"] == {"code": 404, "message": "Some requested entity was not found"}
    status, body, _ = await client.cs("/v1/accounts/abc/balances")
    assert status == 400
    assert body["error"]["code"] == 400
    status, body, _ = await client.cs("/v1/accounts", key="wrong")
    assert status == 401


async def test_clear_street_key_file_is_reread_when_rotated(
    tmp_path: Path, sim_clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("first\n")
    data = {
        "clearstreet": {"api_key_files": ["key"], "accounts": [{"id": 1}]},
    }
    sim = Simulator(Scenario.from_dict(data, tmp_path), clock=sim_clock)
    await sim.start()
    try:
        url = f"{sim.clearstreet_url}/v1/accounts/1/balances"
        async with http.get(url, headers={"Authorization": "Bearer first"}) as resp:
            assert resp.status == 200
        key_file.write_text("second-key")
        async with http.get(url, headers={"Authorization": "Bearer second-key"}) as resp:
            assert resp.status == 200
        async with http.get(url, headers={"Authorization": "Bearer first"}) as resp:
            assert resp.status == 401
    finally:
        await sim.stop()


# --- Polymarket auth -----------------------------------------------------------------


async def test_good_assertion_gets_a_token(client: Client) -> None:
    status, body = await client.token_request()
    assert status == 200
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 180
    assert body["scope"] == "read:positions"
    assert len(body["access_token"]) >= 32


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "https://pmx-prod.us.auth0.com/oauth/token"}, "aud"),
        ({"exp": -10}, "expired"),
        ({"exp": 301}, "5 minutes"),
        ({"iss": "someone-else", "sub": "someone-else"}, "unknown client"),
        ({"sub": "other"}, "sub"),
        ({"jti": None}, "jti"),
        ({"exp": None}, "exp"),
    ],
)
async def test_bad_assertions_are_refused(
    client: Client, sim_credentials: SimCredentials, claims: dict[str, Any], reason: str
) -> None:
    now = client.sim.clock()
    for key in ("exp",):
        if isinstance(claims.get(key), int):
            claims = {**claims, key: int(now) + claims[key]}
    assertion = sim_credentials.assertion(client.sim.token_url, now=now, **claims)
    status, body = await client.token_request(client_assertion=assertion)
    assert status == 401
    assert body["error"] == "invalid_client"
    assert reason in body["error_description"]


async def test_wrong_signature_and_algorithm_are_refused(
    client: Client, sim_credentials: SimCredentials, other_rsa_keypair: RsaKeyPair
) -> None:
    now = int(client.sim.clock())
    claims = {
        "iss": sim_credentials.client_id,
        "sub": sim_credentials.client_id,
        "aud": client.sim.token_url,
        "iat": now,
        "exp": now + 60,
        "jti": "j1",
    }
    forged = jwt.encode(claims, other_rsa_keypair.private_pem, algorithm="RS256")
    status, body = await client.token_request(client_assertion=forged)
    assert (status, body["error"]) == (401, "invalid_client")
    assert "signature" in body["error_description"]
    hs = jwt.encode(
        {**claims, "jti": "j2"}, "a-shared-secret-of-32-bytes-or-more!", algorithm="HS256"
    )
    status, body = await client.token_request(client_assertion=hs)
    assert (status, body["error"]) == (401, "invalid_client")
    assert "RS256" in body["error_description"]
    status, body = await client.token_request(client_assertion="not-a-jwt")
    assert (status, body["error"]) == (401, "invalid_client")


async def test_replayed_jti_is_refused(client: Client, sim_credentials: SimCredentials) -> None:
    assertion = sim_credentials.assertion(client.sim.token_url, now=client.sim.clock())
    assert (await client.token_request(client_assertion=assertion))[0] == 200
    status, body = await client.token_request(client_assertion=assertion)
    assert status == 401
    assert "already been used" in body["error_description"]


async def test_token_request_form_errors(client: Client) -> None:
    status, body = await client.token_request(grant_type="password")
    assert (status, body["error"]) == (400, "unsupported_grant_type")
    status, body = await client.token_request(client_assertion_type="basic")
    assert (status, body["error"]) == (400, "invalid_request")
    status, body = await client.token_request(audience="https://api.prod.polymarketexchange.com")
    assert (status, body["error"]) == (401, "access_denied")


async def test_audience_overrides(
    sim_scenario_data: dict[str, Any],
    sim_clock: FakeClock,
    sim_credentials: SimCredentials,
    http: aiohttp.ClientSession,
) -> None:
    sim_scenario_data["polymarket"]["token_audience"] = "https://pmx-prod.us.auth0.com/oauth/token"
    sim_scenario_data["polymarket"]["api_audience"] = "https://api.prod.polymarketexchange.com"
    sim = make_sim(sim_scenario_data, sim_clock)
    await sim.start()
    try:
        c = Client(sim, http, sim_credentials)
        assertion = sim_credentials.assertion("https://pmx-prod.us.auth0.com/oauth/token")
        status, body = await c.token_request(
            client_assertion=assertion, audience="https://api.prod.polymarketexchange.com"
        )
        assert status == 200, body
        assert (await c.token_request())[0] == 200  # the real URLs still work
    finally:
        await sim.stop()


async def test_polymarket_call_auth(client: Client, sim_clock: FakeClock) -> None:
    body = {"name": MAIN, "currency": "USD"}
    path = "/v1/positions/balance"
    status, err = await client.pm("POST", path, json_body=body)
    assert (status, err["code"], err["details"]) == (401, 16, [])
    status, err = await client.pm("POST", path, token="made-up", json_body=body)
    assert (status, err["code"]) == (401, 16)
    token = await client.token()
    status, err = await client.pm("POST", path, token=token, participant=None, json_body=body)
    assert (status, err) == (403, {"code": 7, "message": "permission denied", "details": []})
    status, err = await client.pm(
        "POST", path, token=token, participant="firms/EVIL/users/x", json_body=body
    )
    assert (status, err["code"]) == (403, 7)
    status, err = await client.pm("GET", "/v1/accounts", token=token, participant=None)
    assert status == 403
    assert (await client.pm("POST", path, token=token, json_body=body))[0] == 200
    # tokens expire after expires_in (180 s) on the simulator's clock
    sim_clock.advance(179)
    assert (await client.pm("POST", path, token=token, json_body=body))[0] == 200
    sim_clock.advance(2)
    status, err = await client.pm("POST", path, token=token, json_body=body)
    assert (status, err["code"], err["message"]) == (401, 16, "Jwt is expired")


async def test_expire_tokens_and_ttl(client: Client, sim_clock: FakeClock) -> None:
    token = await client.token()
    client.sim.expire_tokens()
    assert (await client.pm("GET", "/v1/accounts", token=token))[0] == 401
    client.sim.configure(token_ttl=5)
    _status, body = await client.token_request()
    assert body["expires_in"] == 5
    token = body["access_token"]
    assert (await client.pm("GET", "/v1/accounts", token=token))[0] == 200
    sim_clock.advance(5)
    assert (await client.pm("GET", "/v1/accounts", token=token))[0] == 401


async def test_polymarket_request_errors(client: Client) -> None:
    token = await client.token()
    path = "/v1/positions/balance"
    status, err = await client.pm("POST", path, token=token, data=b"{not json")
    assert (status, err["code"]) == (400, 3)
    status, err = await client.pm("POST", path, token=token, json_body={"currency": "USD"})
    assert (status, err["code"]) == (400, 3)
    status, err = await client.pm(
        "POST", path, token=token, json_body={"name": "firms/ACME/accounts/nope", "currency": "USD"}
    )
    assert (status, err["code"]) == (404, 5)
    status, err = await client.pm(
        "POST", path, token=token, json_body={"name": MAIN, "currency": "EUR"}
    )
    assert (status, err["code"]) == (404, 5)


# --- discovery -----------------------------------------------------------------------


async def test_clear_street_pagination(
    sim_credentials: SimCredentials, sim_clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    data = {
        "clearstreet": {
            "api_keys": [sim_credentials.api_key],
            "accounts": [
                {"id": "5", "template": "cash", "status": "CLOSED", "full_name": "Five"},
                {"generate": {"count": 249, "first_id": 100000, "template": "margin"}},
            ],
        }
    }
    sim = make_sim(data, sim_clock)
    await sim.start()
    try:
        c = Client(sim, http, sim_credentials)
        seen: list[int] = []
        token: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"page_size": 100}
            if token:
                params["page_token"] = token
            status, body, _ = await c.cs("/v1/accounts", **params)
            assert status == 200
            pages += 1
            seen += [a["id"] for a in body["data"]]
            token = body["metadata"].get("next_page_token")
            if not token:
                assert "next_page_token" not in body["metadata"]
                break
        assert pages == 3
        assert seen == [5, *range(100000, 100249)]
        status, body, _ = await c.cs("/v1/accounts")
        assert len(body["data"]) == 100  # default page size
        first = body["data"][0]
        assert first == {
            "id": 5,
            "full_name": "Five",
            "short_name": "SIM5",
            "status": "CLOSED",
            "subtype": "CASH",
            "type": "CUSTOMER",
        }
        assert body["data"][1]["subtype"] == "MARGIN"
        status, body, _ = await c.cs("/v1/accounts", page_size=5000)
        assert len(body["data"]) == 250  # capped at 1000 a page: all of them
        assert "next_page_token" not in body["metadata"]
        sim.configure(last_page_token="empty")
        status, body, _ = await c.cs("/v1/accounts", page_size=1000)
        assert body["metadata"]["next_page_token"] == ""
        for bad in ({"page_token": "garbage!"}, {"page_size": "0"}, {"page_size": "x"}):
            status, body, _ = await c.cs("/v1/accounts", **bad)
            assert status == 400, bad
        # accounts added or removed between pages do not upset the walk
        status, body, _ = await c.cs("/v1/accounts", page_size=2)
        sim.remove_account("clearstreet", "100000")
        sim.add_account("clearstreet", "100001", template="cash")
        status, body, _ = await c.cs(
            "/v1/accounts", page_size=2, page_token=body["metadata"]["next_page_token"]
        )
        assert [a["id"] for a in body["data"]] == [100001, 100002]
        assert body["data"][0]["subtype"] == "CASH"
    finally:
        await sim.stop()


# --- timeline ------------------------------------------------------------------------


def timeline_data(creds: SimCredentials, timeline: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "seed": 42,
        "clearstreet": {
            "api_keys": [creds.api_key],
            "accounts": [
                {"id": "19816"},
                {"id": "19817", "set": {"buying_power": 60000}},
                {"id": "19818", "template": "legacy_pdt"},
            ],
        },
        "polymarket": {"accounts": [{"id": MAIN}]},
        "timeline": timeline,
    }


async def test_timeline_set_and_ramp_over_a_fake_clock(
    sim_credentials: SimCredentials, sim_clock: FakeClock
) -> None:
    data = timeline_data(
        sim_credentials,
        [
                {"at": "5s", "venue": "clearstreet", "account": "19816",
                 "set": {"buying_power": "20000.00", "margin_details.day_trade_count": 3}},
                {"at": "0s", "venue": "clearstreet", "account": "19817",
                 "ramp": {"field": "buying_power", "from": "60000", "to": "20000", "over": "30s"}},
                {"at": "40s", "venue": "clearstreet", "account": "19817",
                 "ramp": {"field": "buying_power", "to": "30000", "over": "10s"}},
                {"at": "10s", "venue": "clearstreet", "account": "19818",
                 "remove": ["margin_details.pattern_day_trader"]},
                {"at": "10s", "venue": "polymarket", "account": MAIN,
                 "set": {"excessCapital": -5}},
        ],
    )  # fmt: skip
    sim = make_sim(data, sim_clock)

    def cs(account: str, path: str) -> Any:
        return flatten(sim.balance("clearstreet", account)).get(path)

    assert cs("19816", "buying_power") == "90000.00"
    assert cs("19817", "buying_power") == "60000.00"
    sim_clock.advance(5)
    assert cs("19816", "buying_power") == "20000.00"
    assert cs("19816", "margin_details.day_trade_count") == 3  # an integer field stays one
    assert cs("19817", "buying_power") == "53333.33"
    sim_clock.advance(10)
    assert cs("19817", "buying_power") == "40000.00"
    assert cs("19818", "margin_details.pattern_day_trader") is None
    assert "margin_details.day_trade_count" in flatten(sim.balance("clearstreet", "19818"))
    assert sim.balance("polymarket", MAIN)["excessCapital"] == "-5.00"
    sim_clock.advance(15)  # t = 30
    assert cs("19817", "buying_power") == "20000.00"
    sim_clock.advance(15)  # t = 45: the second ramp (no `from`) starts where the first ended
    assert cs("19817", "buying_power") == "25000.00"
    sim_clock.advance(100)
    assert cs("19817", "buying_power") == "30000.00"

    # a change made now overrides earlier events; later ones still apply
    clock = FakeClock(1000.0)
    sim = make_sim(data, clock)
    clock.advance(35)
    sim.set_fields("clearstreet", "19817", {"buying_power": 70000})
    assert cs("19817", "buying_power") == "70000.00"
    clock.advance(10)  # t = 45: the 40s ramp runs from 70000 to 30000
    assert cs("19817", "buying_power") == "50000.00"


async def test_walk_is_deterministic_and_bounded(
    sim_credentials: SimCredentials, sim_clock: FakeClock
) -> None:
    walk = {"field": "excessCapital", "step": "50", "every": "1s", "min": "21300", "max": "21600"}
    data = timeline_data(
        sim_credentials, [{"at": "2s", "venue": "polymarket", "account": MAIN, "walk": walk}]
    )
    clocks = [FakeClock(1000.0), FakeClock(5000.0)]
    sims = [make_sim(data, c) for c in clocks]
    series: list[list[str]] = [[], []]
    for _ in range(120):
        for i, sim in enumerate(sims):
            series[i].append(sim.balance("polymarket", MAIN)["excessCapital"])
            clocks[i].advance(0.5)
    assert series[0] == series[1]
    assert series[0][:5] == ["21450.00"] * 5  # before 2s, and at its start
    values = [float(v) for v in series[0]]
    assert min(values) >= 21300
    assert max(values) <= 21600
    assert len(set(values)) > 3
    steps = {abs(a - b) for a, b in itertools.pairwise(values)}
    assert steps <= {0.0, 50.0}
    # a different seed walks differently
    other = make_sim({**data, "seed": 43}, FakeClock(1000.0))
    assert other.balance("polymarket", MAIN)["excessCapital"] == "21450.00"
    # going back in time gives the same values again
    clocks[0].now = 1000.0 + 30
    assert sims[0].balance("polymarket", MAIN)["excessCapital"] == series[0][60]


async def test_timeline_served_over_http(client: Client, sim_clock: FakeClock) -> None:
    client.sim.set_fields(
        "clearstreet", "19816", {"equity": 1.5, "buying_power": "7"}, remove=["sod"]
    )
    data = await client.balance("19816")
    assert data["equity"] == "1.50"  # numbers take the field's wire form
    assert data["buying_power"] == "7"  # strings are sent as given
    assert "sod" not in data
    client.sim.set_fields("clearstreet", "19816", {"margin_details": None})
    assert (await client.balance("19816"))["margin_details"] is None


# --- faults --------------------------------------------------------------------------


async def test_status_fault_in_each_venue_shape(client: Client) -> None:
    sim = client.sim
    sim.add_fault(
        {"venue": "clearstreet", "kind": "status", "status": 429, "retry_after": 2,
         "retry_after_ms": 1500, "count": 1}
    )  # fmt: skip
    status, body, resp = await client.cs("/v1/accounts/19816/balances")
    assert status == 429
    assert body["error"]["code"] == 429
    uuid.UUID(body["metadata"]["request_id"])
    assert resp.headers["Retry-After"] == "2"
    assert resp.headers["retry-after-ms"] == "1500"
    assert (await client.cs("/v1/accounts/19816/balances"))[0] == 200  # count: 1 used up

    token = await client.token()
    sim.add_fault({"venue": "polymarket", "kind": "status", "status": 429, "endpoint": "balances"})
    status, body = await client.pm(
        "POST", "/v1/positions/balance", token=token, json_body={"name": MAIN, "currency": "USD"}
    )
    assert (status, body) == (429, {"code": 8, "message": "rate limit exceeded", "details": []})
    assert (await client.pm("GET", "/v1/accounts", token=token))[0] == 200  # other endpoint
    sim.add_fault({"venue": "polymarket", "kind": "status", "status": 503, "endpoint": "token"})
    status, body = await client.token_request()
    assert status == 503
    assert set(body) == {"error", "error_description"}


async def test_fault_filters_count_and_duration(client: Client, sim_clock: FakeClock) -> None:
    sim = client.sim
    fid = sim.add_fault(
        {"venue": "*", "account": "19817", "kind": "status", "status": 500, "for": "10s"}
    )
    assert (await client.cs("/v1/accounts/19816/balances"))[0] == 200
    assert (await client.cs("/v1/accounts/19817/balances"))[0] == 500
    assert (await client.cs("/v1/accounts"))[0] == 200
    assert [f["id"] for f in sim.faults()] == [fid]
    sim_clock.advance(10)
    assert (await client.cs("/v1/accounts/19817/balances"))[0] == 200
    assert sim.faults() == []
    sim.add_fault({"venue": "clearstreet", "kind": "status", "status": 502, "count": 2})
    statuses = [(await client.cs("/v1/accounts/19816/balances"))[0] for _ in range(3)]
    assert statuses == [502, 502, 200]
    fid = sim.add_fault({"kind": "status", "status": 500})
    assert sim.remove_fault(fid)
    assert not sim.remove_fault(fid)
    assert (await client.cs("/v1/accounts/19816/balances"))[0] == 200


async def test_timeline_fault(
    sim_scenario_data: dict[str, Any], sim_clock: FakeClock, sim_credentials: SimCredentials,
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    sim_scenario_data["timeline"] = [
        {
            "at": "20s",
            "fault": {"venue": "clearstreet", "kind": "status", "status": 503, "for": "15s"},
        }
    ]
    sim = make_sim(sim_scenario_data, sim_clock)
    await sim.start()
    try:
        c = Client(sim, http, sim_credentials)
        got = []
        for _ in range(4):
            got.append((await c.cs("/v1/accounts/19816/balances"))[0])
            sim_clock.advance(10)
        assert got == [200, 200, 503, 503]
        assert (await c.cs("/v1/accounts/19816/balances"))[0] == 200  # t = 40
    finally:
        await sim.stop()


async def test_delay_fault(client: Client) -> None:
    client.sim.add_fault({"venue": "clearstreet", "kind": "delay", "seconds": 0.3, "count": 1})
    started = time.monotonic()
    assert (await client.cs("/v1/accounts/19816/balances"))[0] == 200
    assert time.monotonic() - started >= 0.29
    timeout = aiohttp.ClientTimeout(total=0.05)
    client.sim.add_fault({"venue": "clearstreet", "kind": "delay", "seconds": "1s", "count": 1})
    with pytest.raises(asyncio.TimeoutError):
        async with client.http.get(
            f"{client.sim.clearstreet_url}/v1/accounts/19816/balances", timeout=timeout
        ):
            pass


async def test_body_faults(client: Client) -> None:
    sim = client.sim
    url = f"{sim.clearstreet_url}/v1/accounts/19818/balances"
    headers = {"Authorization": f"Bearer {client.creds.api_key}"}

    async def raw() -> tuple[int, bytes, aiohttp.ClientResponse]:
        async with client.http.get(url, headers=headers) as resp:
            return resp.status, await resp.read(), resp

    sim.add_fault({"venue": "clearstreet", "kind": "malformed", "count": 1})
    status, body, _ = await raw()
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)

    sim.add_fault({"venue": "clearstreet", "kind": "truncated", "count": 1})
    status, body, resp = await raw()
    full = (await raw())[1]
    assert status == 200
    assert int(resp.headers["Content-Length"]) == len(body) == len(full) // 2
    assert full.startswith(body[:50])
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)

    sim.add_fault(
        {"venue": "clearstreet", "kind": "wrong_type", "count": 1,
         "fields": {"buying_power": {"a": 1}, "sod.equity": True}}
    )  # fmt: skip
    data = json.loads((await raw())[1])["data"]
    assert data["buying_power"] == {"a": 1}
    assert data["sod"]["equity"] is True

    sim.add_fault(
        {"venue": "clearstreet", "kind": "remove_fields", "count": 1,
         "fields": list(CS_DEPRECATED_FIELDS)}
    )  # fmt: skip
    data = flatten(json.loads((await raw())[1])["data"])
    assert not set(CS_DEPRECATED_FIELDS) & set(data)
    assert "margin_details.usage.used" in data
    assert "daily_total_pnl" in flatten(json.loads((await raw())[1])["data"])  # used up

    sim.add_fault({"venue": "clearstreet", "kind": "oversized", "bytes": 200_000, "count": 1})
    status, body, _ = await raw()
    assert len(body) == 200_000
    assert json.loads(body)["data"]["account_id"] == 19818
    sim.add_fault({"venue": "clearstreet", "kind": "oversized", "count": 1})
    assert len((await raw())[1]) == 5 * 1024 * 1024

    sim.add_fault({"venue": "clearstreet", "kind": "drop", "count": 1})
    # over a raw socket: aiohttp's client would quietly retry a dropped GET once
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(
        b"GET /clearstreet/v1/accounts/19818/balances HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + client.creds.api_key.encode() + b"\r\n\r\n"
    )
    try:
        answer = await reader.read()
    except ConnectionResetError:
        answer = b""
    assert answer == b""  # closed without an answer
    writer.close()
    assert (await raw())[0] == 200
    dropped = [r for r in sim.requests(venue="clearstreet") if r["status"] == 0]
    assert len(dropped) == 1


async def test_polymarket_body_faults(client: Client) -> None:
    token = await client.token()
    client.sim.add_fault(
        {"venue": "polymarket", "account": MAIN, "kind": "wrong_type",
         "path": "securities.FED-DEC-CUT-NO.haircut", "value": 1.5}
    )  # fmt: skip
    body = await client.pm_balance(token)
    assert body["securities"]["FED-DEC-CUT-NO"]["haircut"] == 1.5
    _status, all_ccy = await client.pm(
        "POST", "/v1/positions/balances", token=token, json_body={"name": MAIN}
    )
    assert all_ccy["balances"]["USD"]["securities"]["FED-DEC-CUT-NO"]["haircut"] == 1.5
    other = await client.pm_balance(token, "firms/ACME/accounts/hedge")
    assert other["securities"]["FED-DEC-CUT-NO"]["haircut"] == "1000"


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"kind": "explode"}, "kind"),
        ({"kind": "status", "status": 42}, "status"),
        ({"kind": "status", "venue": "nyse"}, "venue"),
        ({"kind": "status", "endpoint": "orders"}, "endpoint"),
        ({"kind": "delay"}, "seconds"),
        ({"kind": "delay", "seconds": "soon"}, "seconds"),
        ({"kind": "wrong_type"}, "fields"),
        ({"kind": "remove_fields", "fields": []}, "fields"),
        ({"kind": "drop", "bytes": 3}, "bytes"),
        ({"kind": "drop", "count": 0}, "count"),
    ],
)
def test_invalid_faults(spec: dict[str, Any], key: str, sim_clock: FakeClock) -> None:
    sim = make_sim({}, sim_clock)
    with pytest.raises(FaultSpecError) as info:
        sim.add_fault(spec)
    assert info.value.key == key


# --- control API ---------------------------------------------------------------------


async def test_control_api_round_trips(client: Client, http: aiohttp.ClientSession) -> None:
    sim_url = f"{client.sim.base_url}/_sim"

    async def call(method: str, path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
        async with http.request(method, f"{sim_url}{path}", json=body, params=params) as resp:
            return resp.status, await resp.json()

    assert await call("GET", "/health") == (200, {"ok": True})
    # set and remove fields
    assert (
        await call(
            "POST", "/set",
            {"venue": "clearstreet", "account": "19816", "set": {"buying_power": "123.45"},
             "remove": ["sod.equity"]},
        )
    )[0] == 200  # fmt: skip
    data = await client.balance("19816")
    assert data["buying_power"] == "123.45"
    assert "equity" not in data["sod"]
    assert (await call("POST", "/set", {"venue": "clearstreet", "account": "1", "set": {}}))[
        0
    ] == 404
    assert (await call("POST", "/set", {"venue": "nyse", "account": "1"}))[0] == 400
    assert (await call("POST", "/set", {"account": "1"}))[0] == 400
    status, body = await call("GET", "/balance", venue="clearstreet", account="19816")
    assert (status, body["buying_power"]) == (200, "123.45")
    # accounts
    assert (
        await call(
            "POST", "/accounts",
            {"venue": "clearstreet", "id": "20000", "template": "cash", "status": "INACTIVE",
             "set": {"buying_power": 5}},
        )
    )[0] == 200  # fmt: skip
    assert (await client.balance("20000"))["buying_power"] == "5.00"
    status, ids = await call("GET", "/accounts/clearstreet")
    assert ids == ["19816", "19817", "19818", "20000"]
    status, listing, _ = await client.cs("/v1/accounts")
    assert listing["data"][-1]["status"] == "INACTIVE"
    assert (await call("DELETE", "/accounts", {"venue": "clearstreet", "id": "20000"}))[0] == 200
    assert (await call("DELETE", "/accounts", venue="clearstreet", id="20000"))[0] == 404
    assert (await client.cs("/v1/accounts/20000/balances"))[0] == 404
    assert (await call("POST", "/accounts", {"venue": "polymarket", "id": "firms/B/accounts/x"}))[
        0
    ] == 200
    assert (await call("GET", "/accounts/polymarket"))[1][-1] == "firms/B/accounts/x"
    assert (await call("POST", "/accounts", {"venue": "clearstreet", "id": "x1"}))[0] == 400
    assert (
        await call("POST", "/accounts", {"venue": "clearstreet", "id": "1", "template": "nope"})
    )[0] == 400
    # faults
    status, body = await call(
        "POST", "/faults", {"venue": "clearstreet", "kind": "status", "status": 500}
    )
    assert status == 200
    fid = body["id"]
    assert (await call("GET", "/faults"))[1][0]["id"] == fid
    assert (await client.cs("/v1/accounts/19816/balances"))[0] == 500
    assert (await call("DELETE", f"/faults/{fid}"))[0] == 200
    assert (await call("DELETE", f"/faults/{fid}"))[0] == 404
    await call("POST", "/faults", {"kind": "status"})
    assert (await call("DELETE", "/faults"))[0] == 200
    assert (await call("GET", "/faults"))[1] == []
    status, body = await call("POST", "/faults", {"kind": "status", "status": "x"})
    assert status == 400
    assert "status" in body["error"]
    # requests
    await call("DELETE", "/requests")
    await client.cs("/v1/accounts/19817/balances")
    before = time.time()
    status, _, _ = await client.cs("/v1/accounts/19816/balances", key="bad")
    status, logged = await call("GET", "/requests", venue="clearstreet", account="19816")
    assert len(logged) == 1
    entry = logged[0]
    assert entry["status"] == 401
    assert entry["endpoint"] == "balances"
    assert entry["method"] == "GET"
    assert entry["path"] == "/clearstreet/v1/accounts/19816/balances"
    assert before - 1 <= entry["t"] <= time.time()
    uuid.UUID(entry["request_id"])
    assert len((await call("GET", "/requests", endpoint="balances"))[1]) == 2
    assert len((await call("GET", "/requests", since=before))[1]) == 1
    assert (await call("DELETE", "/requests"))[0] == 200
    assert (await call("GET", "/requests"))[1] == []
    # tokens and config
    token = await client.token()
    assert (await call("POST", "/tokens/expire"))[0] == 200
    assert (await client.pm("GET", "/v1/accounts", token=token))[0] == 401
    status, config = await call("POST", "/config", {"token_ttl": 60})
    assert (status, config["token_ttl"]) == (200, 60)
    assert (await client.token_request())[1]["expires_in"] == 60
    assert (await call("POST", "/config", {"token_ttl": -1}))[0] == 400
    assert (await call("POST", "/config", {"colour": "red"}))[0] == 400
    assert (await call("POST", "/config", {"api_keys": ["rotated"]}))[0] == 200
    assert (await client.cs("/v1/accounts/19816/balances", key="rotated"))[0] == 200
    assert (await client.cs("/v1/accounts/19816/balances"))[0] == 401


async def test_polymarket_requests_are_logged_with_the_account(client: Client) -> None:
    token = await client.token()
    await client.pm_balance(token)
    logged = client.sim.requests(venue="polymarket")
    assert [(r["endpoint"], r["account"], r["status"]) for r in logged] == [
        ("token", None, 200),
        ("balances", MAIN, 200),
    ]


async def test_request_log_is_a_ring_buffer(sim_clock: FakeClock) -> None:
    sim = Simulator(Scenario.from_dict({}), clock=sim_clock, max_requests=3)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(5):
                async with http.get(f"{sim.polymarket_url}/v1/health") as resp:
                    assert resp.status == 200
        assert len(sim.requests()) == 3
    finally:
        await sim.stop()


# --- scenario files ------------------------------------------------------------------


def test_scenario_errors_have_locations(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        """\
seed: 1
clearstreet:
  api_keys: [k]
  api_key_files: [missing-file]
  accounts:
    - {id: "1", template: margn}
    - {id: abc}
    - {id: "1", colour: red}
polymarket:
  token_ttl: 3 minutes
  clients:
    - {client_id: c, participant_id: p, public_key: "not a key"}
timeline:
  - {at: 5s, venue: clearstreet, account: "2", set: {buying_power: 1}}
  - {at: 5s, venue: clearstreet, account: "1"}
  - {at: 1s, fault: {kind: status, status: 999}}
  - {at: 1s, venue: clearstreet, account: "1", walk: {field: equity, step: x, every: 1s}}
extra: true
"""
    )
    with pytest.raises(SourceError) as info:
        load_scenario(path)
    text = str(info.value)
    expected = [
        (4, 19, "cannot read"),
        (6, 27, "template"),
        (7, 12, "integer"),
        (8, 17, "unknown key 'colour'"),
        (10, 14, "invalid duration"),
        (12, 53, "not a PEM public key"),
        (14, 43, "no Clear Street account 2"),
        (15, 5, "needs one of set"),
        (16, 44, "status must be"),
        (17, 76, "expected a number"),
        (18, 1, "unknown key 'extra'"),
    ]
    for line, col, message in expected:
        assert any(
            p.startswith(f"{path}:{line}:{col}: ") and message in p for p in text.splitlines()
        ), (line, col, message, text)
    assert len(info.value.problems) == len(expected)


def test_scenario_yaml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("clearstreet: [\n")
    with pytest.raises(SourceError, match=rf"{path}:\d+:\d+: invalid YAML"):
        load_scenario(path)
    with pytest.raises(SourceError, match="cannot read"):
        load_scenario(tmp_path / "nope.yaml")


def test_scenario_from_dict_errors_and_duplicates() -> None:
    with pytest.raises(SourceError, match="duplicate account id 7"):
        Scenario.from_dict({"clearstreet": {"accounts": [{"id": 7}, {"id": "7"}]}})
    with pytest.raises(SourceError, match=r"<scenario>:1:1: .*exactly one of public_key"):
        Scenario.from_dict({"polymarket": {"clients": [{"client_id": "c", "participant_id": "p"}]}})
    with pytest.raises(SourceError, match="no Polymarket account"):
        Scenario.from_dict(
            {
                "polymarket": {"accounts": [{"generate": {"count": 3, "prefix": "f/a/g-"}}]},
                "timeline": [
                    {"at": 0, "venue": "polymarket", "account": "f/a/g-4", "set": {"x": 1}}
                ],
            }
        )
    ok = Scenario.from_dict(
        {
            "polymarket": {"accounts": [{"generate": {"count": 3, "prefix": "f/a/g-"}}]},
            "timeline": [{"at": 0, "venue": "polymarket", "account": "f/a/g-3", "set": {"x": 1}}],
        }
    )
    assert ok.timeline[0].account == "f/a/g-3"
    assert Scenario.from_dict(None).clearstreet.accounts == []


def test_generated_accounts_are_cheap(sim_clock: FakeClock) -> None:
    data = {
        "clearstreet": {
            "accounts": [
                {"generate": {"count": 10000, "first_id": 100000, "template": "legacy_pdt",
                              "set": {"buying_power": 1000}}},
            ]
        },
        "polymarket": {
            "accounts": [{"generate": {"count": 2000, "prefix": "firms/F/accounts/g-"}}]
        },
    }  # fmt: skip
    sim = make_sim(data, sim_clock)
    ids = sim.account_ids("clearstreet")
    assert len(ids) == 10000
    assert ids[0] == "100000"
    assert ids[-1] == "109999"
    assert sim.balance("clearstreet", "109999")["buying_power"] == "1000.00"
    sim.set_fields("clearstreet", "100000", {"buying_power": 5})
    assert sim.balance("clearstreet", "100001")["buying_power"] == "1000.00"  # not shared
    assert sim.account_ids("polymarket")[-1] == "firms/F/accounts/g-2000"


def test_example_and_default_scenarios_load(tmp_path: Path) -> None:
    ensure_demo_credentials(REPO / "examples" / "secrets")
    example = load_scenario(REPO / "examples" / "scenario.yaml")
    sim = Simulator(example)
    assert sim.account_ids("clearstreet") == [str(n) for n in range(19816, 19822)]
    assert sim.account_ids("polymarket") == [MAIN, "firms/ACME/accounts/hedge"]
    assert [c.client_id for c in example.polymarket.clients] == ["riskmon-demo"]
    with pytest.raises(SourceError, match="cannot read"):
        default_scenario(tmp_path)
    ensure_demo_credentials(tmp_path / "secrets")
    builtin = default_scenario(tmp_path)
    assert builtin.polymarket.clients[0].participant_id == "firms/ACME/users/riskbot"
    templates = {s.template for s in builtin.clearstreet.accounts}
    assert {"margin", "cash", "legacy_pdt"} <= templates
    assert len(builtin.polymarket.accounts) == 2


# --- keys ----------------------------------------------------------------------------


def test_demo_credentials_are_created_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    folder = tmp_path / "secrets"
    ensure_demo_credentials(folder)
    names = ["clearstreet-api-key", "pmx-demo.pem", "pmx-demo.pub.pem", "riskmon-api-token"]
    first = {n: (folder / n).read_bytes() for n in names}
    ensure_demo_credentials(folder)
    assert {n: (folder / n).read_bytes() for n in names} == first
    for name in ("clearstreet-api-key", "pmx-demo.pem", "riskmon-api-token"):
        assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o600
    assert len(first["clearstreet-api-key"].strip()) >= 32
    assert len(first["riskmon-api-token"].strip()) >= 32
    private = serialization.load_pem_private_key(first["pmx-demo.pem"], password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert private.key_size == 2048
    assert first["pmx-demo.pem"].startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert first["pmx-demo.pub.pem"] == public
    (folder / "pmx-demo.pub.pem").unlink()
    assert keys_main([str(folder)]) == 0
    assert (folder / "pmx-demo.pub.pem").read_bytes() == public
    assert "pmx-demo.pem" in capsys.readouterr().out
    assert keys_main([]) == 2


async def test_demo_credentials_work_against_the_simulator(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    ensure_demo_credentials(tmp_path / "secrets")
    sim = Simulator(default_scenario(tmp_path))
    await sim.start()
    try:
        key = (tmp_path / "secrets" / "clearstreet-api-key").read_text()
        pair = RsaKeyPair(None, (tmp_path / "secrets" / "pmx-demo.pem").read_bytes(), b"")  # type: ignore[arg-type]
        creds = SimCredentials(key, "riskmon-demo", "firms/ACME/users/riskbot", pair)
        c = Client(sim, http, creds)
        assert (await c.balance("19816"))["account_id"] == 19816
        token = await c.token()
        assert (await c.pm_balance(token))["balance"]
    finally:
        await sim.stop()


# --- command line --------------------------------------------------------------------


async def test_cli_serves_until_sigterm(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    ensure_demo_credentials(tmp_path / "secrets")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text((REPO / "examples" / "scenario.yaml").read_text())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.simulator",
        "--scenario", str(scenario), "--listen", "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        base = line.split()[3]
        assert f"(clearstreet: {base}/clearstreet, polymarket: {base}/polymarket)" in line
        async with http.get(f"{base}/_sim/health") as resp:
            assert await resp.json() == {"ok": True}
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_reports_scenario_errors(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text("bogus: 1\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.simulator", "--scenario", str(scenario),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert f"{scenario}:1:1: unknown key 'bogus'" in err.decode()
