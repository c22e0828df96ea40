"""`/healthz` means riskmon can alert: `riskmon run` (its own process, over the simulator
and Mosquitto) turns unhealthy, naming the part, when taking in snapshots or the
periodic tick fails or the event loop stalls; crashes are logged and counted, never
"Task exception was never retrieved"; /metrics carries the process metrics."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from test_daemon import RULES, RiskmonProcess, riskmon_process

from monitor.config import load_config
from monitor.daemon import Daemon
from monitor.supervise import Supervisor

DEV_FULL = Path("/dev/full")


@pytest.fixture
def riskmon(
    tmp_path: Path, riskmon_config: Callable[..., tuple[Path, int]]
) -> Iterator[RiskmonProcess]:
    with riskmon_process(tmp_path, riskmon_config, instance="health-1") as process:
        yield process


async def unhealthy(riskmon: RiskmonProcess, *components: str) -> str | None:
    """/healthz's body when it is 503 and names every one of `components`."""
    status, body = await riskmon.get("/healthz")
    named = all(f"\n{component}: " in body for component in components)
    return body if status == 503 and named else None


def log_lines(riskmon: RiskmonProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in riskmon.log().splitlines() if line.startswith("{")]


@pytest.mark.skipif(not DEV_FULL.exists(), reason="needs /dev/full")
async def test_failing_to_take_in_snapshots_and_a_failing_tick_make_healthz_fail(
    riskmon: RiskmonProcess,
) -> None:
    # Recording snapshots to a full disk: each snapshot's recording raises before its
    # rules run, and so does the tick's flush of the recording.
    riskmon.config.write_text(riskmon.config.read_text() + f"record_snapshots: {DEV_FULL}\n")
    riskmon.start()
    body = await riskmon.until(
        lambda: unhealthy(riskmon, "evaluation", "tick"), "/healthz naming evaluation and tick"
    )
    assert "OSError" in body
    metrics = await riskmon.metrics()
    errors = "riskmon_internal_errors_total"
    assert metrics[(errors, (("task", "evaluation"),))] >= 1
    assert metrics[(errors, (("task", "tick"),))] >= 1
    assert metrics[(errors, (("task", "mqtt"),))] == 0  # supervised tasks count from 0
    lines = log_lines(riskmon)
    not_evaluated = [line for line in lines if "rules did not run" in str(line["event"])]
    tick_failed = [line for line in lines if str(line["event"]).startswith("tick failed;")]
    # logged with its traceback once per account and burst, and once for the tick
    assert not_evaluated
    assert len(tick_failed) == 1, tick_failed
    for line in (*not_evaluated, *tick_failed):
        assert "Traceback" in str(line["exception"])
        assert "No space left on device" in str(line["exception"])
    assert "Task exception was never retrieved" not in riskmon.log()


async def test_an_event_loop_stalled_past_the_bound_makes_healthz_fail(
    riskmon: RiskmonProcess,
) -> None:
    riskmon.start()
    await riskmon.ready()
    assert riskmon.process is not None
    riskmon.process.send_signal(signal.SIGSTOP)  # the loop stands still meanwhile
    try:
        async with aiohttp.ClientSession() as session:
            # asked while the loop stands still: answered after the first tick that runs
            answer = asyncio.ensure_future(session.get(riskmon.url + "/healthz"))
            await asyncio.sleep(7)  # the stall itself, longer than the 5 s bound
            riskmon.process.send_signal(signal.SIGCONT)
            async with await answer as response:
                status, body = response.status, await response.text()
    finally:
        riskmon.process.send_signal(signal.SIGCONT)
    assert status == 503, body
    assert "\nloop: the event loop ran " in body
    await riskmon.until(lambda: healthy(riskmon), "/healthz healthy again")
    assert any(line["event"] == "the event loop lags" for line in log_lines(riskmon))


async def healthy(riskmon: RiskmonProcess) -> bool:
    status, _ = await riskmon.get("/healthz")
    return status == 200


async def test_metrics_carry_the_process_metrics_and_parse(riskmon: RiskmonProcess) -> None:
    riskmon.start()
    await riskmon.ready()
    _, text = await riskmon.get("/metrics")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in (
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "process_cpu_seconds",
        "python_info",
        "riskmon_event_loop_lag_seconds",
    ):
        assert name in families, name
    assert families["process_resident_memory_bytes"].samples[0].value > 1_000_000
    assert families["process_open_fds"].samples[0].value >= 3


async def test_a_crashed_background_task_is_logged_counted_and_started_again(
    tmp_path: Path, riskmon_config: Callable[..., tuple[Path, int]]
) -> None:
    """In-process (the crash is injected into one run of the rule watch: no input
    crashes it for real): the crash is logged with its traceback, counted, /healthz
    names the task until it has run steadily again, and the restarted watch works."""
    (tmp_path / "rules").mkdir()
    rule_file = tmp_path / "rules" / "capital.yaml"
    rule_file.write_text(RULES)
    config, http_port = riskmon_config(
        instance="health-2", rules="rules/*.yaml", stale_after="1500ms"
    )
    daemon = Daemon(load_config(config))
    daemon.supervisor = Supervisor(
        daemon._task_crashed, daemon._task_steady, first_delay=0.05, steady=0.5
    )
    watch = daemon._watch_rules
    runs = 0

    async def crashing_once() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("injected crash")
        await watch()

    daemon._watch_rules = crashing_once  # type: ignore[method-assign]
    process = RiskmonProcess(tmp_path, config, http_port)  # its HTTP helpers only
    with structlog.testing.capture_logs() as logs:
        running = asyncio.create_task(daemon.run())
        try:
            await process.until(
                lambda: unhealthy(process, "task rule-watch"), "/healthz naming the rule watch"
            )
            metrics = await process.metrics()
            assert metrics[("riskmon_internal_errors_total", (("task", "rule-watch"),))] == 1
            await process.until(lambda: healthy(process), "healthy once the watch is steady")
            rule_file.write_text(RULES.replace("25000", "26000"))  # the watch still works
            await process.until(
                lambda: reloaded(logs), "the restarted rule watch loading the changed file"
            )
        finally:
            daemon.stop()
            await running
    assert runs == 2
    [crash] = [entry for entry in logs if entry["event"].startswith("background task crashed")]
    assert crash["task"] == "rule-watch"
    assert isinstance(crash["exc_info"], RuntimeError)


async def reloaded(logs: list[dict[str, object]]) -> bool:
    return any(entry["event"] == "rules loaded" for entry in logs)
