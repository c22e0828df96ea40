"""monitor/infra: the one copy of the infrastructure the daemon and the PagerDuty bridge
share, and the import rules that keep it one copy."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.infra.backoff import Backoff
from monitor.infra.ratelimit import RateLimiter
from monitor.infra.reconnect import reconnect_forever
from monitor.venues.http import retry_after_seconds as venue_retry_after
from monitor.venues.limits import RateLimiter as VenueRateLimiter

MONITOR = Path(__file__).resolve().parent.parent / "monitor"


def imports(folder: Path, package: str = "monitor") -> Iterator[tuple[str, int, str]]:
    """(file, line, module) of every import of `package` or its modules in `folder`'s
    modules, those inside functions included."""
    for path in sorted(folder.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name == package or name.startswith(package + "."):
                    yield path.name, node.lineno, name


def outside(module: str, allowed: tuple[str, ...]) -> bool:
    return not any(module == a or module.startswith(a + ".") for a in allowed)


def test_the_bridge_imports_only_the_shared_package_and_config_helpers() -> None:
    forbidden = ("monitor.publish", "monitor.store", "monitor.venues", "monitor.daemon")
    allowed = (
        "monitor.infra",
        "monitor.pagerduty",
        "monitor.config",
        "monitor.schema",
        "monitor.yamlsource",
        "monitor.durations",
    )
    found = list(imports(MONITOR / "pagerduty"))
    assert found, "no imports found: wrong folder?"
    wrong = [
        f"monitor/pagerduty/{file}:{line}: imports {module}"
        for file, line, module in found
        if module != "monitor"  # `from monitor import __version__`
        and (not outside(module, forbidden) or outside(module, allowed))
    ]
    assert wrong == []


def test_the_shared_package_imports_neither_side() -> None:
    allowed = ("monitor.infra", "monitor.config.model", "monitor.errors")
    wrong = [
        f"monitor/infra/{file}:{line}: imports {module}"
        for file, line, module in imports(MONITOR / "infra")
        if outside(module, allowed)
    ]
    assert wrong == []


def test_the_event_senders_post_through_the_shared_poster() -> None:
    """Alertmanager's sender and the PagerDuty bridge post with `JsonPoster`
    (monitor/infra/http_post.py: one pooled session, bounded answers), never aiohttp."""
    assert list(imports(MONITOR / "alertmanager")), "no imports found: wrong folder?"
    wrong = [
        f"monitor/{folder}/{file}:{line}: imports {module}"
        for folder in ("alertmanager", "pagerduty")
        for file, line, module in imports(MONITOR / folder, "aiohttp")
    ]
    assert wrong == []


def test_the_old_import_paths_are_the_shared_ones() -> None:
    from monitor.infra.retry_after import RETRY_AFTER_CAP, retry_after_seconds, retry_wait
    from monitor.pagerduty import sender as pagerduty_sender

    assert venue_retry_after is retry_after_seconds
    assert VenueRateLimiter is RateLimiter
    assert pagerduty_sender.retry_wait is retry_wait
    assert pagerduty_sender.RETRY_AFTER_CAP == RETRY_AFTER_CAP


def test_backoff_doubles_to_its_cap_with_jitter() -> None:
    backoff = Backoff(initial=0.2, max=30.0)
    assert [backoff.ceiling(n) for n in range(10)] == pytest.approx(
        [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0]
    )
    assert backoff.ceiling(10_000) == 30.0  # no overflow
    for failures in range(12):
        ceiling = backoff.ceiling(failures)
        assert ceiling / 2 <= backoff.delay(failures) <= ceiling
    with pytest.raises(ValueError, match="initial <= max"):
        Backoff(initial=2.0, max=1.0)


async def test_rate_limiter_acquire_goes_in_turn() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, burst=2, clock=lambda: now[0])
    await limiter.acquire()
    await limiter.acquire()  # the burst: no wait
    assert limiter.reserve() == pytest.approx(0.5)  # then one every half second
    assert limiter.reserve() == pytest.approx(1.0)


async def test_reconnect_forever_backs_off_until_a_session_ends_cleanly() -> None:
    stopping = asyncio.Event()
    attempts: list[int] = []
    failures: list[tuple[str, float]] = []
    paused: list[float] = []

    async def session() -> None:
        attempts.append(len(attempts))
        if len(attempts) < 5:
            raise OSError(f"refused {len(attempts)}")

    async def pause(delay: float) -> None:
        paused.append(delay)

    backoff = Backoff(initial=1.0, max=4.0)
    await reconnect_forever(
        session,
        backoff=backoff,
        stopping=stopping,
        failed=lambda exc, delay: failures.append((str(exc), delay)),
        pause=pause,
    )
    assert len(attempts) == 5
    assert [text for text, _ in failures] == [f"refused {n}" for n in range(1, 5)]
    assert paused == [delay for _, delay in failures]
    for (_, delay), ceiling in zip(failures, (1.0, 2.0, 4.0, 4.0), strict=True):
        assert ceiling / 2 <= delay <= ceiling


async def test_reconnect_forever_stops_when_asked() -> None:
    stopping = asyncio.Event()
    attempts = 0

    async def session() -> None:
        nonlocal attempts
        attempts += 1
        stopping.set()  # a stop while the session fails
        raise OSError("refused")

    await reconnect_forever(
        session, backoff=Backoff(60.0, 60.0), stopping=stopping, failed=lambda e, d: None
    )
    assert attempts == 1  # no second attempt, and no 60 s wait
