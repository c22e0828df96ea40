"""An MQTT broker riskmon starts itself: `mqtt.url: embedded` and `riskmon demo`.

It is the Mosquitto found on the machine, run as a child process on 127.0.0.1 (port
1883, or a free one when that is taken), with its persistence in the state folder so
retained alerts survive a restart. Mosquitto is in Debian's packages
(`apt-get install mosquitto`); `make test` installs it when missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from pathlib import Path

import structlog

log = structlog.get_logger("riskmon.broker")

CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class BrokerUnavailable(RuntimeError):
    """No broker can be started here; the message says what to install."""


def find_mosquitto() -> str | None:
    for candidate in CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class EmbeddedBroker:
    """A Mosquitto child process; `url` once started."""

    def __init__(self, folder: Path, *, host: str = "127.0.0.1", port: int = 1883) -> None:
        """`port` 0, or taken: a free one."""
        self.folder = folder
        self.host = host
        self.preferred_port = port
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> str:
        binary = find_mosquitto()
        if binary is None:
            raise BrokerUnavailable(
                "mqtt.url is `embedded` but no Mosquitto was found; install it "
                "(`apt-get install mosquitto`) or point mqtt.url at a broker"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        port = self.preferred_port
        if not port or not port_is_free(self.host, port):
            port = free_port(self.host)
        self.port = port
        conf = self.folder / "mosquitto.conf"
        conf.write_text(
            f"listener {port} {self.host}\n"
            "allow_anonymous true\n"
            # Nagle's algorithm held PUBACKs back up to 40 ms (bench/latency.py: p99
            # of venue answer -> PUBACK 40 ms with it, 6 ms without)
            "set_tcp_nodelay true\n"
            "persistence true\n"
            f"persistence_location {self.folder}/\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
        )
        self._process = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            str(conf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        await self._wait_ready()
        log.info("embedded broker started", url=self.url, binary=binary)
        return self.url

    async def _wait_ready(self) -> None:
        assert self._process is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while loop.time() < deadline:
            if self._process.returncode is not None:
                error = b""
                if self._process.stderr is not None:
                    error = await self._process.stderr.read()
                raise BrokerUnavailable(
                    f"the embedded Mosquitto exited at start: {error.decode(errors='replace')}"
                )
            try:
                _reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                await asyncio.sleep(0.05)  # the child has not bound its port yet
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        raise BrokerUnavailable(f"the embedded Mosquitto did not listen on {self.port} in 10 s")

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
