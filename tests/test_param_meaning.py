"""One meaning for an account param wherever it is written: riskmon.yaml, a rule's
defaults, a rule test's account and `riskmon replay --set` (issue 12 item 1).

The bug this guards: `buying_power_floor: "25000"` in riskmon.yaml was text, passed
`check` and `test`, and then `BuyingPowerBelowFloor` failed on every poll with
"cannot compare number < string" and never paged.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import CS_ACCOUNTS, MqttCollector
from test_daemon import BREACH, events, riskmon_process, subscriber

from monitor.config.loader import parse_config
from monitor.engine.replay import parse_overrides
from monitor.engine.rulefile import parse_rules
from monitor.engine.testing import load_test_file
from monitor.simulator import Simulator
from monitor.yamlsource import SourceError

__all__ = ["subscriber"]  # the fixture of test_daemon, used here as it is

ROOT = Path(__file__).resolve().parent.parent

#: (as written in YAML, as given to `replay --set`, the value every path must give)
SAME_TEXT = [
    ("25000", "25000", Decimal("25000")),
    ('"25000"', "25000", Decimal("25000")),
    ("'25000.00'", "25000.00", Decimal("25000.00")),
    ("1e5", "1e5", Decimal("1E+5")),
    ('" 1e5 "', " 1e5 ", Decimal("1E+5")),
    ("1.0e+5", "1.0e+5", Decimal("1.0E+5")),
    ("0.1", "0.1", Decimal("0.1")),
    ("-2_500.50", "-2_500.50", Decimal("-2500.50")),
    ("true", "true", True),
    ('"false"', "false", False),
    ('"50k"', "50k", "50k"),
]

CONFIG = """\
venues:
  - name: cs
    kind: clearstreet
    base_url: https://api.clearstreet.com
    api_key: k
    accounts:
      - id: "19816"
        params: {{floor: {value}}}
"""

RULE = """\
groups:
  - name: g
    rules:
      - alert: A
        expr: buying_power < 0
        params: {{floor: {value}}}
"""

RULE_TEST = """\
rule_files: [rules.yaml]
tests:
  - name: t
    venue_kind: clearstreet
    account: {{venue: cs, id: "19816", params: {{floor: {value}}}}}
    expect: [{{at: 0s, firing: []}}]
"""


def _same(got: Any, expected: Any) -> bool:
    return type(got) is type(expected) and str(got) == str(expected)


@pytest.mark.parametrize(("written", "cli", "expected"), SAME_TEXT)
def test_the_same_param_text_gives_the_same_value_everywhere(
    tmp_path: Path, written: str, cli: str, expected: Any
) -> None:
    config = parse_config(CONFIG.format(value=written), "riskmon.yaml", base_dir=tmp_path)
    from_config = config.venues[0].accounts[0].params["floor"]

    from_rule = parse_rules(RULE.format(value=written), "r.yaml")[0].rules[0].params["floor"]

    (tmp_path / "rules.yaml").write_text(RULE.format(value="1"))
    (tmp_path / "t.yaml").write_text(RULE_TEST.format(value=written))
    from_test = load_test_file(tmp_path / "t.yaml").tests[0].params["floor"]

    from_replay = parse_overrides([f"params.floor={cli}"])["floor"]

    got = {"config": from_config, "rule": from_rule, "test": from_test, "replay": from_replay}
    assert {where: (type(v).__name__, str(v)) for where, v in got.items()} == {
        where: (type(expected).__name__, str(expected)) for where in got
    }


def _test_file_problems(tmp_path: Path, account: str) -> list[str]:
    (tmp_path / "rules.yaml").write_text(RULE.format(value="1"))
    (tmp_path / "t.yaml").write_text(
        "rule_files: [rules.yaml]\n"
        "tests:\n"
        "  - name: t\n"
        "    venue_kind: clearstreet\n"
        f"    account: {account}\n"
        "    expect: [{at: 0s, firing: []}]\n"
    )
    with pytest.raises(SourceError) as exc:
        load_test_file(tmp_path / "t.yaml")
    return [str(p).removeprefix(f"{tmp_path}/") for p in exc.value.problems]


@pytest.mark.parametrize(
    ("account", "problem"),
    [
        (
            '{venue: cs, id: "19816", labels: {bad-name: x}}',
            "t.yaml:5:48: invalid label name 'bad-name': use letters, digits and _, "
            "not starting with a digit or __",
        ),
        (
            '{venue: cs, id: "19816", params: {floor: [1]}}',
            "t.yaml:5:55: floor: expected a number, text or true/false, got a list",
        ),
        (
            '{venue: cs, id: "19816", params: {floor: "1e1001"}}',
            "t.yaml:5:55: floor: number with an exponent beyond ±1000",
        ),
        (
            "{venue: cs, id: ACME}",
            "t.yaml:5:30: Clear Street account ids are numbers such as 19816, got 'ACME'",
        ),
        (
            '{venue: cs, id: "1", parms: {floor: 1}}',
            "t.yaml:5:35: unknown key 'parms' in account '1' of test 't'; did you mean 'params'?",
        ),
    ],
)
def test_a_rule_test_account_is_checked_as_the_config_checks_one(
    tmp_path: Path, account: str, problem: str
) -> None:
    assert _test_file_problems(tmp_path, account) == [problem]


# -- end to end: the daemon pages on a floor written as text ------------------------------

RULES_WITHOUT_DEFAULT = textwrap.dedent("""\
    groups:
      - name: capital
        venues: [clearstreet]
        rules:
          - alert: BuyingPowerBelowFloor
            expr: buying_power < params.buying_power_floor
            severity: critical
            annotations:
              summary: >-
                {{ account }} buying power {{ buying_power }} below {{ params.buying_power_floor }}
    """)


def test_check_and_test_accept_a_floor_written_as_text(tmp_path: Path) -> None:
    """What the operator runs before deploying: both pass (they did before, too)."""
    (tmp_path / "capital.yaml").write_text(RULES_WITHOUT_DEFAULT)
    (tmp_path / "t.yaml").write_text(
        "rule_files: [capital.yaml]\n"
        "tests:\n"
        "  - name: a floor written as text pages\n"
        "    venue_kind: clearstreet\n"
        '    account: {venue: cs, id: "19816", params: {buying_power_floor: "25000"}}\n'
        "    series: {buying_power: '30000 20000'}\n"
        "    expect:\n"
        "      - {at: 0s, firing: []}\n"
        "      - {at: 1m, firing: [BuyingPowerBelowFloor]}\n"
    )
    for args in (["check", "capital.yaml"], ["test", "t.yaml"]):
        result = subprocess.run(
            [sys.executable, "-m", "monitor", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr


async def test_a_floor_written_as_text_in_riskmon_yaml_pages(
    tmp_path: Path,
    riskmon_config: Callable[..., tuple[Path, int]],
    simulator: Simulator,
    subscriber: MqttCollector,
) -> None:
    accounts = [{**account, "params": {"buying_power_floor": "25000"}} for account in CS_ACCOUNTS]

    def config(**settings: Any) -> tuple[Path, int]:
        return riskmon_config(**settings, cs_accounts=accounts)

    with riskmon_process(tmp_path, config, rules=RULES_WITHOUT_DEFAULT) as riskmon:
        assert '"buying_power_floor": "25000"' in riskmon.config.read_text()  # quoted
        riskmon.start()
        await riskmon.ready()
        simulator.set_fields("clearstreet", "19816", {"buying_power": "20000.00"})
        await subscriber.wait_for(lambda _: bool(subscriber.on(BREACH)))
        [fired] = events(subscriber, BREACH)
        assert fired["status"] == "firing"
        assert fired["annotations"]["summary"] == "19816 buying power 20000.00 below 25000"
        metrics = await riskmon.metrics()
        failures = ("riskmon_rule_evaluation_failures_total",)
        assert metrics[(*failures, (("alertname", "BuyingPowerBelowFloor"),))] == 0
        assert "cannot compare" not in riskmon.log()
        assert json.loads(riskmon.log().splitlines()[0])  # the daemon logs JSON lines


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("params.floor=1e1001", "--set params.floor: number with an exponent beyond ±1000"),
        ("params.1x=1", "--set params.1x: invalid parameter name '1x'"),
    ],
)
def test_replay_set_refuses_what_the_config_refuses(item: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_overrides([item])
