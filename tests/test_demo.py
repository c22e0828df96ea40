"""`riskmon demo` headless: the built-in scenario shows every alert it promises."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from monitor.broker import find_mosquitto

EXPECTED = [
    ("FIRING", "BuyingPowerBelowFloor", "cs-demo/19816"),
    ("RESOLVED", "BuyingPowerBelowFloor", "cs-demo/19816"),
    ("FIRING", "MaintenanceMarginCall", "cs-demo/19816"),
    ("RESOLVED", "MaintenanceMarginCall", "cs-demo/19816"),
    ("FIRING", "AccountDataStale", "pmx-demo/firms/ACME/accounts/main"),
    ("RESOLVED", "AccountDataStale", "pmx-demo/firms/ACME/accounts/main"),
    ("FIRING", "VenueDown", "pmx-demo/*"),
    ("RESOLVED", "VenueDown", "pmx-demo/*"),
]


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_the_demo_scenario_shows_every_alert_and_resolves_them_all() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "demo", "--duration", "62"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"metrics +http://127\.0\.0\.1:\d+/metrics", out)
    assert "/api/v1/alerts" in out
    lines = out.splitlines()
    for status, alertname, where in EXPECTED:
        assert any(status in line and alertname in line and where in line for line in lines), (
            f"no {status} {alertname} for {where} in:\n{out}"
        )
    firing = {(line.split()[3], line.split()[4]) for line in lines if " FIRING " in line}
    resolved = {(line.split()[3], line.split()[4]) for line in lines if " RESOLVED " in line}
    assert firing <= resolved, f"still firing at the end: {firing - resolved}"
