"""Background work that never dies silently: a crash is logged with its traceback,
reported (counted, and turned into a health problem by whoever listens) and, where
that makes sense, the work is started again with back-off.

- `Supervisor.start(name, run)`: a task that runs `run()` and, when it raises, starts
  it again after a back-off (1 s doubling to 60 s; back to 1 s once a run has lasted
  `steady` seconds). `on_crash(name, error)` hears of each crash, `on_steady(name)` of
  a restarted run that has lasted `steady` seconds (the crash is over).
- `Supervisor.watch(task, name)`: for one-shot tasks (a poll, a watch that ends by
  itself), where starting again makes no sense: the crash is retrieved from the task
  (no "Task exception was never retrieved"), logged and reported.
- `Supervisor.install(loop)`: the loop's exception handler and `threading.excepthook`
  log and report whatever still escapes (a callback, a future nobody awaited, a thread).

Task names are metric label values (`riskmon_internal_errors_total{task}`): callers
pass bounded names (`tick`, `poll-<venue>`), never one per account.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Final

import structlog

__all__ = ["CrashHandler", "Supervisor"]

log = structlog.get_logger("riskmon.supervise")

#: What hears of a crash: the task's name and the exception.
CrashHandler = Callable[[str, BaseException], None]

FIRST_DELAY: Final = 1.0  # seconds before the first restart
MAX_DELAY: Final = 60.0  # the longest back-off between restarts
STEADY: Final = 10.0  # seconds a restarted run must last for its crash to be over
_UNNAMED: Final = re.compile(r"Task-\d+")  # asyncio's default names: one per task


def _ignore(name: str) -> None:
    pass


class Supervisor:
    """Starts and watches the background tasks of one process (the daemon, the bridge)."""

    def __init__(
        self,
        on_crash: CrashHandler,
        on_steady: Callable[[str], None] = _ignore,
        *,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        steady: float = STEADY,
    ) -> None:
        self._on_crash = on_crash
        self._on_steady = on_steady
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.steady = steady
        self._restarting: set[str] = set()

    def restarts(self, name: str) -> bool:
        """Whether `name` is a task this supervisor starts again after a crash."""
        return name in self._restarting

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """A task running `run()`, started again after each crash; it ends when a run
        returns, and cancelling it cancels the run."""
        self._restarting.add(name)
        return asyncio.create_task(self._keep_running(name, run), name=name)

    async def _keep_running(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        delay = self.first_delay
        restarted = False
        while True:
            began = loop.time()
            steady = loop.call_later(self.steady, self._on_steady, name) if restarted else None
            try:
                await run()
                return
            except Exception as exc:
                if loop.time() - began >= self.steady:
                    delay = self.first_delay
                log.error(
                    "background task crashed; starting it again",
                    task=name,
                    retry_in=delay,
                    exc_info=exc,
                )
                self._report(name, exc)
            finally:
                if steady is not None:
                    steady.cancel()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)
            restarted = True

    def watch(self, task: asyncio.Task[Any], name: str) -> asyncio.Task[Any]:
        """`task`'s crash, if it has one, logged and reported under `name`."""
        task.add_done_callback(lambda done: self._retrieve(done, name))
        return task

    def _retrieve(self, task: asyncio.Task[Any], name: str) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("task crashed", task=name, exc_info=exc)
            self._report(name, exc)

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Report what escapes on `loop` and in threads; `uninstall` undoes it."""
        loop.set_exception_handler(self._loop_exception)
        threading.excepthook = lambda args: self._thread_exception(loop, args)

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.set_exception_handler(None)
        threading.excepthook = threading.__excepthook__

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        source = context.get("task") or context.get("future")
        name = "loop"
        if isinstance(source, asyncio.Task) and not _UNNAMED.fullmatch(source.get_name()):
            name = source.get_name()
        log.error(
            "unhandled exception in the event loop",
            task=name,
            message=context.get("message"),
            exc_info=exc if isinstance(exc, BaseException) else None,
        )
        self._report(name, exc if isinstance(exc, BaseException) else RuntimeError(name))

    def _thread_exception(
        self, loop: asyncio.AbstractEventLoop, args: threading.ExceptHookArgs
    ) -> None:
        if args.exc_type is SystemExit:
            return
        exc = args.exc_value if args.exc_value is not None else args.exc_type()
        name = f"thread {args.thread.name}" if args.thread is not None else "thread"
        log.error("thread crashed", task=name, exc_info=exc)
        if not loop.is_closed():  # the handlers run on the loop (metrics are not thread-safe)
            loop.call_soon_threadsafe(self._report, name, exc)

    def _report(self, name: str, exc: BaseException) -> None:
        try:
            self._on_crash(name, exc)
        except Exception:  # reporting must not become a crash of its own
            log.exception("reporting a crash failed", task=name)
