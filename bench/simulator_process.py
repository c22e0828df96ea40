"""Run `riskmon simulate` in its own process for a benchmark, on a free port."""

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
def running_simulator(scenario: dict[str, Any]) -> Iterator[str]:
    """Start the simulator with `scenario`; yield its base URL; stop it afterwards."""
    with tempfile.TemporaryDirectory(prefix="riskmon-bench-") as folder:
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
                "127.0.0.1:0",
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            if "listening on" not in line:
                raise RuntimeError(f"simulator did not start: {line!r}")
            yield line.split("listening on ", 1)[1].split()[0]
        finally:
            process.terminate()
            process.wait(timeout=10)
