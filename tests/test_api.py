"""The HTTP endpoints, served on port 0 from a fake ApiSource, read with aiohttp's client."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.api import (
    ApiSource,
    AsyncHttpServer,
    account_json,
    alert_json,
    create_app,
    parse_listen,
    start_http,
    status_json,
)
from monitor.config import AccountConfig
from monitor.engine.lifecycle import Alert, AlertPhase
from monitor.engine.model import RuleSet
from monitor.errors import AccountNotFound
from monitor.metrics import Metrics
from monitor.poller import AccountState
from monitor.snapshot import Snapshot
from monitor.yamlsource import Location, Problem

NOW = 1_790_000_100.0


def make_alert(
    alertname: str, phase: AlertPhase, *, venue: str = "cs-prod", account: str = "19816"
) -> Alert:
    return Alert(
        rule_key=f"capital/{alertname}",
        alertname=alertname,
        severity="critical",
        venue=venue,
        venue_kind="clearstreet",
        account=account,
        labels={"team": "risk"},
        fingerprint="0123456789abcdef0123456789abcdef",
        phase=phase,
        active_at=1_790_000_000.0,
        fired_at=1_790_000_030.5 if phase is AlertPhase.FIRING else None,
        last_evaluated_at=1_790_000_090.0,
        raw_values={"buying_power": Decimal("24000.00")},
        annotations={"summary": "19816 buying power 24000.00 below 25000"},
        firing_values={"buying_power": "23000.00"} if phase is AlertPhase.FIRING else {},
    )


def make_state(account: str = "19816", *, venue: str = "cs-prod") -> AccountState:
    state = AccountState(
        venue=venue,
        account=AccountConfig(account, {"desk": "equities"}, {"floor": Decimal("25000")}),
        added_at=1_790_000_000.0,
    )
    state.last_snapshot = Snapshot(
        venue=venue,
        venue_kind="clearstreet",
        account=account,
        fields={
            "buying_power": Decimal("24000.00"),
            "margin_details": {"pattern_day_trader": False},
            "margin_details.pattern_day_trader": False,
            "margin_type": "REG_T",
        },
        taken_at=1_790_000_095.0,
        currency="USD",
        request_id="req-1",
    )
    state.last_success = 1_790_000_095.0
    state.last_attempt = 1_790_000_095.0
    state.polls = 3
    return state


class FakeSource:
    """An ApiSource with settable answers."""

    def __init__(self) -> None:
        self.metrics_body = b"# HELP riskmon_up x\n# TYPE riskmon_up gauge\nriskmon_up 1\n"
        self.problems: dict[str, str] = {}
        self.is_alive = True
        self.checks = {"config_loaded": True, "first_poll_cycle_done": True, "mqtt_connected": True}
        self.alert_list = [
            alert_json(make_alert("BuyingPowerBelowFloor", AlertPhase.FIRING)),
            alert_json(make_alert("DailyLoss", AlertPhase.PENDING)),
            alert_json(make_alert("DailyLoss", AlertPhase.FIRING, venue="pmx", account="main")),
        ]
        self.status_body = status_json(
            config="/etc/riskmon/riskmon.yaml",
            started_at=NOW - 60,
            last_reload_at=NOW,
            last_reload_successful=False,
            last_reload_problems=[Problem(Location("riskmon.yaml", 9, 18), "params.x: bad")],
            last_success_at=NOW - 60,
            rules=RuleSet(files=("rules/capital.yaml",)),
            warnings=[Problem(Location("rules/capital.yaml", 6, 15), "never sends y", "warning")],
        )
        self.account_list = [
            account_json(make_state("19816"), NOW, 30.0),
            account_json(make_state("20000"), NOW, 30.0),
            account_json(make_state("main", venue="pmx"), NOW, 30.0),
        ]

    def metrics_text(self) -> bytes:
        return self.metrics_body

    def health_problems(self) -> dict[str, str]:
        return dict(self.problems)

    def alive(self) -> bool:
        return self.is_alive

    def readiness(self) -> dict[str, bool]:
        return dict(self.checks)

    def alerts(self) -> list[dict[str, Any]]:
        return self.alert_list

    def accounts(self) -> list[dict[str, Any]]:
        return self.account_list

    def status(self) -> dict[str, Any]:
        return self.status_body


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
async def server(source: FakeSource) -> AsyncIterator[AsyncHttpServer]:
    typed: ApiSource = source  # FakeSource satisfies the Protocol
    running = await start_http(create_app(typed), "127.0.0.1:0")
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def get(
    client: aiohttp.ClientSession, server: AsyncHttpServer, path: str, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """GET `path`; the body as sent (not decompressed). Accept-Encoding: identity unless
    given."""
    headers.setdefault("Accept-Encoding", "identity")
    async with client.get(server.url + path, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


# -- serving --------------------------------------------------------------------------


async def test_start_on_port_zero_binds_a_free_port_on_localhost(server: AsyncHttpServer) -> None:
    assert server.port > 0
    assert server.host == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.port}"


async def test_stop_closes_the_port(source: FakeSource) -> None:
    running = await start_http(create_app(source), "127.0.0.1:0")
    port = running.port
    await running.stop()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_taken_port_raises(server: AsyncHttpServer, source: FakeSource) -> None:
    with pytest.raises(OSError, match="address already in use"):
        await start_http(create_app(source), f"127.0.0.1:{server.port}")


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9817", ("127.0.0.1", 9817)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:9817", ("::1", 9817)),
        (":9817", ("127.0.0.1", 9817)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9817", "host:", "host:99999", "::1:80", "a:b"])
def test_parse_listen_refuses(listen: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen(listen)


# -- /metrics ---------------------------------------------------------------------------


async def test_metrics_plain(
    server: AsyncHttpServer, client: aiohttp.ClientSession, source: FakeSource
) -> None:
    status, headers, body = await get(client, server, "/metrics", **{"Accept-Encoding": "identity"})
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "Content-Encoding" not in headers
    assert body == source.metrics_body


async def test_metrics_gzip_when_accepted_and_large(
    server: AsyncHttpServer, client: aiohttp.ClientSession, source: FakeSource
) -> None:
    metrics = Metrics()
    for i in range(200):
        metrics.update_account(
            Snapshot("cs-prod", "clearstreet", str(i), {"buying_power": Decimal(i)}, 1.0, "USD")
        )
    source.metrics_body = metrics.render()
    assert len(source.metrics_body) > 1024
    status, headers, body = await get(
        client, server, "/metrics", **{"Accept-Encoding": "gzip, deflate"}
    )
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "Accept-Encoding" in headers["Vary"]
    assert gzip.decompress(body) == source.metrics_body
    families = list(text_string_to_metric_families(gzip.decompress(body).decode()))
    assert families[0].name == "riskmon_account_buying_power"
    # gzip;q=0 refuses it; a small body is never compressed
    _, headers, body = await get(client, server, "/metrics", **{"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in headers
    assert body == source.metrics_body


async def test_large_metrics_body_is_compressed_off_the_loop(
    server: AsyncHttpServer, client: aiohttp.ClientSession, source: FakeSource
) -> None:
    source.metrics_body = b"riskmon_x 1\n" * 50_000  # 600 KB
    _, headers, body = await get(client, server, "/metrics", **{"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == source.metrics_body


async def test_small_metrics_body_is_not_compressed(
    server: AsyncHttpServer, client: aiohttp.ClientSession
) -> None:
    _, headers, _ = await get(client, server, "/metrics", **{"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in headers


# -- /healthz, /readyz -----------------------------------------------------------------


async def test_healthz(
    server: AsyncHttpServer, client: aiohttp.ClientSession, source: FakeSource
) -> None:
    status, headers, body = await get(client, server, "/healthz")
    assert (status, body) == (200, b"ok\n")
    assert headers["Content-Type"].startswith("text/plain")
    source.problems = {"outbox": "cannot write: disk full"}
    status, _, body = await get(client, server, "/healthz")
    assert (status, body) == (503, b"unhealthy\noutbox: cannot write: disk full\n")


async def test_livez_fails_only_when_the_loop_is_stuck(
    server: AsyncHttpServer, client: aiohttp.ClientSession, source: FakeSource
) -> None:
    source.problems = {"outbox": "cannot write: disk full"}  # a restart cures no full disk
    status, _, body = await get(client, server, "/livez")
    assert (status, body) == (200, b"ok\n")
    source.is_alive = False
    status, _, body = await get(client, server, "/livez")
    assert (status, body) == (503, b"not alive\n")


async def test_readyz_ready(server: AsyncHttpServer, client: aiohttp.ClientSession) -> None:
    status, headers, body = await get(client, server, "/readyz")
    assert status == 200
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert json.loads(body) == {
        "ready": True,
        "checks": {"config_loaded": True, "first_poll_cycle_done": True, "mqtt_connected": True},
        "failed": [],
    }


async def test_readyz_names_what_is_missing(
    server: AsyncHttpServer, client: aiohttp.ClientSession, source: FakeSource
) -> None:
    source.checks["mqtt_connected"] = False
    source.checks["first_poll_cycle_done"] = False
    status, _, body = await get(client, server, "/readyz")
    assert status == 503
    answer = json.loads(body)
    assert answer["ready"] is False
    assert answer["failed"] == ["first_poll_cycle_done", "mqtt_connected"]
    assert answer["checks"]["config_loaded"] is True


# -- /api/v1/alerts ---------------------------------------------------------------------


async def alerts(
    client: aiohttp.ClientSession, server: AsyncHttpServer, query: str = ""
) -> tuple[int, Any]:
    status, headers, body = await get(client, server, "/api/v1/alerts" + query)
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    return status, json.loads(body)


async def test_alerts_shape(server: AsyncHttpServer, client: aiohttp.ClientSession) -> None:
    status, body = await alerts(client, server)
    assert status == 200
    assert len(body["alerts"]) == 3
    first = body["alerts"][0]
    assert first == {
        "alertname": "BuyingPowerBelowFloor",
        "state": "firing",
        "severity": "critical",
        "venue": "cs-prod",
        "venue_kind": "clearstreet",
        "account": "19816",
        "labels": {"team": "risk"},
        "annotations": {"summary": "19816 buying power 24000.00 below 25000"},
        "values": {"buying_power": "24000.00"},
        "firing_values": {"buying_power": "23000.00"},
        "starts_at": "2026-09-21T14:13:20.000Z",
        "fired_at": "2026-09-21T14:13:50.500Z",
        "keep_firing_since": None,
        "last_evaluated_at": "2026-09-21T14:14:50.000Z",
        "fingerprint": "0123456789abcdef0123456789abcdef",
        "rule": "capital/BuyingPowerBelowFloor",
        "suppressed_by": None,
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?state=firing", [("BuyingPowerBelowFloor", "19816"), ("DailyLoss", "main")]),
        ("?state=pending", [("DailyLoss", "19816")]),
        ("?venue=pmx", [("DailyLoss", "main")]),
        ("?account=19816&state=pending", [("DailyLoss", "19816")]),
        ("?venue=nowhere", []),
    ],
)
async def test_alert_filters(
    server: AsyncHttpServer,
    client: aiohttp.ClientSession,
    query: str,
    expected: list[tuple[str, str]],
) -> None:
    status, body = await alerts(client, server, query)
    assert status == 200
    assert [(a["alertname"], a["account"]) for a in body["alerts"]] == expected


async def test_alert_state_filter_refuses_other_states(
    server: AsyncHttpServer, client: aiohttp.ClientSession
) -> None:
    status, body = await alerts(client, server, "?state=resolved")
    assert status == 400
    assert "firing or pending" in body["error"]


# -- /api/v1/accounts -------------------------------------------------------------------


async def test_accounts_shape_and_filters(
    server: AsyncHttpServer, client: aiohttp.ClientSession
) -> None:
    status, headers, raw = await get(client, server, "/api/v1/accounts")
    assert status == 200
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    body = json.loads(raw)
    assert [a["account"] for a in body["accounts"]] == ["19816", "20000", "main"]
    one = body["accounts"][0]
    assert one["snapshot"]["fields"]["buying_power"] == "24000.00"  # exact, a string
    assert one["params"] == {"floor": "25000"}
    _, _, raw = await get(client, server, "/api/v1/accounts?venue=pmx")
    assert [a["account"] for a in json.loads(raw)["accounts"]] == ["main"]
    _, _, raw = await get(client, server, "/api/v1/accounts?venue=cs-prod&account=20000")
    assert [a["account"] for a in json.loads(raw)["accounts"]] == ["20000"]


async def test_status_shape(server: AsyncHttpServer, client: aiohttp.ClientSession) -> None:
    status, headers, raw = await get(client, server, "/api/v1/status")
    assert status == 200
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert json.loads(raw) == {
        "config": {"path": "/etc/riskmon/riskmon.yaml", "started_at": "2026-09-21T14:14:00.000Z"},
        "rules": {
            "files": ["rules/capital.yaml"],
            "groups": 0,
            "rules": 0,
            "loaded_at": "2026-09-21T14:14:00.000Z",
        },
        "last_reload": {
            "at": "2026-09-21T14:15:00.000Z",
            "successful": False,
            "problems": ["riskmon.yaml:9:18: params.x: bad"],
        },
        "warnings": ["rules/capital.yaml:6:15: never sends y"],
    }
    _, _, index = await get(client, server, "/")
    assert b"/api/v1/status" in index


async def test_large_json_is_gzipped_when_accepted(
    server: AsyncHttpServer, client: aiohttp.ClientSession, source: FakeSource
) -> None:
    source.account_list = source.account_list * 50
    _, headers, raw = await get(client, server, "/api/v1/accounts", **{"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert len(json.loads(gzip.decompress(raw))["accounts"]) == 150


async def test_index_and_unknown_paths(
    server: AsyncHttpServer, client: aiohttp.ClientSession
) -> None:
    status, _, body = await get(client, server, "/")
    assert status == 200
    assert b"/api/v1/alerts" in body
    status, _, _ = await get(client, server, "/nope")
    assert status == 404
    async with client.post(server.url + "/metrics") as response:
        assert response.status == 405
    async with client.head(server.url + "/metrics") as response:
        assert response.status == 200


async def test_a_source_that_raises_gives_500_and_the_server_goes_on(
    server: AsyncHttpServer, client: aiohttp.ClientSession, source: FakeSource
) -> None:
    def broken() -> list[dict[str, Any]]:
        raise RuntimeError("boom")

    source.alerts = broken  # type: ignore[method-assign]
    status, _, _ = await get(client, server, "/api/v1/alerts")
    assert status == 500
    status, _, _ = await get(client, server, "/healthz")
    assert status == 200


# -- JSON helpers -----------------------------------------------------------------------


def test_account_json_of_a_healthy_account() -> None:
    body = account_json(make_state(), NOW, 30.0)
    assert body == {
        "venue": "cs-prod",
        "account": "19816",
        "venue_kind": "clearstreet",
        "currency": "USD",
        "labels": {"desk": "equities"},
        "params": {"floor": "25000"},
        "discovered": False,
        "up": True,
        "stale": False,
        "age_seconds": 5.0,
        "stale_after_seconds": 30.0,
        "last_success": "2026-09-21T14:14:55.000Z",
        "last_attempt": "2026-09-21T14:14:55.000Z",
        "polls": 3,
        "consecutive_failures": 0,
        "last_error": None,
        "snapshot": {
            "taken_at": "2026-09-21T14:14:55.000Z",
            "request_id": "req-1",
            "fields": {
                "buying_power": "24000.00",
                "margin_details.pattern_day_trader": False,
                "margin_type": "REG_T",
            },
        },
    }
    json.dumps(body)  # JSON-safe as it is


def test_account_json_of_a_failing_stale_account() -> None:
    state = make_state()
    state.last_error = AccountNotFound(
        "account 19816 not found", status=404, request_id="req-9", venue="cs-prod"
    )
    state.consecutive_failures = 4
    body = account_json(state, NOW + 60, 30.0)
    assert body["up"] is False
    assert body["stale"] is True
    assert body["age_seconds"] == 65.0
    assert body["last_error"] == {
        "outcome": "not_found",
        "type": "AccountNotFound",
        "message": "account 19816 not found",
        "status": 404,
        "request_id": "req-9",
    }
    assert body["snapshot"]["fields"]["buying_power"] == "24000.00"  # the last good one


def test_account_json_before_the_first_poll() -> None:
    state = AccountState(venue="cs-prod", account=AccountConfig("1"), added_at=NOW - 10)
    body = account_json(state, NOW, 30.0)
    assert body["up"] is None
    assert body["snapshot"] is None
    assert body["last_success"] is None
    assert body["age_seconds"] == 10.0


def test_alert_json_of_a_pending_alert() -> None:
    body = alert_json(make_alert("DailyLoss", AlertPhase.PENDING))
    assert body["state"] == "pending"
    assert body["fired_at"] is None
    assert body["firing_values"] is None  # it has not fired
    json.dumps(body)
