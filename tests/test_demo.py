"""`riskmon demo` as a first-time viewer sees it: a real subprocess on free ports, its
console read as text; and the console's parts (table, events, redraw) on their own."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from monitor.broker import find_mosquitto
from monitor.demo_console import Console
from monitor.demo_view import WAITING, account_lines, event_lines, floors, table
from monitor.engine.rulefile import load_rules

REPO = Path(__file__).resolve().parent.parent
DURATION = 45.0  # every alert of the demo's cycle has fired and resolved by 42 s
EVENT = re.compile(r"^\d\d:\d\d:\d\d (!!|! |~ |  ) (FIRING|RESOLVED) +(\S+)  (\S+)")


def events_in(out: str) -> list[tuple[str, str, str, list[str]]]:
    """(status, alertname, venue/account, the lines under it) of each event printed."""
    found: list[tuple[str, str, str, list[str]]] = []
    for line in out.splitlines():
        match = EVENT.match(line)
        if match:
            found.append((match[2], match[3], match[4], []))
        elif found and line.startswith(" " * 12):
            found[-1][3].append(line.strip())
    return found


def one(
    events: list[tuple[str, str, str, list[str]]], status: str, alertname: str, where: str
) -> list[str]:
    for got_status, got_name, got_where, lines in events:
        if (got_status, got_name, got_where) == (status, alertname, where):
            return lines
    raise AssertionError(f"no {status} {alertname} for {where} in {events}")


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_the_demo_reads_well_and_ends_after_its_duration(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "demo",
            "--duration",
            f"{DURATION:g}s",
            "--http-port",
            "0",  # free ports: 1883 and 9817 may be another test's
            "--mqtt-port",
            "0",
            "--log-file",
            str(log),
        ],
        capture_output=True,
        text=True,
        timeout=DURATION + 40,
    )
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert DURATION <= took < DURATION + 30
    out = result.stdout
    # where things are, the log file included; no log line on the console
    assert re.search(r"metrics +http://127\.0\.0\.1:\d+/metrics", out)
    assert f"logs      {log}" in out
    for stream in (out, result.stderr):
        assert not [line for line in stream.splitlines() if line.lstrip().startswith("{")]
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(entry.get("event") == "poll failed" for entry in logged)  # the outage
    # the legend explains the markers and the states
    assert "How to read this:" in out
    assert "!! critical   ! error   ~ warning" in out
    for word in ("FIRING ", "RESOLVED ", "BELOW", "STALE", WAITING):
        assert word in out.split("Alert events as they arrive")[0], word
    # a table with floors and the distance to them, and no placeholders
    assert re.search(r"account +watches +value +floor +distance +state", out)
    assert re.search(
        r"cs-demo/19816 +buying_power +[\d,]+\.\d\d +50,000\.00 +-[\d,.]+ .*BELOW", out
    )
    assert re.search(r"pmx-demo/firms/ACME/accounts/main +excess_capital .* +1,000\.00 ", out)
    assert "=-" not in out
    assert " - " not in out
    # events say why they fired and how they resolved
    events = events_in(out)
    fired = one(events, "FIRING", "BuyingPowerBelowFloor", "cs-demo/19816")
    assert "why:    cs-demo/19816 buying power 42000.00 below floor 50000" in fired
    assert "rule:   buying_power < params.buying_power_floor, held for 30s" in fired
    assert "values: buying_power 42000.00, params.buying_power_floor 50000" in fired
    resolved = one(events, "RESOLVED", "BuyingPowerBelowFloor", "cs-demo/19816")
    assert "now:    buying_power 90000.00  (fired with buying_power 42000.00)" in resolved
    assert any(
        "clears when buying_power >= params.buying_power_floor * 1.05" in x for x in resolved
    )
    one(events, "FIRING", "MaintenanceMarginCall", "cs-demo/19816")
    one(events, "RESOLVED", "MaintenanceMarginCall", "cs-demo/19816")
    assert any(e[0] == "FIRING" and e[2].startswith("pmx-demo/") for e in events)
    firing = {(e[1], e[2]) for e in events if e[0] == "FIRING"}
    cleared = {(e[1], e[2]) for e in events if e[0] == "RESOLVED"}
    assert firing <= cleared, f"still firing at the end: {firing - cleared}"


# -- the parts ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def capital_rules() -> Any:
    rules, _warnings = load_rules([REPO / "rules" / "capital.yaml"])
    return rules


def test_floors_come_from_the_rules_and_the_account(capital_rules: Any) -> None:
    rules = capital_rules.rules_for("cs", "clearstreet")
    assert floors(rules, {}) == [floors(rules, {})[0]]
    (default,) = floors(rules, {})
    assert (default.field, default.param, default.value) == (
        "buying_power",
        "buying_power_floor",
        Decimal(25000),
    )
    (own,) = floors(rules, {"buying_power_floor": "50000"})
    assert own.value == Decimal(50000)


def account(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "venue": "cs",
        "venue_kind": "clearstreet",
        "account": "1",
        "params": {"buying_power_floor": "50000"},
        "up": True,
        "stale": False,
        "snapshot": {"fields": fields},
    }
    return row


def test_the_table_says_waiting_before_the_first_poll_and_then_the_distance(
    capital_rules: Any,
) -> None:
    waiting = {**account(), "snapshot": None, "up": None}
    below = account(buying_power="42000.00")
    alerts = [
        {"venue": "cs", "account": "1", "alertname": "BuyingPowerBelowFloor", "state": "pending"}
    ]
    lines = account_lines([waiting, below], capital_rules.rules_for, alerts)
    assert lines[0].state == WAITING
    assert lines[1].cells[1:] == (
        "buying_power",
        "42,000.00",
        "50,000.00",
        "-8,000.00 (-16.0%)",
        "BELOW",
        "BuyingPowerBelowFloor (pending)",
    )
    text = "\n".join(table("accounts", lines))
    assert "-8,000.00 (-16.0%)" in text
    assert WAITING in text
    assert " - " not in text
    near = account_lines([account(buying_power="55000.00")], capital_rules.rules_for, [])
    assert near[0].state == "near"
    stale = account_lines([{**below, "stale": True}], capital_rules.rules_for, [])
    assert stale[0].state == "STALE"


def firing_event(**extra: Any) -> dict[str, Any]:
    return {
        "status": "firing",
        "alertname": "BuyingPowerBelowFloor",
        "severity": "critical",
        "venue": "cs",
        "account": "1",
        "annotations": {"summary": "cs/1 buying power 42000.00 below floor 50000"},
        "values": {"buying_power": "42000.00"},
        "starts_at": "2026-12-05T10:00:00.000Z",
        "ends_at": None,
        **extra,
    }


def test_events_say_why_they_fired_and_how_they_resolved(capital_rules: Any) -> None:
    (rule,) = [r for r in capital_rules.rules if r.alert == "BuyingPowerBelowFloor"]
    params = {"buying_power_floor": "50000"}
    fired = event_lines(firing_event(), "10:00:30", rule, params)
    assert fired == [
        "10:00:30 !! FIRING   BuyingPowerBelowFloor  cs/1",
        "            why:    cs/1 buying power 42000.00 below floor 50000",
        "            rule:   buying_power < params.buying_power_floor, held for 30s",
        "            values: buying_power 42000.00, params.buying_power_floor 50000",
    ]
    resolve = firing_event(
        status="resolved",
        values={"buying_power": "90000.00"},
        ends_at="2026-12-05T10:00:40.000Z",
    )
    # the payload's own `firing_values` (riskmon's resolved events carry them) come first;
    # without them, the values of the firing event the console saw
    with_them = event_lines(
        {**resolve, "firing_values": {"buying_power": "41000.00"}},
        "10:00:40",
        rule,
        params,
        {"buying_power": "42000.00"},
    )
    without = event_lines(resolve, "10:00:40", rule, params, {"buying_power": "42000.00"})
    assert with_them[0] == "10:00:40 !! RESOLVED BuyingPowerBelowFloor  cs/1  after 40s"
    assert "now:    buying_power 90000.00  (fired with buying_power 41000.00)" in with_them[1]
    assert "now:    buying_power 90000.00  (fired with buying_power 42000.00)" in without[1]
    assert without[2].strip() == (
        "rule:   clears when buying_power >= params.buying_power_floor * 1.05"
        "  (params.buying_power_floor 50000)"
    )
    unknown = event_lines(resolve, "10:00:40", None, {})
    assert unknown[1].strip() == "now:    buying_power 90000.00"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_a_table_is_printed_when_a_state_changes_or_every_so_often() -> None:
    out, clock = io.StringIO(), Clock()
    console = Console(out, live=False, reprint_every=30, min_gap=5, clock=clock)
    printed = []
    for second, state in enumerate(["a"] * 12 + ["b"] * 30):
        clock.now = float(second)
        before = out.tell()
        console.show_table([f"table at {second}"], state)
        if out.tell() != before:
            printed.append(second)
    # the first, then the change at 12; nothing else until 30 s after that
    assert printed == [0, 12]
    assert "\x1b[" not in out.getvalue()
    clock.now = 42.0
    console.show_table(["table at 42"], "b")
    assert out.getvalue().endswith("table at 42\n")
    clock.now = 43.0
    console.show_table(["table at 43"], "c")  # changed, but only a second after the last
    assert out.getvalue().endswith("table at 42\n")
    clock.now = 47.0
    console.show_table(["table at 47"], "c")
    assert out.getvalue().endswith("table at 47\n")


def test_on_a_terminal_the_table_is_redrawn_under_the_events() -> None:
    out = io.StringIO()
    console = Console(out, live=True)
    console.show_table(["accounts", "  row 1"], None)
    console.write(["10:00:00 !! FIRING   X  cs/1"])
    console.show_table(["accounts", "  row 2"], None)
    assert out.getvalue() == (
        "accounts\n  row 1\n"
        "\x1b[2F\x1b[J10:00:00 !! FIRING   X  cs/1\naccounts\n  row 1\n"
        "\x1b[2F\x1b[Jaccounts\n  row 2\n"
    )
