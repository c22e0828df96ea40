"""What a venue (or its token endpoint) sends that riskmon must not trust: made valid or
refused at the adapters, over real sockets to the simulator, so that nothing downstream
meets it. Issue 11, items 2, 3 and the parsing, HTTP and auth parts of 7."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import SimCredentials

from monitor.config import AccountConfig, DiscoveryConfig, Secret, VenueConfig
from monitor.config.loader import parse_config
from monitor.errors import (
    SnapshotParseError,
    VenueAuthError,
    VenueRequestError,
)
from monitor.metrics import LABEL_CUT_MARKER, MAX_LABEL_CHARS, Metrics
from monitor.simulator import Simulator
from monitor.snapshot import Snapshot
from monitor.venues.clearstreet import ClearStreetAdapter
from monitor.venues.http import HttpClient
from monitor.venues.pmx_auth import DEFAULT_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME
from monitor.venues.polymarket import PolymarketAdapter
from monitor.yamlsource import SourceError

MAIN = "firms/ACME/accounts/main"


def deadline(seconds: float = 5.0) -> float:
    return asyncio.get_running_loop().time() + seconds


async def fetch(adapter: ClearStreetAdapter | PolymarketAdapter, account: str) -> Snapshot:
    return await adapter.fetch(AccountConfig(account), deadline())


def serve_raw(simulator: Simulator, account: str, body: str) -> None:
    """The next Clear Street balances answer for `account` is `body`, sent as is, 200."""
    simulator.add_fault(
        {
            "venue": "clearstreet",
            "endpoint": "balances",
            "account": account,
            "kind": "malformed",
            "status": 200,
            "body": body,
            "content_type": "application/json",
            "count": 1,
        }
    )


def cs_envelope(simulator: Simulator, account: str, **changes: Any) -> dict[str, Any]:
    data = {**simulator.balance("clearstreet", account), **changes}
    return {"data": data, "metadata": {"request_id": "req-hostile"}}


# -- item 2: text that no encoding can write --------------------------------------------


async def test_lone_surrogates_anywhere_in_an_answer_become_u_fffd(
    simulator: Simulator, cs_config: VenueConfig, http_client: HttpClient
) -> None:
    adapter = ClearStreetAdapter(cs_config, http_client)
    envelope = cs_envelope(
        simulator, "19816", currency="\ud800", margin_type="REG\udfffT", note={"\udc00k": "x"}
    )
    serve_raw(simulator, "19816", json.dumps(envelope))  # ensure_ascii: "\\ud800" escapes
    snap = await fetch(adapter, "19816")
    assert snap.currency == "\ufffd"
    assert snap.fields["margin_type"] == "REG\ufffdT"
    assert snap.fields["note.\ufffdk"] == "x"
    assert snap.fields["buying_power"] > 0
    json.dumps(dict(snap.fields), default=str).encode()  # every text encodes
    # and in an error body the venue's message is readable text too
    simulator.add_fault(
        {
            "venue": "clearstreet",
            "kind": "status",
            "status": 400,
            "body": '{"error": {"message": "bad \\ud800 request"}}',
            "count": 1,
        }
    )
    with pytest.raises(VenueRequestError, match="bad \ufffd request"):
        await fetch(adapter, "19816")


# -- item 3: numbers beyond the range of money ----------------------------------------


@pytest.mark.parametrize("value", ["-1E+999999999", "1E+31", "1" + "0" * 45])
async def test_a_huge_exponent_is_a_parse_error_naming_the_field(
    value: str, simulator: Simulator, cs_config: VenueConfig, http_client: HttpClient
) -> None:
    adapter = ClearStreetAdapter(cs_config, http_client)
    simulator.set_fields("clearstreet", "19816", {"daily_pnl": value})
    out_of_range = r"field daily_pnl: .* outside the range"
    with pytest.raises(SnapshotParseError, match=out_of_range) as caught:
        await fetch(adapter, "19816")
    assert caught.value.request_id
    assert caught.value.account == "19816"
    # as a JSON number, NaN and an infinity too
    for number in ("-1E+999999999", "NaN", "-Infinity"):
        body = json.dumps(cs_envelope(simulator, "19817", daily_pnl="@"))
        serve_raw(simulator, "19817", body.replace('"@"', number))
        with pytest.raises(SnapshotParseError, match=out_of_range):
            await fetch(adapter, "19817")
    assert (await fetch(adapter, "19818")).fields["daily_pnl"] is not None


# -- item 7: the smaller ones ----------------------------------------------------------


@pytest.mark.parametrize("depth", [40, 900, 5000])
async def test_deep_nesting_is_a_parse_error_and_other_accounts_are_unaffected(
    depth: int, simulator: Simulator, cs_config: VenueConfig, http_client: HttpClient
) -> None:
    adapter = ClearStreetAdapter(cs_config, http_client)
    body = json.dumps(cs_envelope(simulator, "19816", deep="@"))
    serve_raw(simulator, "19816", body.replace('"@"', "[" * depth + "]" * depth))
    with pytest.raises(SnapshotParseError, match="more than 32 levels deep"):
        await fetch(adapter, "19816")
    assert (await fetch(adapter, "19817")).fields["buying_power"] > 0


async def test_a_repeated_key_makes_the_answer_ambiguous(
    simulator: Simulator, cs_config: VenueConfig, http_client: HttpClient
) -> None:
    adapter = ClearStreetAdapter(cs_config, http_client)
    body = json.dumps(cs_envelope(simulator, "19816", buying_power="@"))
    serve_raw(simulator, "19816", body.replace('"@"', '"1.00", "buying_power": "90000.00"'))
    with pytest.raises(SnapshotParseError, match="ambiguous: key 'buying_power' appears twice"):
        await fetch(adapter, "19816")
    # spaces before colons and colons in text are no repeat
    body = json.dumps(cs_envelope(simulator, "19816", note="a: b"), separators=(", ", " : "))
    serve_raw(simulator, "19816", body)
    assert (await fetch(adapter, "19816")).fields["note"] == "a: b"


async def test_a_known_text_field_of_half_a_million_characters_is_a_parse_error(
    simulator: Simulator, cs_config: VenueConfig, http_client: HttpClient
) -> None:
    simulator.set_fields("clearstreet", "19816", {"currency": "X" * 500_000})
    adapter = ClearStreetAdapter(cs_config, http_client)
    with pytest.raises(SnapshotParseError, match="field currency: text of 500000 characters"):
        await fetch(adapter, "19816")


def test_metric_label_values_are_bounded() -> None:
    """Whatever else brings a long label value (a configured account id, a Polymarket
    currency from the config), a scrape stays small: the value is cut, visibly."""
    metrics = Metrics()
    fields = {"buying_power": Decimal(1)}
    metrics.update_account(Snapshot("cs", "clearstreet", "A" * 500_000, fields, 0.0, "X" * 500))
    text = metrics.render().decode()
    assert len(text) < 20_000
    cut = "A" * (MAX_LABEL_CHARS - len(LABEL_CUT_MARKER)) + LABEL_CUT_MARKER
    assert f'account="{cut}"' in text


async def test_discovery_refuses_dot_segments_empty_and_unusable_ids(
    simulator: Simulator, cs_config: VenueConfig, http_client: HttpClient
) -> None:
    for i in range(5):
        simulator.add_account("clearstreet", str(20000 + i))
    refused: dict[str, Any] = {"..": "..", ".": ".", "": "", "crlf": "a\r\nb", "bool": True}
    simulator.add_fault(
        {
            "venue": "clearstreet",
            "endpoint": "accounts",
            "kind": "wrong_type",
            "fields": {f"data.{i}.id": value for i, value in enumerate(refused.values())},
        }
    )
    config = dataclasses.replace(cs_config, discovery=DiscoveryConfig())
    adapter = ClearStreetAdapter(config, http_client)
    ids = await adapter.list_accounts(deadline())
    assert not set(ids) & {"..", ".", "", "a\r\nb", "True"}
    assert len(ids) == len(simulator.account_ids("clearstreet")) - len(refused)
    # an id that is a dot segment is never sent as a path
    simulator.clear_requests()
    for bad in ("..", "."):
        with pytest.raises(VenueRequestError, match="cannot be a URL path segment"):
            await fetch(adapter, bad)
    assert simulator.requests(endpoint="balances") == []


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        (-1, DEFAULT_TOKEN_LIFETIME),
        ("NaN", DEFAULT_TOKEN_LIFETIME),
        (True, DEFAULT_TOKEN_LIFETIME),
        (0, DEFAULT_TOKEN_LIFETIME),
        ("1e999", MAX_TOKEN_LIFETIME),
        (10**9, MAX_TOKEN_LIFETIME),
        (600, 600.0),
    ],
)
async def test_a_token_lifetime_that_makes_no_sense_is_the_default_or_cut(
    expires_in: object,
    lifetime: float,
    simulator: Simulator,
    pmx_config: VenueConfig,
    http_client: HttpClient,
) -> None:
    simulator.add_fault(
        {
            "venue": "polymarket",
            "endpoint": "token",
            "kind": "wrong_type",
            "path": "expires_in",
            "value": expires_in,
        }
    )
    adapter = PolymarketAdapter(pmx_config, http_client)
    before = time.time()
    await fetch(adapter, MAIN)
    await fetch(adapter, MAIN)
    assert adapter.auth.mints == 1  # neither minted at every poll ...
    token = adapter.auth._token
    assert token is not None
    assert before + lifetime - 5 <= token.expires_at <= time.time() + lifetime  # ... nor never


async def test_a_token_json_number_too_large_for_a_float_is_cut(
    simulator: Simulator, pmx_config: VenueConfig, http_client: HttpClient
) -> None:
    simulator.add_fault(
        {
            "venue": "polymarket",
            "endpoint": "token",
            "kind": "wrong_type",
            "path": "expires_in",
            "value": "@",
        }
    )
    adapter = PolymarketAdapter(pmx_config, http_client)
    # the simulator writes "@"; a proxy in between would not, but the wire shape is this:
    original = adapter.http.request

    async def with_a_huge_number(*args: Any, **kwargs: Any) -> Any:
        response = await original(*args, **kwargs)
        body = response.body.replace(b'"@"', b"1e999")
        return dataclasses.replace(response, body=body)

    adapter.auth.http.request = with_a_huge_number  # type: ignore[method-assign]
    await fetch(adapter, MAIN)
    token = adapter.auth._token
    assert token is not None
    assert token.expires_at <= time.time() + MAX_TOKEN_LIFETIME


async def test_a_token_with_a_line_break_is_an_auth_error(
    simulator: Simulator, pmx_config: VenueConfig, http_client: HttpClient
) -> None:
    simulator.add_fault(
        {
            "venue": "polymarket",
            "endpoint": "token",
            "kind": "wrong_type",
            "path": "access_token",
            "value": "abc\r\nx-injected: 1",
        }
    )
    adapter = PolymarketAdapter(pmx_config, http_client)
    with pytest.raises(VenueAuthError, match="access_token holds a line break") as caught:
        await fetch(adapter, MAIN)
    assert "injected" not in str(caught.value)
    assert simulator.requests(endpoint="balances") == []


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("key\r\nx-injected: 1", "holds a line break"),
        ("key\x00", "holds a control character"),
        ("ke y", "holds a space"),
        ("kéy", "holds a character that is not ASCII"),
    ],
)
async def test_an_api_key_file_rotated_to_an_unsendable_key_is_an_auth_error(
    key: str,
    problem: str,
    tmp_path: Path,
    simulator: Simulator,
    cs_config: VenueConfig,
    http_client: HttpClient,
    sim_credentials: SimCredentials,
) -> None:
    key_file = tmp_path / "cs.key"
    key_file.write_text(sim_credentials.api_key + "\n")
    secret = Secret.file("cs api_key_file", key_file)
    adapter = ClearStreetAdapter(
        dataclasses.replace(
            cs_config, settings=dataclasses.replace(cs_config.settings, api_key=secret)
        ),
        http_client,
    )
    assert (await fetch(adapter, "19816")).fields["buying_power"] > 0
    key_file.write_text(key + "\n")
    secret.recheck()
    with pytest.raises(VenueAuthError, match=f"{key_file} {problem}") as caught:
        await fetch(adapter, "19816")
    assert "injected" not in str(caught.value)


@pytest.mark.parametrize(
    ("key", "problem"),
    [("abc\\r\\ndef", "holds a line break"), ("abc\\tdef", "holds a control character")],
)
def test_an_api_key_that_cannot_be_a_header_is_refused_at_load(
    key: str, problem: str, tmp_path: Path
) -> None:
    config = f"""\
venues:
  - name: cs
    kind: clearstreet
    base_url: https://api.clearstreet.com
    api_key: "{key}"
    accounts:
      - id: "19816"
"""
    with pytest.raises(SourceError) as caught:
        parse_config(config, "riskmon.yaml", base_dir=tmp_path, environ={})
    [message] = [str(p) for p in caught.value.problems]
    assert message.startswith("riskmon.yaml:5:14: api_key " + problem)
    assert "abc" not in message
    (tmp_path / "cs.key").write_text(key.replace("\\r\\n", "\r\n").replace("\\t", "\t"))
    file_config = config.replace(f'api_key: "{key}"', "api_key_file: cs.key")
    with pytest.raises(SourceError) as caught:
        parse_config(file_config, "riskmon.yaml", base_dir=tmp_path, environ={})
    [message] = [str(p) for p in caught.value.problems]
    assert f"cs.key {problem}" in message


async def test_a_discovered_id_with_a_lone_surrogate_is_polled_as_valid_text(
    simulator: Simulator, cs_config: VenueConfig, http_client: HttpClient
) -> None:
    simulator.add_fault(
        {
            "venue": "clearstreet",
            "endpoint": "accounts",
            "kind": "malformed",
            "status": 200,
            "body": '{"data": [{"id": "19\\ud80016"}, {"id": "19817"}], "metadata": {}}',
            "content_type": "application/json",
            "count": 1,
        }
    )
    config = dataclasses.replace(cs_config, discovery=DiscoveryConfig())
    adapter = ClearStreetAdapter(config, http_client)
    assert await adapter.list_accounts(deadline()) == ["19\ufffd16", "19817"]
    with pytest.raises(VenueRequestError, match="19\ufffd16"):  # asked for, percent-encoded
        await fetch(adapter, "19\ufffd16")
