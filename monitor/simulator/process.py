"""Run `riskmon simulate` in a process of its own (benchmarks, end-to-end tests, demos)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


@contextlib.contextmanager
def running_simulator(
    scenario: dict[str, Any] | Path, *, listen: str = "127.0.0.1:0"
) -> Iterator[str]:
    """Start the simulator with a scenario (data or file); yield its base URL; stop it."""
    with simulator_process(scenario, listen=listen) as (base_url, _pid):
        yield base_url


@contextlib.contextmanager
def simulator_process(
    scenario: dict[str, Any] | Path, *, listen: str = "127.0.0.1:0"
) -> Iterator[tuple[str, int]]:
    """As `running_simulator`, yielding (base URL, pid): the pid for reading its CPU time."""
    with tempfile.TemporaryDirectory(prefix="riskmon-sim-") as folder:
        if isinstance(scenario, Path):
            path = scenario
        else:
            path = Path(folder) / "scenario.yaml"
            path.write_text(yaml.safe_dump(scenario))
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "monitor",
                "simulate",
                "--scenario",
                str(path),
                "--listen",
                listen,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            if "listening on" not in line:
                raise RuntimeError(f"the simulator did not start: {line.strip()!r}")
            yield line.split("listening on ", 1)[1].split()[0], process.pid
        finally:
            process.terminate()
            process.wait(timeout=10)
