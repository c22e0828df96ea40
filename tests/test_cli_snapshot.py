"""`riskmon simulate` and `riskmon snapshot` as a user runs them: separate processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.simulator.keys import ensure_demo_credentials
from monitor.simulator.process import running_simulator

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def example_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The examples folder in a temporary place, its simulator running on a free port;
    yields the config file rewritten to point at that port."""
    folder = tmp_path_factory.mktemp("examples")
    for name in ("riskmon.yaml", "scenario.yaml"):
        shutil.copy(EXAMPLES / name, folder / name)
    ensure_demo_credentials(folder / "secrets")
    with running_simulator(folder / "scenario.yaml") as base:
        config = folder / "riskmon.yaml"
        config.write_text(config.read_text().replace("http://127.0.0.1:8090", base))
        yield config


def riskmon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args], capture_output=True, text=True, timeout=60
    )


def test_snapshot_prints_accounts_of_both_venues(example_setup: Path) -> None:
    result = riskmon("snapshot", "-c", str(example_setup))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for account in (
        "cs-sim / 19816",
        "cs-sim / 19817",
        "cs-sim / 19818",
        "cs-sim / 19820",
        "pmx-sim / firms/ACME/accounts/main",
        "pmx-sim / firms/ACME/accounts/hedge",
    ):
        assert f"{account}  ok" in out
    assert "margin_details.maintenance_margin_excess" in out
    modern = out.split("cs-sim / 19816", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"\* pattern_day_trader +\(missing\)", modern)
    assert "8 account(s) polled, 0 failed" in out


def test_snapshot_json_has_exact_decimal_strings(example_setup: Path) -> None:
    result = riskmon("snapshot", "-c", str(example_setup), "--venue", "pmx-sim", "--json")
    assert result.returncode == 0, result.stderr
    items = json.loads(result.stdout)
    assert {i["account"] for i in items} == {
        "firms/ACME/accounts/main",
        "firms/ACME/accounts/hedge",
    }
    fields = items[0]["fields"]
    assert isinstance(fields["buying_power"], str)
    assert "." in fields["buying_power"]


def test_snapshot_reports_failures_per_account(example_setup: Path, tmp_path: Path) -> None:
    config = tmp_path / "riskmon.yaml"
    text = example_setup.read_text().replace('- id: "19818"', '- id: "99999"')
    config.write_text(text.replace("secrets/", f"{example_setup.parent}/secrets/"))
    result = riskmon("snapshot", "-c", str(config), "--venue", "cs-sim")
    assert result.returncode == 2
    assert "cs-sim / 99999  FAILED  AccountNotFound" in result.stdout
    assert "cs-sim / 19816  ok" in result.stdout


def test_snapshot_with_a_broken_config_names_the_place(tmp_path: Path) -> None:
    config = tmp_path / "riskmon.yaml"
    config.write_text("venues:\n  - name: cs\n    kind: clearstreat\n")
    result = riskmon("snapshot", "-c", str(config))
    assert result.returncode == 1
    assert f"{config}:3:11:" in result.stderr
    assert "clearstreet" in result.stderr


def test_snapshot_into_a_closed_pipe_exits_quietly(example_setup: Path) -> None:
    """`riskmon snapshot --json | head -1`: the reader may go before riskmon writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before riskmon writes a byte: every write fails
    try:
        result = subprocess.run(
            [sys.executable, "-m", "monitor", "snapshot", "-c", str(example_setup), "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 141
    assert result.stderr == ""


def test_an_answer_nested_900_levels_fails_its_account_only(example_setup: Path) -> None:
    """Issue 11: it raised RecursionError in `flatten`, and nothing was printed at all."""
    base = re.search(r"base_url: (http://127\.0\.0\.1:\d+)", example_setup.read_text())
    assert base is not None
    deep = '{"a": ' * 900 + "1" + "}" * 900
    fault = {
        "venue": "clearstreet",
        "endpoint": "balances",
        "account": "19817",
        "kind": "malformed",
        "status": 200,
        "body": '{"data": {"buying_power": "1.00", "deep": ' + deep + "}}",
        "content_type": "application/json",
    }
    request = urllib.request.Request(
        base.group(1) + "/_sim/faults", data=json.dumps(fault).encode(), method="POST"
    )
    request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as answer:
        fault_id = json.loads(answer.read())["id"]
    try:
        result = riskmon("snapshot", "-c", str(example_setup), "--venue", "cs-sim")
    finally:
        delete = urllib.request.Request(f"{base.group(1)}/_sim/faults/{fault_id}", method="DELETE")
        urllib.request.urlopen(delete, timeout=10).close()
    assert result.returncode == 2, result.stderr
    assert "cs-sim / 19817  FAILED  SnapshotParseError" in result.stdout
    assert "more than 32 levels deep" in result.stdout
    assert "cs-sim / 19816  ok" in result.stdout
