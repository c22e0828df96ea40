"""Retry policy, server hints, pacing and sharding, without a network."""

from __future__ import annotations

import asyncio
import email.utils
from collections import Counter

import httpx
import pytest

from monitor.errors import (
    PollDeadlineExceeded,
    VenueAuthError,
    VenueRateLimited,
    VenueUnavailable,
)
from monitor.shard import Shard, shard_of
from monitor.venues.http import retry_after_seconds
from monitor.venues.limits import RateLimiter
from monitor.venues.retry import with_retries


def test_retry_after_in_seconds_milliseconds_and_dates() -> None:
    assert retry_after_seconds(httpx.Headers({"retry-after": "3"})) == 3.0
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    both = httpx.Headers({"retry-after": "3", "retry-after-ms": "250"})
    assert retry_after_seconds(both) == 0.25
    date = email.utils.formatdate(1_000_010, usegmt=True)
    assert retry_after_seconds(httpx.Headers({"retry-after": date}), now=1_000_000) == 10.0
    assert retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after_seconds(httpx.Headers({})) is None


async def test_retryable_errors_are_retried_until_success() -> None:
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise VenueUnavailable("busy", retry_after=0)
        return "ok"

    deadline = asyncio.get_running_loop().time() + 5
    assert await with_retries(attempt, deadline=deadline) == "ok"
    assert calls == 3


async def test_a_retry_out_of_time_reports_the_failure_that_made_it_retry() -> None:
    # the venue refused (a TLS handshake, a 503): the retry that then had 11 ms left must
    # not hide that reason behind "no answer within 0.011s"
    calls = 0

    async def attempt() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise VenueUnavailable("TLS handshake refused", retry_after=0)
        await asyncio.sleep(0.06)  # the retry's answer does not come before the deadline
        raise PollDeadlineExceeded("no answer within 0.011s")

    deadline = asyncio.get_running_loop().time() + 0.05
    with pytest.raises(VenueUnavailable, match="TLS handshake refused"):
        await with_retries(attempt, deadline=deadline)
    assert calls == 2


async def test_auth_errors_are_never_retried() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise VenueAuthError("bad key", status=401)

    with pytest.raises(VenueAuthError):
        await with_retries(attempt, deadline=asyncio.get_running_loop().time() + 5)
    assert calls == 1


async def test_no_retry_whose_wait_would_pass_the_deadline() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise VenueRateLimited("slow down", retry_after=30)

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(VenueRateLimited):
        await with_retries(attempt, deadline=started + 2)
    assert calls == 1
    assert loop.time() - started < 1


async def test_attempts_are_bounded() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise VenueUnavailable("down", retry_after=0)

    with pytest.raises(VenueUnavailable):
        await with_retries(attempt, deadline=asyncio.get_running_loop().time() + 60, max_attempts=4)
    assert calls == 4


def test_rate_limiter_paces_after_the_burst() -> None:
    now = [100.0]
    limiter = RateLimiter(10, burst=3, clock=lambda: now[0])
    waits = [limiter.reserve() for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.1, 0.2, 0.3])
    now[0] += 10  # idle time refills the burst, never beyond it
    assert [limiter.reserve() for _ in range(4)] == pytest.approx([0, 0, 0, 0.1])


def test_rate_limiter_refuses_a_slot_past_the_deadline() -> None:
    now = [0.0]
    limiter = RateLimiter(1, clock=lambda: now[0])
    limiter.reserve()
    with pytest.raises(PollDeadlineExceeded):
        limiter.reserve(deadline=0.5)
    assert limiter.reserve(deadline=1.0) == pytest.approx(1.0)  # the refused one took no slot


def test_shard_parse() -> None:
    assert Shard.parse("1/3") == Shard(1, 3)
    for bad in ("3/3", "a/b", "1", "-1/2", "0/0"):
        with pytest.raises(ValueError, match="invalid shard"):
            Shard.parse(bad)


def test_shards_split_accounts_evenly_and_move_little_when_growing() -> None:
    accounts = [str(i) for i in range(6000)]
    three = [shard_of("cs", a, 3) for a in accounts]
    four = [shard_of("cs", a, 4) for a in accounts]
    assert all(1800 < n < 2200 for n in Counter(three).values())
    moved = sum(1 for a, b in zip(three, four, strict=True) if a != b) / len(accounts)
    assert 0.2 < moved < 0.3
    owners = [sum(Shard(k, 3).owns("cs", a) for k in range(3)) for a in accounts[:500]]
    assert set(owners) == {1}
