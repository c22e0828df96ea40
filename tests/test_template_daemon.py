"""A rule template that tries to stall `riskmon run` (the real daemon, the simulator,
Mosquitto): refused by `riskmon check` and at start, or rendered as a bounded marker
while /healthz and /metrics answer and SIGTERM stops the daemon."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
from conftest import MqttCollector
from test_daemon import RiskmonProcess, events, riskmon, run_riskmon, subscriber

__all__ = ["riskmon", "subscriber"]  # the fixtures of test_daemon, used here as they are

#: A million loop iterations, each summing a thousand numbers, and nothing written.
STALLING = (
    "{% set r = range(1000) | list %}"
    "{% for i in r %}{% for j in r %}{% set x = r | sum %}{% endfor %}{% endfor %}"
)
#: Ten billion empty loop iterations.
HANGING = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"

RULES = textwrap.dedent("""\
    groups:
      - name: hostile
        venues: [clearstreet]
        rules:
          - alert: Hostile
            expr: buying_power > 0
            annotations:
              summary: "{{ account }}: TEMPLATE"
    """)
EVENTS = "riskmon/events/warning/cs/+/Hostile"


def _write_rules(riskmon: RiskmonProcess, template: str) -> Path:
    path = riskmon.folder / "rules" / "hostile.yaml"
    path.write_text(RULES.replace("TEMPLATE", template))
    return path


async def _answers_at_once(riskmon: RiskmonProcess, path: str) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=2)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(riskmon.url + path) as resp,
    ):
        return resp.status, await resp.text()


def test_a_hanging_template_is_refused_by_check_and_at_start(riskmon: RiskmonProcess) -> None:
    rules = _write_rules(riskmon, HANGING)
    column = len('          summary: "{{ account }}: {% for i in ') + 1
    where = f"{rules}:8:{column}: range() over more than 1000 numbers"

    checked = subprocess.run(
        [sys.executable, "-m", "monitor", "check", str(rules)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 1
    assert where in checked.stdout + checked.stderr

    started = run_riskmon(riskmon.config)
    assert started.returncode == 1
    assert where in started.stderr


async def test_a_stalling_template_renders_a_marker_and_the_daemon_stays_responsive(
    riskmon: RiskmonProcess, subscriber: MqttCollector
) -> None:
    _write_rules(riskmon, STALLING)
    riskmon.start()
    await riskmon.ready()
    await subscriber.wait_for(lambda _: len(subscriber.on(EVENTS)) >= 3)  # one per cs account
    summaries = {e["account"]: e["annotations"]["summary"] for e in events(subscriber, EVENTS)}
    assert set(summaries) == {"19816", "19817", "19818"}
    for summary in summaries.values():
        assert summary.startswith("<template error: template took ")

    status, _ = await _answers_at_once(riskmon, "/healthz")
    assert status == 200
    status, text = await _answers_at_once(riskmon, "/metrics")
    assert status == 200
    [failures] = [
        line for line in text.splitlines() if line.startswith("riskmon_template_failures_total ")
    ]
    assert int(failures.split()[1]) >= 3
    logged = [
        json.loads(line) for line in riskmon.log().splitlines() if '"template failed"' in line
    ]
    assert 1 <= len(logged) <= 2  # once per reason (steps, time), not once per account
    assert logged[0]["location"].endswith("hostile.yaml:8:21")

    assert await asyncio.to_thread(riskmon.signal, signal.SIGTERM) == 0
