"""What the daemon benchmarks share (poll_cost, latency, memory, startup).

- a simulator scenario of N Clear Street `margin` accounts (ids 100000, 100001, ...);
- a riskmon config for it, written as an operator writes one, with the shipped rules
  (`rules/*.yaml`: ten for Clear Street) plus `bench/rules/extra.yaml` (ten more), so
  every snapshot goes through 20 rules;
- a daemon subclass that counts polls; a Mosquitto (`EmbeddedBroker`) for benchmarks
  that run the daemon as a separate process;
- readings of a process from /proc (RSS, CPU seconds) and small statistics helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from monitor.broker import find_mosquitto, free_port
from monitor.config import Config
from monitor.daemon import Daemon
from monitor.errors import VenueError
from monitor.poller import AccountState
from monitor.snapshot import Snapshot

REPO = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"
FIRST_ID = 100_000
RULE_GLOBS = (str(REPO / "rules" / "*.yaml"), str(REPO / "bench" / "rules" / "*.yaml"))
RULES_PER_SNAPSHOT = 20  # Clear Street: rules/*.yaml (10) + bench/rules/extra.yaml (10)


def account_ids(count: int) -> list[str]:
    return [str(FIRST_ID + i) for i in range(count)]


def scenario(count: int, *, walk_every: str | None = None) -> dict[str, Any]:
    """The simulator's scenario: `count` Clear Street margin accounts; with `walk_every`,
    each one's buying power takes a random step of 100 that often (within 60,000-120,000,
    never near a floor), so that its answers change."""
    data: dict[str, Any] = {
        "clearstreet": {
            "api_keys": [API_KEY],
            "accounts": [
                {"generate": {"count": count, "first_id": FIRST_ID, "template": "margin"}}
            ],
        }
    }
    if walk_every is not None:
        walk = {"field": "buying_power", "step": "100", "every": walk_every}
        data["timeline"] = [
            {
                "at": "0s",
                "venue": "clearstreet",
                "account": account,
                "walk": walk | {"min": "60000", "max": "120000"},
            }
            for account in account_ids(count)
        ]
    return data


def write_config(
    folder: Path,
    *,
    base_url: str,
    accounts: int,
    poll_interval: str,
    mqtt_url: str = "embedded",
    http_listen: str = "127.0.0.1:0",
    max_concurrency: int = 64,
    max_requests_per_second: int = 100_000,
    timeout: str = "5s",
    stale_after: str = "30s",
) -> Path:
    """A riskmon.yaml polling `accounts` simulated accounts; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clearstreet-api-key").write_text(API_KEY + "\n")  # a mounted Secret file
    lines = [
        "instance: bench",
        "state_dir: state",
        f'http: {{listen: "{http_listen}"}}',
        f'mqtt: {{url: "{mqtt_url}", topic_prefix: riskmon}}',
        f"rules: {json.dumps(list(RULE_GLOBS))}",
        f"stale_after: {stale_after}",
        "venues:",
        "  - name: cs",
        "    kind: clearstreet",
        f"    base_url: {base_url}/clearstreet",
        "    api_key_file: clearstreet-api-key",
        f"    poll_interval: {poll_interval}",
        f"    timeout: {timeout}",
        f"    max_concurrency: {max_concurrency}",
        f"    max_requests_per_second: {max_requests_per_second}",
        "    accounts:",
        *(f'      - id: "{account}"' for account in account_ids(accounts)),
    ]
    path = folder / "riskmon.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


class CountingDaemon(Daemon):
    """The daemon, counting what the poller reports (for polls per CPU-second)."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.snapshots = 0
        self.failures = 0
        self.skipped = 0

    def on_skipped(self, state: AccountState, reason: str) -> None:
        self.skipped += 1
        super().on_skipped(state, reason)

    def on_snapshot(self, snapshot: Snapshot, duration: float) -> None:
        self.snapshots += 1
        super().on_snapshot(snapshot, duration)

    def on_failure(self, state: AccountState, error: VenueError, duration: float) -> None:
        self.failures += 1
        super().on_failure(state, error, duration)


@contextlib.asynccontextmanager
async def running_broker(*, tcp_nodelay: bool = True) -> AsyncIterator[str]:
    """A Mosquitto on a free port for the daemon under test; yields its URL.

    `tcp_nodelay`: Mosquitto's `set_tcp_nodelay` (default false: Nagle's algorithm on its
    sockets, which can hold a PUBACK back until the previous segment is acknowledged).
    """
    binary = find_mosquitto()
    if binary is None:
        raise RuntimeError("these benchmarks need Mosquitto: apt-get install mosquitto")
    with tempfile.TemporaryDirectory(prefix="riskmon-bench-broker-") as folder:
        port = free_port()
        conf = Path(folder) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"set_tcp_nodelay {'true' if tcp_nodelay else 'false'}\n"
            "log_dest stderr\n"
            "log_type error\n"
        )
        process = await asyncio.create_subprocess_exec(
            binary, "-c", str(conf), stdout=asyncio.subprocess.DEVNULL
        )
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while True:
                try:
                    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    if process.returncode is not None or loop.time() > deadline:
                        raise RuntimeError("Mosquitto did not start") from None
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                break
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            if process.returncode is None:
                process.terminate()
                await process.wait()


async def wait_ready(session: aiohttp.ClientSession, url: str, timeout: float) -> bool:  # noqa: ASYNC109
    """Poll `url`/readyz until it answers 200; False after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.get(url + "/readyz") as response:
                if response.status == 200:
                    return True
        await asyncio.sleep(0.005)
    return False


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """SIGTERM (riskmon stops gracefully), SIGKILL after 20 s."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 20)
    except TimeoutError:
        process.kill()
        await process.wait()


# -- reading a process ----------------------------------------------------------------------


def rss_bytes(pid: int | str = "self", *, peak: bool = False) -> int:
    """Resident set size of a process now (or its `peak` so far), from /proc (Linux)."""
    field = "VmHWM:" if peak else "VmRSS:"
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of another process so far, from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


# -- figures --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def verdict(holds: bool) -> str:
    return "holds" if holds else "MISSED"
