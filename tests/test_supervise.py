"""monitor/infra/supervise.py on a real event loop: crashes are logged with their traceback,
reported, and the work started again; nothing escapes unreported."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import structlog

from monitor.supervise import Supervisor


class Reports:
    """What a supervisor reported: crashes (name, exception) and steady restarts."""

    def __init__(self) -> None:
        self.crashes: list[tuple[str, BaseException]] = []
        self.steady: list[str] = []
        self.changed = asyncio.Event()

    def crashed(self, name: str, error: BaseException) -> None:
        self.crashes.append((name, error))
        self.changed.set()

    def went_steady(self, name: str) -> None:
        self.steady.append(name)
        self.changed.set()

    async def until(self, check: Any) -> None:
        async with asyncio.timeout(10):
            while not check():
                self.changed.clear()
                await self.changed.wait()


def crash_logs(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if isinstance(entry.get("exc_info"), BaseException)]


async def test_a_crashing_task_is_logged_reported_and_started_again_with_back_off() -> None:
    reports = Reports()
    supervisor = Supervisor(
        reports.crashed, reports.went_steady, first_delay=0.01, max_delay=0.02, steady=0.05
    )
    runs = 0
    finished = asyncio.Event()

    async def work() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise ValueError(f"crash {runs}")
        await finished.wait()

    with structlog.testing.capture_logs() as logs:
        task = supervisor.start("worker", work)
        await reports.until(lambda: reports.steady)
        finished.set()
        await task
    assert runs == 3
    assert [(name, str(error)) for name, error in reports.crashes] == [
        ("worker", "crash 1"),
        ("worker", "crash 2"),
    ]
    assert reports.steady == ["worker"]
    logged = crash_logs(logs)
    assert [entry["task"] for entry in logged] == ["worker", "worker"]
    assert [entry["retry_in"] for entry in logged] == [0.01, 0.02]  # back-off doubles
    assert logged[0]["exc_info"].__traceback__ is not None
    assert supervisor.restarts("worker")


async def test_cancelling_a_supervised_task_stops_it_without_a_report() -> None:
    reports = Reports()
    supervisor = Supervisor(reports.crashed)
    task = supervisor.start("idle", asyncio.Event().wait)
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert reports.crashes == []


async def test_a_watched_one_shot_task_has_its_crash_retrieved_and_reported() -> None:
    reports = Reports()
    supervisor = Supervisor(reports.crashed)
    escaped: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: escaped.append(context))

    async def poll() -> None:
        raise KeyError("boom")

    try:
        with structlog.testing.capture_logs() as logs:
            supervisor.watch(asyncio.create_task(poll()), "account-poll-cs")
            await reports.until(lambda: reports.crashes)
            gc.collect()  # an unretrieved exception would be reported now
    finally:
        loop.set_exception_handler(None)
    assert [name for name, _ in reports.crashes] == ["account-poll-cs"]
    assert crash_logs(logs)[0]["task"] == "account-poll-cs"
    assert escaped == []  # no "Task exception was never retrieved"


async def test_what_escapes_on_the_loop_or_in_a_thread_is_logged_and_reported() -> None:
    reports = Reports()
    supervisor = Supervisor(reports.crashed)
    loop = asyncio.get_running_loop()

    def callback() -> None:
        raise RuntimeError("in a callback")

    async def forgotten() -> None:
        raise LookupError("nobody awaits this")

    def thread_work() -> None:
        raise OSError("in a thread")

    supervisor.install(loop)
    try:
        with structlog.testing.capture_logs() as logs:
            loop.call_soon(callback)
            task = asyncio.create_task(forgotten(), name="forgotten")
            await asyncio.wait({task})
            del task
            gc.collect()  # "Task exception was never retrieved" goes to the handler
            thread = threading.Thread(target=thread_work, name="checkpoint x")
            thread.start()
            thread.join()
            await reports.until(lambda: len(reports.crashes) >= 3)
    finally:
        supervisor.uninstall(loop)
    reported = {name: type(error) for name, error in reports.crashes}
    assert reported == {
        "loop": RuntimeError,
        "forgotten": LookupError,
        "thread checkpoint x": OSError,
    }
    assert {entry["task"] for entry in crash_logs(logs)} == set(reported)
    assert threading.excepthook is threading.__excepthook__
