"""The process families of /metrics and the container's memory limit, from cgroup files."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.metrics import Metrics
from monitor.process_metrics import ProcessMetrics, memory_limit

V2 = "0::/kubepods/pod1/riskmon\n"
V1 = "12:memory:/docker/abc\n11:cpu,cpuacct:/docker/abc\n"


def cgroup(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup mount at tmp_path/cgroup holding `files`, and a /proc/self/cgroup."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "proc-cgroup").write_text(proc)
    return root, tmp_path / "proc-cgroup"


@pytest.mark.parametrize(
    ("proc", "files", "limit"),
    [
        # cgroup v2: the process's own cgroup, else the namespace's root
        (V2, {"kubepods/pod1/riskmon/memory.max": "268435456\n"}, 268435456),
        (V2, {"kubepods/pod1/riskmon/memory.max": "max\n"}, None),
        ("0::/\n", {"memory.max": "134217728\n"}, 134217728),
        # cgroup v1: its memory hierarchy; "unlimited" is a number near 2^63
        (V1, {"memory/docker/abc/memory.limit_in_bytes": "536870912\n"}, 536870912),
        (V1, {"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),
        (V1, {}, None),  # nothing to read: no limit known
    ],
)
def test_the_memory_limit_is_read_from_the_cgroup(
    tmp_path: Path, proc: str, files: dict[str, str], limit: int | None
) -> None:
    root, proc_cgroup = cgroup(tmp_path, proc, files)
    assert memory_limit(root, proc_cgroup) == limit


def families(text: bytes) -> dict[str, list[float]]:
    return {
        family.name: [sample.value for sample in family.samples]
        for family in text_string_to_metric_families(text.decode())
    }


def test_metrics_carry_the_process_families_and_the_limit_when_there_is_one() -> None:
    limited = families(Metrics(process=ProcessMetrics(256 * 2**20)).render())
    assert limited["riskmon_memory_limit_bytes"] == [256 * 2**20]
    for name in ("process_resident_memory_bytes", "process_open_fds", "process_max_fds"):
        assert limited[name][0] > 0, name
    assert "process_cpu_seconds" in limited
    assert "python_info" in limited
    unlimited = families(Metrics(process=ProcessMetrics(None)).render())
    assert "riskmon_memory_limit_bytes" not in unlimited
    assert "process_resident_memory_bytes" in unlimited


def test_internal_errors_are_counted_by_task_from_zero() -> None:
    metrics = Metrics(process=ProcessMetrics(None))
    metrics.inc_internal_errors("tick", 0)
    metrics.inc_internal_errors("evaluation")
    metrics.inc_internal_errors("evaluation")
    text = metrics.render().decode()
    samples = {
        sample.labels["task"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "riskmon_internal_errors"
        for sample in family.samples
    }
    assert samples == {"tick": 0, "evaluation": 2}
