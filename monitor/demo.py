"""`riskmon demo`: the simulator, the daemon and an MQTT broker in one command, with a
console view of accounts and of alert events as they arrive over MQTT.

Within a minute of the built-in scenario an account drains toward its buying-power
floor and breaches it, a margin call appears and clears, a venue starts failing and
its accounts go stale, and all of it resolves; the scenario then starts again.
The logs go to a file (`--log-file`), so the console shows only what a viewer reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import aiomqtt

from monitor.broker import EmbeddedBroker, port_is_free
from monitor.config import load_config
from monitor.daemon import Daemon
from monitor.demo_console import Console
from monitor.demo_view import account_lines, event_lines, legend, table
from monitor.durations import format_duration
from monitor.engine.model import Rule
from monitor.logs import configure_logging
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
stale_after: {stale_after}
builtin_alerts:
  VenueDown: {{for: 10s}}  # 30s by default; the scenario's outage lasts 33 s
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

STALE_AFTER = "10s"
FIRST_TABLE_WAIT = 5.0  # seconds the first table waits for every account's first answer


async def watch_events(
    url: str,
    prefix: str,
    console: Console,
    daemon: Daemon,
    seen: list[dict[str, Any]],
) -> None:
    """Print every alert event the broker delivers, as an on-call engineer sees them:
    why it fired, how it resolved."""
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    fired_with: dict[str, Mapping[str, Any]] = {}  # by fingerprint, for resolves without it
    async with aiomqtt.Client(host, int(port), identifier="riskmon-demo-console") as client:
        await client.subscribe(f"{prefix}/events/#", qos=1)
        async for message in client.messages:
            try:
                event = json.loads(message.payload)
            except (TypeError, ValueError):
                continue
            if not isinstance(event, dict):
                continue
            seen.append(event)
            fingerprint = str(event.get("fingerprint"))
            if event.get("status") == "firing":
                fired_with[fingerprint] = event.get("values") or {}
            lines = event_lines(
                event,
                time.strftime("%H:%M:%S"),
                rule_of(daemon, event),
                account_params(daemon, str(event.get("venue")), str(event.get("account"))),
                fired_with.pop(fingerprint, None) if event.get("status") == "resolved" else None,
            )
            console.write(lines)


def rule_of(daemon: Daemon, event: Mapping[str, Any]) -> Rule | None:
    """The rule (or built-in alert) that raised an event."""
    venue, kind = str(event.get("venue")), str(event.get("venue_kind"))
    for rules in (daemon.evaluator.rules, daemon.health.rules):
        for rule in rules.rules_for(venue, kind):
            if rule.alert == event.get("alertname"):
                return rule
    return None


def account_params(daemon: Daemon, venue: str, account: str) -> Mapping[str, Any]:
    for row in daemon.accounts():
        if row.get("venue") == venue and row.get("account") == account:
            params: Mapping[str, Any] = row.get("params") or {}
            return params
    return {}


def show_accounts(daemon: Daemon, console: Console) -> None:
    lines = account_lines(daemon.accounts(), daemon.evaluator.rules.rules_for, daemon.alerts())
    title = f"{time.strftime('%H:%M:%S')} accounts"
    console.show_table(
        table(title, lines), tuple((ln.cells[0], ln.state, ln.alerts) for ln in lines)
    )


def every_account_answered(daemon: Daemon) -> bool:
    return all(row.get("up") is not None for row in daemon.accounts())


def log_to_file(path: Path, level: str = "info") -> None:
    """The demo's logs (riskmon's and its libraries') go to `path`, not the console."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = path.open("w", encoding="utf-8", buffering=1)
    configure_logging(level, stream=stream, json=True)
    handler = logging.StreamHandler(stream)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)


async def run_demo(
    *,
    duration: float | None = None,
    out: TextIO = sys.stdout,
    http_port: int = 9817,
    mqtt_port: int = 1883,
    log_file: Path | None = None,
    live: bool | None = None,
) -> list[dict[str, Any]]:
    """Run the whole system; return the alert events seen over MQTT.

    Ports 0 are any free ones; a default port that is taken is replaced by a free one.
    `live`: redraw the accounts table in place (default: when `out` is a terminal).
    """
    seen: list[dict[str, Any]] = []
    console = Console(out, live=out.isatty() if live is None else live)
    with tempfile.TemporaryDirectory(prefix="riskmon-demo-") as tmp:
        folder = Path(tmp)
        ensure_demo_credentials(folder / "secrets")
        scenario = Scenario.from_document(load_yaml(SCENARIO), folder)
        simulator = Simulator(scenario)
        await simulator.start("127.0.0.1", 0)
        broker = EmbeddedBroker(folder / "broker", port=mqtt_port)
        url = await broker.start()
        config_file = folder / "riskmon.yaml"
        if http_port and not port_is_free("127.0.0.1", http_port):
            http_port = 0  # taken: any free port
        config_file.write_text(
            CONFIG.format(
                folder=folder,
                http_port=http_port,
                mqtt=url,
                rules=RULES,
                sim=simulator.base_url,
                stale_after=STALE_AFTER,
            )
        )
        daemon = Daemon(load_config(config_file))
        running = asyncio.create_task(daemon.run())
        watcher = asyncio.create_task(watch_events(url, "riskmon", console, daemon, seen))
        try:
            serving = asyncio.create_task(daemon.serving.wait())
            await asyncio.wait([serving, running], return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                running.result()  # the daemon could not start: say why
            api = f"http://127.0.0.1:{daemon.http_port}"
            repeats = f", again every {format_duration(scenario.loop)}" if scenario.loop else ""
            console.write(
                [
                    "riskmon demo: a venue simulator, the riskmon daemon and an MQTT broker.",
                    "Within a minute an account breaches its buying-power floor, a margin call",
                    "comes and goes, and a venue fails and recovers" + repeats + ".",
                    f"  metrics   {api}/metrics",
                    f"  alerts    {api}/api/v1/alerts",
                    f"  accounts  {api}/api/v1/accounts",
                    f"  events    mosquitto_sub -p {broker.port} -t 'riskmon/#' -v",
                    f"  simulator {simulator.base_url}",
                    f"  logs      {log_file}" if log_file else "  logs      not kept",
                    *legend(STALE_AFTER),
                    "Alert events as they arrive over MQTT"
                    + (" (Ctrl-C to stop):" if duration is None else ":"),
                ]
            )
            started = time.monotonic()
            while duration is None or time.monotonic() - started < duration:
                if running.done():
                    break
                waited = time.monotonic() - started
                if every_account_answered(daemon) or waited >= FIRST_TABLE_WAIT:
                    show_accounts(daemon, console)
                await asyncio.sleep(1.0)
        finally:
            console.close()
            daemon.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(running, 20)
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await simulator.stop()
            await broker.stop()
    return seen
