"""A real Alertmanager (Debian's prometheus-alertmanager) for the tests, and the webhook
receiver its routes notify.

`alertmanager` (fixture): an `AlertmanagerProcess` on free ports of 127.0.0.1, gossip
off (`--cluster.listen-address=`), its storage in the test's folder, routing by
`severity`: critical to the webhook's `/pager`, warning to `/tickets`, the rest to
`/default`. `webhook` (fixture): a small aiohttp server keeping every notification.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import _free_port
from polled_process import PolledProcess
from prometheus_client.parser import text_string_to_metric_families

ALERTMANAGER_CONFIG = """\
route:
  receiver: default
  group_by: [alertname, venue, account]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
    - matchers: ['severity="warning"']
      receiver: tickets
receivers:
  - name: default
    webhook_configs: [{{url: "{webhook}/default", send_resolved: true}}]
  - name: pager
    webhook_configs: [{{url: "{webhook}/pager", send_resolved: true}}]
  - name: tickets
    webhook_configs: [{{url: "{webhook}/tickets", send_resolved: true}}]
"""


class Webhook:
    """Keeps each notification Alertmanager posts, by path (`/pager` ...)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._arrived = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((request.path, await request.json()))
        self._arrived.set()
        return web.Response(text="ok")

    def alerts(self, path: str) -> list[tuple[str, dict[str, Any]]]:
        """(status, alert) of every alert notified at `path`, in arrival order."""
        return [
            (alert["status"], alert)
            for where, body in self.received
            if where == path
            for alert in body["alerts"]
        ]

    async def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 20) -> None:  # noqa: ASYNC109
        async def arrived() -> None:
            while not check():
                self._arrived.clear()
                await self._arrived.wait()

        try:
            await asyncio.wait_for(arrived(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {what} after {timeout} s: {self.received}") from None


class AlertmanagerProcess(PolledProcess):
    """`prometheus-alertmanager` on `port`; `start` again after `stop` keeps the port
    and the storage (an Alertmanager restart)."""

    name = "alertmanager"

    def __init__(self, binary: str, folder: Path, webhook_url: str) -> None:
        self.binary = binary
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "alertmanager.yml"
        self.config.write_text(ALERTMANAGER_CONFIG.format(webhook=webhook_url))
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.runs += 1
        log = (self.folder / f"alertmanager-{self.runs}.log").open("wb")
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config}",
                f"--storage.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=debug",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        self.process = None

    async def ready(self) -> None:
        async def check() -> bool:
            status, _ = await self.get("/-/ready")
            return status == 200

        await self.until(check, "alertmanager readiness")

    async def alerts(self) -> list[dict[str, Any]]:
        """Alertmanager's own /api/v2/alerts (the active ones)."""
        status, body = await self.get("/api/v2/alerts")
        assert status == 200, body
        alerts: list[dict[str, Any]] = json.loads(body)
        return alerts

    async def received(self, status: str) -> float:
        """`alertmanager_alerts_received_total{status=...}` since this run started."""
        _, text = await self.get("/metrics")
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "alertmanager_alerts_received_total"
            and sample.labels.get("status") == status
        )


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    receiver = Webhook()
    app = web.Application()
    app.router.add_post("/{receiver}", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = _free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: Webhook) -> Iterator[AlertmanagerProcess]:
    """A started Alertmanager (see the module docstring); killed at the end."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.skip("prometheus-alertmanager is not installed (make tools installs it)")
    process = AlertmanagerProcess(binary, tmp_path / "alertmanager", webhook.url)
    process.start()
    try:
        yield process
    finally:
        process.stop(signal.SIGKILL)
