"""`riskmon pagerduty -c FILE --check`, and `riskmon check -c` given a bridge config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "pagerduty.yaml"
FILE_KEY = "R0UT1NGKEY-from-the-file"
ENV_KEY = "R0UT1NGKEY-from-the-environment"

GOOD = """\
mqtt: {url: "mqtt://127.0.0.1:1"}
routes:
  - name: risk
    match: {severity: critical, labels: {team: risk}}
    routing_key_file: secrets/risk
  - name: default
    routing_key_env: PD_DEFAULT_KEY
"""


def riskmon(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )


def write(folder: Path, text: str) -> Path:
    (folder / "secrets").mkdir(exist_ok=True)
    (folder / "secrets" / "risk").write_text(FILE_KEY + "\n")
    path = folder / "pagerduty.yaml"
    path.write_text(text)
    return path


def test_a_good_config_passes_naming_its_routes_and_no_key(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    done = riskmon(
        "pagerduty", "-c", "pagerduty.yaml", "--check", cwd=tmp_path, PD_DEFAULT_KEY=ENV_KEY
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok: 2 routes (risk, default)\n", "")


def test_a_bad_config_prints_each_problem_with_its_place_and_exits_1(tmp_path: Path) -> None:
    text = (
        GOOD.replace("severity: critical", "severity: urgent").replace(
            "  - name: default\n",
            "  - name: warnings\n    routing_key_env: PD_MISSING\n  - name: default\n",
        )
        + "rate_limits: {burst: 5}\n"
    )
    write(tmp_path, text)
    done = riskmon(
        "pagerduty", "-c", "pagerduty.yaml", "--check", cwd=tmp_path, PD_DEFAULT_KEY=ENV_KEY
    )
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "pagerduty.yaml:4:23: unknown severity 'urgent' (known: critical, error, warning, info)",
        "pagerduty.yaml:7:22: environment variable PD_MISSING (the routing key of route "
        "'warnings') is not set",
        "pagerduty.yaml:10:1: unknown key 'rate_limits' in the pagerduty config; "
        "did you mean 'rate_limit'?",
        "3 errors, 0 warnings",
    ]
    assert FILE_KEY not in done.stdout + done.stderr
    assert ENV_KEY not in done.stdout + done.stderr


def test_a_routing_key_that_is_not_there_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    (tmp_path / "secrets" / "risk").unlink()
    done = riskmon(
        "pagerduty", "-c", "pagerduty.yaml", "--check", cwd=tmp_path, PD_DEFAULT_KEY=ENV_KEY
    )
    assert done.returncode == 1
    assert done.stdout.startswith("pagerduty.yaml:5:23: routing_key_file ")
    assert done.stdout.endswith("secrets/risk does not exist\n1 error, 0 warnings\n")


def test_the_example_passes_with_its_routing_keys_present(tmp_path: Path) -> None:
    # what `make unit` runs: a copy beside stand-in keys (examples/secrets/ is not shipped)
    shutil.copy(EXAMPLE, tmp_path / "pagerduty.yaml")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pagerduty-risk").write_text("stand-in\n")
    done = riskmon(
        "pagerduty",
        "-c",
        "pagerduty.yaml",
        "--check",
        cwd=tmp_path,
        PAGERDUTY_WARNINGS_KEY="stand-in",
        PAGERDUTY_ROUTING_KEY="stand-in",
    )
    assert (done.returncode, done.stdout) == (0, "ok: 3 routes (risk-pages, warnings, default)\n")


def test_riskmon_check_given_a_bridge_config_says_which_command_checks_it() -> None:
    done = riskmon("check", "-c", "examples/pagerduty.yaml", cwd=REPO)
    lines = EXAMPLE.read_text().splitlines()
    routes = next(n for n, line in enumerate(lines, 1) if line.startswith("routes:"))
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"examples/pagerduty.yaml:{routes}:1: this looks like a PagerDuty bridge config "
        "(routes, no venues), not riskmon's: check it with riskmon pagerduty -c "
        "examples/pagerduty.yaml --check",
        "1 error, 0 warnings",
    ]


def test_a_daemon_config_with_a_stray_bridge_key_gets_the_daemon_errors(tmp_path: Path) -> None:
    (tmp_path / "riskmon.yaml").write_text("routes: []\nvenues: []\n")
    done = riskmon("check", "-c", "riskmon.yaml", cwd=tmp_path)
    assert done.returncode == 1
    assert "riskmon.yaml:1:1: unknown key 'routes' in the config" in done.stdout
    assert "PagerDuty" not in done.stdout
