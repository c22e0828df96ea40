"""`riskmon demo`: the simulator, the daemon and an MQTT broker in one command, with a
console view of accounts and of alert events as they arrive over MQTT.

Within the first minute of the built-in scenario an account drains toward its
buying-power floor and breaches it, a margin call appears and clears, a venue starts
failing and its accounts go stale, and all of it resolves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

import aiomqtt

from monitor.broker import EmbeddedBroker, port_is_free
from monitor.config import load_config
from monitor.daemon import Daemon
from monitor.simulator import Scenario, Simulator
from monitor.simulator.keys import ensure_demo_credentials
from monitor.yamlsource import load_yaml

PACKAGE = Path(__file__).resolve().parent
SCENARIO = PACKAGE / "demo_scenario.yaml"
RULES = PACKAGE.parent / "rules"

CONFIG = """\
instance: riskmon-demo
state_dir: {folder}/state
http: {{listen: "127.0.0.1:{http_port}"}}
mqtt: {{url: "{mqtt}", topic_prefix: riskmon}}
rules: ["{rules}/*.yaml"]
stale_after: 10s
builtin_alerts:
  VenueDown: {{for: 10s}}  # 30s by default; the scenario's outage lasts 25 s
venues:
  - name: cs-demo
    kind: clearstreet
    base_url: {sim}/clearstreet
    api_key_file: secrets/clearstreet-api-key
    poll_interval: 1s
    timeout: 2s
    accounts:
      - {{id: "19816", labels: {{desk: equities}}, params: {{buying_power_floor: 50000}}}}
      - {{id: "19817", labels: {{desk: treasury}}}}
      - {{id: "19818", labels: {{desk: retail}}}}
  - name: pmx-demo
    kind: polymarket
    base_url: {sim}/polymarket
    poll_interval: 1s
    timeout: 2s
    auth:
      token_url: {sim}/polymarket/oauth/token
      client_id: riskmon-demo
      private_key_file: secrets/pmx-demo.pem
      participant_id: firms/ACME/users/riskbot
    accounts:
      - id: firms/ACME/accounts/main
      - id: firms/ACME/accounts/hedge
"""

SEVERITY_MARK = {"critical": "!!", "error": "! ", "warning": "~ ", "info": "  "}


async def watch_events(url: str, prefix: str, out: TextIO, seen: list[dict[str, object]]) -> None:
    """Print every alert event the broker delivers, as an on-call engineer sees them."""
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    async with aiomqtt.Client(host, int(port), identifier="riskmon-demo-console") as client:
        await client.subscribe(f"{prefix}/events/#", qos=1)
        async for message in client.messages:
            try:
                event = json.loads(message.payload)
            except (TypeError, ValueError):
                continue
            seen.append(event)
            when = time.strftime("%H:%M:%S")
            mark = SEVERITY_MARK.get(str(event.get("severity")), "  ")
            status = str(event.get("status", "")).upper()
            summary = (event.get("annotations") or {}).get("summary", "")
            out.write(
                f"{when} {mark} {status:<8} {event.get('alertname')}  "
                f"{event.get('venue')}/{event.get('account')}  {summary}\n"
            )
            out.flush()


def print_accounts(daemon: Daemon, out: TextIO) -> None:
    rows = daemon.accounts()
    out.write(f"{time.strftime('%H:%M:%S')}    accounts:\n")
    for row in rows:
        fields = (row.get("snapshot") or {}).get("fields") or {}
        stale = "STALE" if row.get("stale") else "ok   "
        out.write(
            f"             {stale} {row.get('venue')}/{row.get('account'):<28} "
            f"buying_power={fields.get('buying_power', '-')}\n"
        )
    out.flush()


async def run_demo(
    *,
    duration: float | None = None,
    out: TextIO = sys.stdout,
    http_port: int = 9817,
    mqtt_port: int = 1883,
) -> list[dict[str, object]]:
    """Run the whole system; return the alert events seen over MQTT."""
    seen: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="riskmon-demo-") as tmp:
        folder = Path(tmp)
        ensure_demo_credentials(folder / "secrets")
        scenario = Scenario.from_document(load_yaml(SCENARIO), folder)
        simulator = Simulator(scenario)
        await simulator.start("127.0.0.1", 0)
        broker = EmbeddedBroker(folder / "broker", port=mqtt_port)
        url = await broker.start()
        config_file = folder / "riskmon.yaml"
        if not port_is_free("127.0.0.1", http_port):
            http_port = 0  # taken: any free port
        config_file.write_text(
            CONFIG.format(
                folder=folder,
                http_port=http_port,
                mqtt=url,
                rules=RULES,
                sim=simulator.base_url,
            )
        )
        daemon = Daemon(load_config(config_file))
        running = asyncio.create_task(daemon.run())
        watcher = asyncio.create_task(watch_events(url, "riskmon", out, seen))
        try:
            serving = asyncio.create_task(daemon.serving.wait())
            await asyncio.wait([serving, running], return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                running.result()  # the daemon could not start: say why
            out.write(
                f"riskmon demo: simulator {simulator.base_url}, MQTT broker {url}\n"
                f"  metrics  http://127.0.0.1:{daemon.http_port}/metrics\n"
                f"  alerts   http://127.0.0.1:{daemon.http_port}/api/v1/alerts\n"
                f"  accounts http://127.0.0.1:{daemon.http_port}/api/v1/accounts\n"
                f"  events   mosquitto_sub -p {broker.port} -t 'riskmon/#' -v\n"
                "Alert events as they arrive over MQTT (Ctrl-C to stop):\n"
            )
            out.flush()
            started = time.monotonic()
            next_table = started
            while duration is None or time.monotonic() - started < duration:
                if running.done():
                    break
                if time.monotonic() >= next_table:
                    print_accounts(daemon, out)
                    next_table += 15
                await asyncio.sleep(0.5)
        finally:
            daemon.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(running, 20)
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await simulator.stop()
            await broker.stop()
    return seen
