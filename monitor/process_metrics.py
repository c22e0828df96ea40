"""The process's own metrics for /metrics: prometheus-client's standard `process_*`
(memory, CPU, open and maximum fds, start time) and `python_info`, and the memory limit
of the container riskmon runs in, so that dashboards and self-alerts can watch riskmon's
memory against what it may use.

The collectors read /proc at each scrape; rendered by prometheus-client itself, they
cost about 0.06 ms a scrape (`python -m bench.scrape` reports /metrics with them).

`riskmon_memory_limit_bytes` is the memory limit of the process's cgroup: cgroup v2's
`memory.max` of the process's own cgroup (as /proc/self/cgroup names it) or of the
mount's root (a container with its own cgroup namespace sees its limit there), else
cgroup v1's `memory.limit_in_bytes` the same way. Absent when there is no limit
("max", or v1's near-2^63 "unlimited") or no cgroup file to read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import generate_latest

__all__ = ["ProcessMetrics", "memory_limit"]

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
PROC_CGROUP: Final = Path("/proc/self/cgroup")
_UNLIMITED: Final = 1 << 60  # cgroup v1 writes "no limit" as 2^63 rounded down to a page


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """The process's cgroup v2 path and its cgroup v1 memory path, where listed."""
    unified = memory = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            unified = path
        elif "memory" in controllers.split(","):
            memory = path
    return unified, memory


def memory_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """The cgroup memory limit in bytes, or None (no limit, or none found)."""
    unified, memory = _cgroup_paths(proc_cgroup)
    candidates: list[Path] = []
    if unified is not None:
        candidates += [root / unified.lstrip("/") / "memory.max", root / "memory.max"]
    v1 = root / "memory"
    if memory is not None:
        candidates.append(v1 / memory.lstrip("/") / "memory.limit_in_bytes")
    candidates.append(v1 / "memory.limit_in_bytes")
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            limit = int(text)
        except ValueError:
            continue
        return None if limit >= _UNLIMITED else limit
    return None


class ProcessMetrics:
    """`render()`: the process families as exposition text; `memory_limit` for
    `riskmon_memory_limit_bytes` (which `monitor.metrics` writes)."""

    def __init__(self, memory_limit: int | None) -> None:
        """`memory_limit`: `memory_limit()` read once (a container's limit is set when
        it starts), or None to leave `riskmon_memory_limit_bytes` out."""
        self._registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self._registry)
        PlatformCollector(registry=self._registry)
        self.memory_limit = memory_limit

    def render(self) -> bytes:
        return generate_latest(self._registry)
