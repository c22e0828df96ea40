"""The rules' comparisons, as the risk-aware schedule sees them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from monitor.engine.expr import comparisons, compile_expression
from monitor.engine.model import RuleSet
from monitor.engine.proximity import RuleProximity
from monitor.engine.rulefile import parse_rules
from monitor.snapshot import Snapshot

FIELDS = {
    "buying_power": Decimal(60000),
    "equity": Decimal(200000),
    "margin_requirement": Decimal(150000),
    "day_trade_count": 3,
}


def snapshot(**params: object) -> Snapshot:
    return Snapshot(
        venue="cs",
        venue_kind="clearstreet",
        account="19816",
        fields=FIELDS,
        taken_at=0.0,
        params=params,
    )


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("buying_power < params.floor", [(60000, 50000)]),
        ("params.floor > buying_power", [(60000, 50000)]),  # either way round
        ("buying_power < params.floor * 1.1", [(60000, 55000)]),
        ("margin_requirement / equity > 0.7", [(0.75, 0.7)]),
        (
            "buying_power < params.floor or equity - margin_requirement <= 40000",
            [(60000, 50000), (50000, 40000)],
        ),
        ("40000 < buying_power < params.floor", [(60000, 40000), (60000, 50000)]),
        ("buying_power < equity", []),  # no threshold: both sides move
        ("account == '19816' and day_trade_count >= 4", [(3, 4)]),
        ("currency == 'USD'", []),
        ("params.floor > 1", []),  # no snapshot value
    ],
)
def test_comparisons_pair_a_snapshot_value_with_a_threshold(
    expr: str, expected: list[tuple[float, float]]
) -> None:
    found = comparisons(compile_expression(expr))
    params = {"floor": Decimal(50000)}
    measured = [
        (
            float(c.value.evaluate(snapshot(), params)),
            float(c.threshold.evaluate(snapshot(), params)),
        )
        for c in found
    ]
    assert [pytest.approx(pair) for pair in expected] == measured


RULES = """\
groups:
  - name: capital
    venues: [clearstreet]
    rules:
      - alert: BuyingPowerBelowFloor
        expr: buying_power < params.floor
        clear: buying_power > params.floor * 1.2
        params: {floor: 50000}
      - alert: NoThreshold
        expr: buying_power < equity
  - name: elsewhere
    venues: [polymarket]
    rules:
      - alert: Other
        expr: buying_power < 1
"""


def test_proximity_measures_the_gaps_of_the_venues_rules_with_the_accounts_params() -> None:
    rules = RuleSet(tuple(parse_rules(RULES, "capital.yaml")))
    alerting = {("cs", "19817")}
    proximity = RuleProximity(lambda: rules, lambda v, a: (v, a) in alerting)
    assert proximity.gaps(snapshot()) == [10000.0, 0.0]  # 60,000 - 50,000; - 60,000
    assert proximity.gaps(snapshot(floor=Decimal(65000))) == [-5000.0, -18000.0]
    assert proximity.gaps(snapshot(floor="many")) == [None, None]  # not a number
    assert proximity.alerting("cs", "19817")
    assert not proximity.alerting("cs", "19816")
