"""A venue is one module: a third kind, `minimal` (tests/venue_minimal.py), registered
from the test suite alone through RISKMON_VENUE_PLUGINS, is configured, checked, polled
by a real daemon from the simulator (its fake, tests/venue_minimal_fake.py, plugged in),
exported as metrics and alerted on over MQTT, without a line of it in monitor/."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import MosquittoBroker, MqttCollector, _free_port
from test_daemon import RiskmonProcess, events
from venue_minimal_fake import KEY, MinimalFake

from monitor.simulator.scenario import Scenario
from monitor.simulator.server import Simulator

TESTS = Path(__file__).parent
MONITOR = TESTS.parent / "monitor"

RULES = """\
groups:
  - name: minimal
    venues: [minimal]
    rules:
      - alert: CashBelowFloor
        expr: buying_power < params.floor
        severity: critical
        params: {floor: 10000}
        annotations:
          summary: "{{ account }} cash {{ buying_power }}"
"""
TYPO_RULES = """\
groups:
  - name: typo
    venues: [minimal]
    rules:
      - alert: CashTypo
        expr: cahs < 1
      - alert: OldCash
        expr: legacy_cash < 1
"""


@pytest.fixture
def plugin_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a riskmon process that loads the `minimal` kind."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("RISKMON_VENUE_PLUGINS", "venue_minimal")
    return dict(os.environ)


def write_config(
    folder: Path, base_url: str, mqtt_url: str, http_port: int, venue_extra: str = ""
) -> Path:
    (folder / "rules").mkdir(exist_ok=True)
    (folder / "rules" / "minimal.yaml").write_text(RULES)
    config = folder / "riskmon.yaml"
    config.write_text(f"""\
instance: test-1
state_dir: state
http: {{listen: "127.0.0.1:{http_port}"}}
mqtt: {{url: "{mqtt_url}", topic_prefix: riskmon}}
rules: ["rules/*.yaml"]
stale_after: 1500ms
venues:
  - name: mini
    kind: minimal
    base_url: {base_url}
    api_key: {KEY}
    poll_interval: 200ms
    timeout: 1s
{venue_extra}    accounts: [{{id: acct-1}}, {{id: acct-2, params: {{floor: 5000}}}}]
""")
    return config


def riskmon(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_minimal_kind_is_configured_and_checked(
    tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/minimal", "mqtt://127.0.0.1:1883", 9817)
    (tmp_path / "rules" / "typo.yaml").write_text(TYPO_RULES)
    done = riskmon("check", "-c", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    typo = tmp_path / "rules" / "typo.yaml"
    assert f"{typo}:6:15: warning: minimal never sends cahs; did you mean cash?" in done.stdout
    assert f"{typo}:8:15: warning: legacy_cash is deprecated by minimal" in done.stdout
    assert f"{typo}:5:9: warning: CashTypo can never fire on minimal" in done.stdout
    assert "0 errors, 3 warnings" in done.stdout

    # its settings, account ids and discovery are the venue module's, with locations
    bad = write_config(
        tmp_path,
        "http://127.0.0.1:9/minimal",
        "mqtt://127.0.0.1:1883",
        9817,
        venue_extra="    api_key_file: key\n",
    )
    bad.write_text(bad.read_text().replace("{id: acct-1}", "{id: ACCT_1}"))
    done = riskmon("check", "-c", str(bad), cwd=tmp_path)
    assert done.returncode == 1
    assert (
        f"{bad}:14:5: api_key_file is for clearstreet venues; minimal venues use api_key"
    ) in done.stdout
    assert (
        f"{bad}:15:21: minimal account ids are lower-case words such as acct-1, got 'ACCT_1'"
    ) in done.stdout


RULE_TEST = """\
rule_files: [rules/minimal.yaml]
tests:
  - name: cash under the floor fires
    venue_kind: minimal
    account: {venue: mini, id: acct-1}
    series:
      buying_power: "12000 9000"
    expect:
      - at: 1m
        firing: [CashBelowFloor]
  - name: no kind
    series: {buying_power: "1"}
  - name: bad id
    venue_kind: minimal
    account: {venue: mini, id: ACCT_1}
"""


def test_riskmon_test_knows_the_minimal_kind(tmp_path: Path, plugin_env: dict[str, str]) -> None:
    write_config(tmp_path, "http://127.0.0.1:9/minimal", "mqtt://127.0.0.1:1883", 9817)
    test_file = tmp_path / "minimal_test.yaml"
    test_file.write_text(RULE_TEST)
    done = riskmon("test", str(test_file), cwd=tmp_path)
    assert done.returncode == 1
    assert (
        f"{test_file}:11:5: venue_kind is required (clearstreet, minimal, polymarket)"
    ) in done.stdout + done.stderr
    assert (
        f"{test_file}:15:32: minimal account ids are lower-case words such as acct-1, got 'ACCT_1'"
    ) in done.stdout + done.stderr
    test_file.write_text(RULE_TEST.split("  - name: no kind")[0])
    done = riskmon("test", str(test_file), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_the_minimal_kind_is_polled_from_the_simulator_and_alerted_on(
    tmp_path: Path,
    plugin_env: dict[str, str],
    mosquitto: MosquittoBroker,
    mqtt_collector: Callable[..., MqttCollector],
) -> None:
    fake = MinimalFake()
    async with Simulator(Scenario.from_dict({}), fakes=[fake]) as simulator:
        config = write_config(
            tmp_path, simulator.url_of("minimal"), mosquitto.url, http_port := _free_port()
        )
        process = RiskmonProcess(tmp_path, config, http_port)
        try:
            async with mqtt_collector(["riskmon/#"]) as subscriber:
                process.start()
                await process.ready()
                simulator.set_fields("minimal", "acct-1", {"cash": "9000.00"})
                topic = "riskmon/events/critical/mini/acct-1/CashBelowFloor"
                await subscriber.wait_for(lambda _: bool(subscriber.on(topic)))
                [fired] = events(subscriber, topic)
                assert fired["status"] == "firing"
                assert fired["values"] == {"buying_power": "9000.00"}
                assert fired["annotations"]["summary"] == "acct-1 cash 9000.00"
                assert not subscriber.on("riskmon/events/+/mini/acct-2/#")  # floor 5000
            metrics = await process.metrics()
            labels = (("account", "acct-1"), ("currency", "USD"), ("venue", "mini"))
            assert metrics[("riskmon_account_cash", labels)] == 9000  # the module's gauge
            assert metrics[("riskmon_account_buying_power", labels)] == 9000
            polled = simulator.requests(venue="minimal", account="acct-2")
            assert polled
            assert {r["status"] for r in polled} == {200}
        finally:
            process.stop()


def test_riskmon_simulate_serves_a_plugged_in_fake(
    tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "monitor", "simulate", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = iter(process.stdout.readline, "")
        assert any("simulator listening" in line for line in lines)  # printed once it listens
        import urllib.request

        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/minimal/accounts/acct-1",
            headers={"Authorization": f"Bearer {KEY}"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read()) == {"cash": "50000.00", "currency": "USD"}
    finally:
        process.kill()
        process.wait()


def test_a_plugin_that_cannot_be_imported_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RISKMON_VENUE_PLUGINS", "venue_minimal, no_such_plugin")
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    done = riskmon("check", "-c", "riskmon.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "riskmon: RISKMON_VENUE_PLUGINS: cannot import 'no_such_plugin': "
        "No module named 'no_such_plugin'\n"
    )


# -- the engine knows no venue ------------------------------------------------------------

#: What monitor/engine/* may not import: the venues, and the commands built on the engine.
FORBIDDEN = (
    "monitor.venues",
    "monitor.venue_fields",
    "monitor.cli",
    "monitor.check_cmd",
    "monitor.snapshot_cmd",
    "monitor.daemon",
    "monitor.demo",
    "monitor.simulator",
    "monitor.pagerduty",
)


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def test_the_engine_imports_neither_venues_nor_commands() -> None:
    found = [
        f"{path.relative_to(MONITOR.parent)}:{line}: imports {name}"
        for path in sorted((MONITOR / "engine").glob("*.py"))
        for line, name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert not found, "\n".join(found)


def test_evaluating_and_linting_rules_loads_no_venue_module() -> None:
    """Only the registry's plain data types come along (through the config's account
    checks); no venue module, adapter or HTTP client."""
    code = (
        "import sys, monitor.engine.evaluate, monitor.engine.check, monitor.engine.testing;"
        "print(sorted(m for m in sys.modules if m.startswith('monitor.venues')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() in ("[]", "['monitor.venues', 'monitor.venues.registry']")
