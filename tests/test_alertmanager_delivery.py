"""The Alertmanager destination's parts: its queue beside the outbox (monitor/store.py),
the alert it posts (monitor/alertmanager/payload.py), its sender against an HTTP server
of the test (token rotation, refusals, outages) and its config."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import _free_port
from test_config import CS, EXAMPLES, PEM, error, folder, parse
from test_mqtt import _certificates

from monitor.alertmanager import metrics as am_metrics
from monitor.alertmanager.payload import am_alert
from monitor.alertmanager.sender import AlertmanagerSender
from monitor.config import load_config
from monitor.config.model import AlertmanagerConfig, TlsConfig
from monitor.config.secret import Secret
from monitor.engine.lifecycle import AlertEvent
from monitor.publish.events import to_entry
from monitor.store import OutboxEntry, Store

__all__ = ["folder"]  # a fixture, used by name

T0 = 1_780_000_000.0


def event(status: str = "firing", *, account: str = "19816", at: float = T0) -> AlertEvent:
    return AlertEvent(
        status=status,  # type: ignore[arg-type]
        at=at,
        rule_key="capital/BuyingPowerBelowFloor",
        alertname="BuyingPowerBelowFloor",
        severity="critical",
        venue="cs",
        venue_kind="clearstreet",
        account=account,
        labels={"desk": "equities", "empty": ""},
        annotations={"summary": f"{account} below its floor"},
        values={"buying_power": "20000.00"},
        starts_at=T0,
        ends_at=None if status == "firing" else at,
        fingerprint=f"fp-{account}",
    )


def entry(status: str = "firing", **kwargs: Any) -> OutboxEntry:
    return to_entry(event(status, **kwargs), prefix="riskmon", instance="test-1")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "riskmon.db") as opened:
        yield opened


# -- the queue beside the outbox ---------------------------------------------------------------


def test_each_destination_has_its_own_queue_apart_from_the_outbox(store: Store) -> None:
    store.set_destinations(["http://am-a:9093", "http://am-b:9093"])
    store.append([entry(), entry("resolved", at=T0 + 60)])
    store.acknowledge([r.seq for r in store.pending()])  # MQTT delivered: the outbox empties
    assert store.depth() == 0
    assert store.queue_depth("http://am-a:9093") == store.queue_depth("http://am-b:9093") == 2
    queued = store.queued("http://am-a:9093")
    assert [json.loads(p)["status"] for _id, p in queued] == ["firing", "resolved"]
    store.delivered("http://am-a:9093", [queued[0][0]])
    assert store.queue_depth("http://am-a:9093") == 1
    assert store.queue_depth("http://am-b:9093") == 2  # the other one is not held up
    assert len(store.queued("http://am-b:9093")) == 2


def test_the_queues_survive_a_restart_and_forget_an_alertmanager_removed(tmp_path: Path) -> None:
    with Store(tmp_path / "riskmon.db") as store:
        store.set_destinations(["http://am-a:9093", "http://am-b:9093"])
        store.append([entry()])
    with Store(tmp_path / "riskmon.db") as store:
        assert store.set_destinations(["http://am-a:9093"]) == {"http://am-b:9093": 1}
        assert store.queue_depth("http://am-a:9093") == 1
        assert store.queue_depth("http://am-b:9093") == 0
        store.append([entry(account="19817")])  # only for the one configured
        assert store.queue_depth("http://am-a:9093") == 2


def test_no_destination_queues_nothing_and_an_entry_without_event_is_not_queued(
    store: Store,
) -> None:
    store.append([entry()])
    assert store.queued("http://am-a:9093") == []
    store.set_destinations(["http://am-a:9093"])
    retained_only = OutboxEntry("id", "fp-1", "", b"", "riskmon/alerts/x", b"{}")
    store.append([retained_only])
    assert store.queue_depth("http://am-a:9093") == 0


# -- the alert posted --------------------------------------------------------------------------


def test_a_firing_event_becomes_a_prometheus_style_alert() -> None:
    now = T0 + 30
    alert = am_alert(entry().event_payload, now=now, lookahead=240, api_url="http://riskmon:9817")
    assert alert == {
        "labels": {
            "desk": "equities",  # empty label values are left out
            "alertname": "BuyingPowerBelowFloor",
            "venue": "cs",
            "account": "19816",
            "severity": "critical",
        },
        "annotations": {"summary": "19816 below its floor"},
        "startsAt": "2026-05-28T20:26:40.000Z",
        "endsAt": "2026-05-28T20:31:10.000Z",  # now + 4 minutes: resent before then
        "generatorURL": "http://riskmon:9817/api/v1/alerts?venue=cs&account=19816",
    }


def test_a_resolved_event_ends_when_it_resolved_and_ids_are_url_encoded() -> None:
    payload = entry("resolved", account="firms/ACME/accounts/main", at=T0 + 60).event_payload
    alert = am_alert(payload, now=T0 + 600, lookahead=240, api_url="http://r:1")
    assert alert["endsAt"] == "2026-05-28T20:27:40.000Z"
    assert alert["generatorURL"].endswith("?venue=cs&account=firms%2FACME%2Faccounts%2Fmain")


# -- the sender ------------------------------------------------------------------------------


class FakeAlertmanager:
    """POST /api/v2/alerts: keeps (Authorization header, alerts) and when each arrived
    (`times`, time.monotonic()); answers `status` with `reply_headers`."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, list[dict[str, Any]]]] = []
        self.times: list[float] = []
        self.status = 200
        self.reply_headers: dict[str, str] = {}
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.times.append(time.monotonic())
        self.posts.append((request.headers.get("Authorization", ""), await request.json()))
        self.arrived.set()
        return web.Response(
            status=self.status,
            text="bad alert" if self.status == 400 else "",
            headers=self.reply_headers,
        )

    async def until(self, count: int) -> None:
        async def arrived() -> None:
            while len(self.posts) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(arrived(), 10)


@pytest.fixture
async def fake_am() -> AsyncIterator[tuple[FakeAlertmanager, str]]:
    fake = FakeAlertmanager()
    app = web.Application()
    app.router.add_post("/prefix/api/v2/alerts", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield fake, f"http://127.0.0.1:{port}/prefix"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running(sender: AlertmanagerSender) -> AsyncIterator[None]:
    task = asyncio.create_task(sender.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_token_file_is_read_again_when_it_changes(
    store: Store, tmp_path: Path, fake_am: tuple[FakeAlertmanager, str]
) -> None:
    fake, url = fake_am
    token = tmp_path / "am-token"
    token.write_text("token-1\n")
    config = AlertmanagerConfig(url, Secret.file("am token", token), resend_interval=0.05)
    store.set_destinations([url])
    store.append([entry()])
    firing = [json.loads(entry().event_payload)]  # resent every 50 ms
    sender = AlertmanagerSender(config, store, api_url="http://r:1", firing=lambda: firing)
    async with running(sender):
        await fake.until(1)
        assert fake.posts[0][0] == "Bearer token-1"
        assert fake.posts[0][1][0]["labels"]["account"] == "19816"
        token.write_text("token-2-longer\n")  # a rotated Secret: another size
        while fake.posts[-1][0] != "Bearer token-2-longer":  # resends, every 50 ms
            await fake.until(len(fake.posts) + 1)
    assert store.queue_depth(url) == 0
    assert sender.sent >= 2


async def test_a_refused_token_is_read_again_at_the_next_attempt(
    store: Store, tmp_path: Path, fake_am: tuple[FakeAlertmanager, str]
) -> None:
    fake, url = fake_am
    fake.status = 401
    token = tmp_path / "am-token"
    token.write_text("token-1\n")
    config = AlertmanagerConfig(url, Secret.file("am token", token), resend_interval=3600)
    store.set_destinations([url])
    store.append([entry()])
    sender = AlertmanagerSender(config, store, api_url="", firing=list)
    async with running(sender):
        await fake.until(1)
        # rotated, same size: without the 401 the file would be looked at only after
        # RECHECK_SECONDS (1 s), later than the first back-off (at most 1 s)
        token.write_text("token-2\n")
        fake.status = 200
        await fake.until(2)
    assert [authorization for authorization, _alerts in fake.posts] == [
        "Bearer token-1",
        "Bearer token-2",
    ]
    assert store.queue_depth(url) == 0


async def test_a_refused_batch_is_dropped_and_the_queue_moves_on(
    store: Store, fake_am: tuple[FakeAlertmanager, str]
) -> None:
    fake, url = fake_am
    fake.status = 400
    store.set_destinations([url])
    store.append([entry()])
    sender = AlertmanagerSender(
        AlertmanagerConfig(url, resend_interval=3600), store, api_url="", firing=list
    )
    async with running(sender):
        await fake.until(1)
        fake.status = 200
        store.append([entry("resolved", at=T0 + 60)])
        sender.notify()
        while fake.posts[-1][1][0]["endsAt"] != "2026-05-28T20:27:40.000Z":  # the resolved
            await fake.until(len(fake.posts) + 1)
    assert sender.dropped >= 1  # the first firing one (a resend may have been refused too)
    assert store.queue_depth(url) == 0


async def test_a_failing_alertmanager_keeps_the_events_queued_and_gets_them_later(
    store: Store, fake_am: tuple[FakeAlertmanager, str]
) -> None:
    fake, url = fake_am
    fake.status = 503
    store.set_destinations([url])
    store.append([entry(), entry("resolved", at=T0 + 60)])
    sender = AlertmanagerSender(
        AlertmanagerConfig(url, resend_interval=3600), store, api_url="", firing=list
    )
    async with running(sender):
        await fake.until(1)
        assert store.queue_depth(url) == 2
        assert sender.failed == 2
        fake.status = 200
        await fake.until(2)  # after the first back-off (1 s)
        assert [a["labels"]["account"] for a in fake.posts[1][1]] == ["19816", "19816"]
    assert store.queue_depth(url) == 0
    metrics = am_metrics.render([sender]).decode()
    assert f'riskmon_alertmanager_alerts_failed_total{{alertmanager="{url}"}} 2\n' in metrics
    assert f'riskmon_alertmanager_pending{{alertmanager="{url}"}} 0\n' in metrics


@pytest.mark.parametrize(
    ("status", "header", "value", "hint"),
    [(429, "retry-after-ms", "1500", 1.5), (503, "Retry-After", "2", 2.0)],
)
async def test_a_throttled_post_waits_as_long_as_alertmanager_asks(
    store: Store,
    fake_am: tuple[FakeAlertmanager, str],
    status: int,
    header: str,
    value: str,
    hint: float,
) -> None:
    fake, url = fake_am
    fake.status = status
    fake.reply_headers = {header: value}  # longer than the first back-off (at most 1 s)
    store.set_destinations([url])
    store.append([entry()])
    sender = AlertmanagerSender(
        AlertmanagerConfig(url, resend_interval=3600), store, api_url="", firing=list
    )
    async with running(sender):
        await fake.until(1)
        fake.status, fake.reply_headers = 200, {}
        await fake.until(2)
    assert fake.times[1] - fake.times[0] >= hint
    assert store.queue_depth(url) == 0
    assert (sender.failed, sender.sent) == (1, 1)


async def test_https_with_a_private_ca(store: Store, tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path / "tls", "localhost")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    fake = FakeAlertmanager()
    app = web.Application()
    app.router.add_post("/api/v2/alerts", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_tls).start()
    url = f"https://localhost:{port}"
    store.set_destinations([url])
    store.append([entry()])
    # the system's CAs do not know this one: the post goes through only with ca_file
    trusted = AlertmanagerSender(
        AlertmanagerConfig(url, tls=TlsConfig(ca_file=ca), resend_interval=3600),
        store,
        api_url="",
        firing=list,
    )
    try:
        async with running(trusted):
            await fake.until(1)
        assert fake.posts[0][1][0]["labels"]["account"] == "19816"
    finally:
        await runner.cleanup()


# -- the config ------------------------------------------------------------------------------


def test_alertmanagers_in_the_config(folder: Path) -> None:
    (folder / "am.token").write_text("t\n")
    config = parse(
        folder,
        CS
        + "alertmanagers:\n  - url: http://am:9093/\n    bearer_token_file: am.token\n"
        + "    timeout: 3s\n  - url: https://am-2:9093\n    resend_interval: 30s\n"
        + "    tls: {insecure: true}\n",
    )
    first, second = config.alertmanagers
    assert (first.url, first.timeout, first.resend_interval) == ("http://am:9093", 3.0, 60.0)
    assert first.bearer_token is not None
    assert first.bearer_token.get() == "t"
    assert second.tls is not None
    assert second.tls.insecure
    assert second.resend_interval == 30.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alertmanagers:\n  - {url: http://am:9093, timout: 3s}\n", "unknown key 'timout'"),
        ("alertmanagers:\n  - {timeout: 3s}\n", "missing required key 'url'"),
        ("alertmanagers:\n  - {url: am:9093}\n", "http:// or https://"),
        ("alertmanagers:\n  - {url: http://am, bearer_token_file: nope}\n", "does not exist"),
        ("alertmanagers: http://am:9093\n", "expected a list"),
        ("alertmanagers:\n  - {url: http://am}\n  - {url: http://am}\n", "listed twice"),
    ],
)
def test_alertmanagers_mistakes_name_their_place(folder: Path, text: str, message: str) -> None:
    found = error(folder, CS + text)
    assert found.startswith("riskmon.yaml:"), found
    assert message in found


def test_the_examples_alertmanagers_block_loads_once_uncommented(tmp_path: Path) -> None:
    text = (EXAMPLES / "riskmon.yaml").read_text()
    block = text[text.index("# alertmanagers:") : text.index("\nvenues:")]
    uncommented = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    (tmp_path / "riskmon.yaml").write_text(text.replace(block, uncommented))
    (tmp_path / "secrets").mkdir()
    for name, content in (
        ("clearstreet-api-key", "demo-key\n"),
        ("pmx-demo.pem", PEM),
        ("alertmanager-token", "am-token\n"),
    ):
        (tmp_path / "secrets" / name).write_text(content)
    [am] = load_config(tmp_path / "riskmon.yaml", environ={}).alertmanagers
    assert (am.url, am.timeout, am.resend_interval) == ("http://127.0.0.1:9093", 10.0, 60.0)
