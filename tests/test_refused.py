"""A broker that refuses riskmon's publishes (an ACL): never a crash, dead letters, an alert.

`riskmon run` end to end against a Mosquitto whose ACL denies some of riskmon's topics.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MosquittoBroker, MqttCollector
from test_daemon import BREACH, RULES, RiskmonProcess, events

from monitor.simulator import Simulator

#: What the daemon may publish on, beside the topics each test refuses.
ALLOWED = ("status", "heartbeat")
UNDELIVERABLE = "EventsUndeliverable"


def acl(folder: Path, allowed: tuple[str, ...]) -> str:
    """A Mosquitto ACL for anonymous clients: read everything of riskmon's, write only
    `allowed` (topic levels under riskmon/)."""
    path = folder / "acl"
    lines = ["topic read riskmon/#"] + [f"topic readwrite riskmon/{name}/#" for name in allowed]
    path.write_text("\n".join(lines) + "\n")
    return f"acl_file {path}\n"


@pytest.fixture(params=["uvloop", "asyncio"])
def event_loop_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=[("alerts",), ()], ids=["events-refused", "events-and-alerts-refused"])
def allowed(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return ALLOWED + tuple(request.param)


@pytest.fixture
def mosquitto(
    mosquitto_factory: Callable[..., MosquittoBroker], tmp_path: Path, allowed: tuple[str, ...]
) -> MosquittoBroker:
    """Overrides conftest's: the broker of `riskmon_config` refuses what is not `allowed`."""
    return mosquitto_factory(extra=acl(tmp_path, allowed))


@pytest.fixture
def riskmon(
    tmp_path: Path,
    riskmon_config: Callable[..., tuple[Path, int]],
    event_loop_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RiskmonProcess]:
    monkeypatch.setenv("RISKMON_EVENT_LOOP", event_loop_name)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "capital.yaml").write_text(RULES)
    config, http_port = riskmon_config(
        instance="test-1", rules="rules/*.yaml", stale_after="1500ms"
    )
    process = RiskmonProcess(tmp_path, config, http_port)
    try:
        yield process
    finally:
        process.stop()


def problems_in(log: str) -> list[str]:
    """Log lines that must never be there: a traceback, an unretrieved task exception."""
    return [
        line
        for line in log.splitlines()
        if "Traceback" in line or "never retrieved" in line or "Fatal Python error" in line
    ]


def statuses(collector: MqttCollector) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in collector.on("riskmon/status/test-1") if m.payload]


async def test_a_refused_event_is_dead_lettered_and_sent_again_once_allowed(
    riskmon: RiskmonProcess,
    simulator: Simulator,
    mosquitto: MosquittoBroker,
    mqtt_collector: Callable[..., MqttCollector],
    tmp_path: Path,
) -> None:
    async with mqtt_collector(["riskmon/#"]) as subscriber:
        riskmon.start()
        await riskmon.ready()
        simulator.set_fields("clearstreet", "19816", {"buying_power": "20000.00"})

        async def dead_letters(n: int) -> bool:
            metrics = await riskmon.metrics()
            found = metrics.get(("riskmon_outbox_dead_letters", ()), 0)
            return found >= n if n else found == 0

        async def undeliverable(state: str | None) -> bool:
            _, body = await riskmon.get("/api/v1/alerts")
            found = [a for a in json.loads(body)["alerts"] if a["alertname"] == UNDELIVERABLE]
            return [a["state"] for a in found] == ([state] if state else [])

        await riskmon.until(lambda: dead_letters(1), "a dead letter", timeout=30)
        await riskmon.until(lambda: undeliverable("firing"), "EventsUndeliverable firing")
        metrics = await riskmon.metrics()
        assert metrics[("riskmon_events_refused_total", (("reason", "not_authorized"),))] >= 5
        active = (
            ("account", "*"),
            ("alertname", UNDELIVERABLE),
            ("severity", "critical"),
            ("state", "firing"),
            ("venue", "riskmon"),
        )
        assert metrics[("riskmon_alert_active", active)] == 1
        # the retained status, which the broker still takes, says so
        await subscriber.wait_for(
            lambda _: any(s.get("dead_letters") for s in statuses(subscriber))
        )
        assert statuses(subscriber)[-1]["alerts"] == [UNDELIVERABLE]
        assert not subscriber.on(BREACH)
        refusals = [line for line in riskmon.log().splitlines() if "refused a publish" in line]
        assert refusals
        assert BREACH in refusals[0]
        assert "Not authorized" in refusals[0]

        # A restart does not abort: the dead letter is queued again, refused again.
        assert riskmon.signal(signal.SIGTERM) == 0
        riskmon.start()
        await riskmon.ready()
        await riskmon.until(lambda: dead_letters(1), "the dead letter again", timeout=30)
        assert "dead letters re-queued at start-up" in riskmon.log()

        # The operator fixes the ACL; a SIGHUP sends the dead letter again.
        acl(tmp_path, (*ALLOWED, "events", "alerts"))
        assert mosquitto.process is not None
        mosquitto.process.send_signal(signal.SIGHUP)  # Mosquitto reloads its ACL
        assert riskmon.process is not None
        riskmon.process.send_signal(signal.SIGHUP)
        await subscriber.wait_for(lambda _: bool(subscriber.on(BREACH)), timeout=30)
        assert [e["status"] for e in events(subscriber, BREACH)] == ["firing"]
        await riskmon.until(lambda: dead_letters(0), "no dead letters")
        await riskmon.until(lambda: undeliverable(None), "EventsUndeliverable resolved", 40)
        assert "dead letters re-queued at reload" in riskmon.log()
        assert riskmon.signal(signal.SIGTERM) == 0
    assert problems_in(riskmon.log()) == []
