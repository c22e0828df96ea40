"""`riskmon run` against a venue that sends text no encoding can write (issue 11, item 2):
the account stays monitored, and nothing else breaks, end to end."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import MqttCollector
from test_daemon import (  # noqa: F401 - subscriber is a fixture
    RiskmonProcess,
    events,
    riskmon_process,
    subscriber,
)

from monitor.simulator import Simulator

RULES = """\
groups:
  - name: capital
    venues: [clearstreet]
    rules:
      - alert: BuyingPowerBelowFloor
        expr: buying_power < 25000
        severity: critical
        annotations:
          summary: >-
            {{ account }} buying power {{ buying_power }} {{ currency }} ({{ margin_type }})
"""
BREACH = "riskmon/events/critical/cs/19816/BuyingPowerBelowFloor"
OTHER_BREACH = "riskmon/events/critical/cs/19817/BuyingPowerBelowFloor"


@pytest.fixture
def riskmon(
    tmp_path: Path, riskmon_config: Callable[..., tuple[Path, int]]
) -> Iterator[RiskmonProcess]:
    with riskmon_process(tmp_path, riskmon_config, instance="test-hostile", rules=RULES) as process:
        yield process


async def test_lone_surrogates_from_a_venue_leave_the_account_monitored(
    riskmon: RiskmonProcess,
    simulator: Simulator,
    subscriber: MqttCollector,  # noqa: F811
) -> None:
    data = {
        **simulator.balance("clearstreet", "19816"),
        "buying_power": "20000.00",
        "currency": "\ud800",
        "margin_type": "REG\udfffT",
        "note": "\udc00",
    }
    simulator.add_fault(
        {
            "venue": "clearstreet",
            "endpoint": "balances",
            "account": "19816",
            "kind": "malformed",
            "status": 200,
            "body": json.dumps({"data": data, "metadata": {"request_id": "r1"}}),
            "content_type": "application/json",
        }
    )
    riskmon.start()
    await riskmon.ready()
    simulator.set_fields("clearstreet", "19817", {"buying_power": "20000.00"})
    # the account is evaluated and its alert published, as its neighbour's is
    await subscriber.wait_for(lambda _: bool(subscriber.on(BREACH) and subscriber.on(OTHER_BREACH)))
    [fired] = events(subscriber, BREACH)
    assert fired["annotations"]["summary"] == "19816 buying power 20000.00 \ufffd (REG\ufffdT)"
    # its series are exported, with the currency label made valid
    metrics = await riskmon.metrics()
    labels = (("account", "19816"), ("currency", "\ufffd"), ("venue", "cs"))
    assert metrics[("riskmon_account_buying_power", labels)] == 20000
    # the API answers for everyone
    status, body = await riskmon.get("/api/v1/accounts")
    assert status == 200
    accounts = {a["account"]: a for a in json.loads(body)["accounts"]}
    assert {"19816", "19817"} <= set(accounts)
    status, _ = await riskmon.get("/api/v1/alerts")
    assert status == 200
    status, _ = await riskmon.get("/healthz")
    assert status == 200
