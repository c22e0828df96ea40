"""What the tests know of a server they run as a separate process (riskmon, Alertmanager):
its log files and its HTTP API, polled until it shows what a test waits for."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp


class PolledProcess:
    """A subclass sets `name` (for messages) and `url`, and keeps `folder` (where its
    *.log files are) and `process` (None while stopped)."""

    name = "the process"
    folder: Path
    process: subprocess.Popen[bytes] | None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.folder.glob("*.log")))

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(self.url + path) as resp:
            return resp.status, await resp.text()

    async def until(self, check: Callable[[], Any], what: str, timeout: float = 20) -> Any:  # noqa: ASYNC109
        """Poll the process until `check()` is truthy; fail naming `what` and showing its
        log when it exits or `timeout` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                result = await check()
            except aiohttp.ClientError:
                result = None
            if result:
                return result
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited while waiting for {what}:\n{self.log()}")
            if loop.time() > deadline:
                raise AssertionError(f"no {what} after {timeout} s:\n{self.log()[-4000:]}")
            await asyncio.sleep(0.1)  # another process: its state can only be polled
