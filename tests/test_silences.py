"""Silences kept in the state database, in Alertmanager's v2 shape (`monitor/silences.py`)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from monitor import silence_cmd
from monitor.api_client import ApiTarget
from monitor.config import Secret
from monitor.silences import (
    RETENTION,
    SilenceBook,
    SilenceError,
    SilenceNotSaved,
    parse_time,
    silence_json,
)
from monitor.store import Store

NOW = 1_800_000_000.0


def postable(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "matchers": [
            {"name": "alertname", "value": "VenueDown", "isRegex": False, "isEqual": True},
            {"name": "venue", "value": "cs|pmx", "isRegex": True},
        ],
        "startsAt": "2027-01-15T08:00:00.123456789Z",
        "endsAt": "2027-01-15T10:00:00+01:00",
        "createdBy": "oncall",
        "comment": "venue maintenance",
    }
    body.update(overrides)
    return body


def test_times_in_rfc3339_with_nanoseconds_and_offsets() -> None:
    assert parse_time("2027-01-15T08:00:00.123456789Z", "t") == 1_800_000_000.123456
    assert parse_time("2027-01-15T09:00:00+01:00", "t") == 1_800_000_000.0
    with pytest.raises(SilenceError, match="no time zone"):
        parse_time("2027-01-15T08:00:00", "startsAt")
    with pytest.raises(SilenceError, match="not an RFC 3339 time"):
        parse_time("tomorrow", "endsAt")


def test_silences_survive_a_restart_and_expire(tmp_path: Path) -> None:
    with Store(tmp_path / "riskmon.db") as store:
        book = SilenceBook(store)
        silence = book.add(postable(), NOW)
        assert [str(m) for m in silence.matchers] == ['alertname="VenueDown"', 'venue=~"cs|pmx"']
        assert (silence.starts_at, silence.ends_at) == (NOW + 0.123, NOW + 3600)
    with Store(tmp_path / "riskmon.db") as store:
        book = SilenceBook(store)
        (again,) = book.all
        assert again == silence
        shown = silence_json(again, NOW)
        assert shown["status"] == {"state": "pending"}
        assert shown["matchers"][1] == {
            "name": "venue",
            "value": "cs|pmx",
            "isRegex": True,
            "isEqual": True,
        }
        expired = book.expire(silence.id, NOW)  # before it began: it ends where it starts
        assert (expired.starts_at, expired.ends_at) == (NOW, NOW)
        with pytest.raises(SilenceError, match="already expired"):
            book.expire(silence.id, NOW + 1)
        book.prune(NOW + RETENTION - 1)
        assert len(book.all) == 1
        book.prune(NOW + RETENTION + 1)
        assert book.all == ()
    with Store(tmp_path / "riskmon.db") as store:
        assert SilenceBook(store).all == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"matchers": []}, "matchers: at least one matcher is required"),
        (
            {"matchers": [{"name": "team", "value": ".*", "isRegex": True}]},
            "at least one matcher must not match the empty text",
        ),
        ({"matchers": [{"name": "1x", "value": "a"}]}, "matchers[0]: name '1x' is not a label"),
        (
            {"matchers": [{"name": "a", "value": "(", "isRegex": True}]},
            "matchers[0]: invalid regular expression",
        ),
        ({"endsAt": "2027-01-15T07:00:00Z"}, "endsAt: before startsAt"),
        (
            {"startsAt": "2020-01-01T00:00:00Z", "endsAt": "2020-01-02T00:00:00Z"},
            "endsAt: in the past",
        ),
        ({"comment": " "}, "comment: required"),
        ({"id": "nope"}, "silence 'nope' not found"),
    ],
)
def test_refused_silences_say_why(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with Store(tmp_path / "riskmon.db") as store:
        with pytest.raises(SilenceError) as caught:
            SilenceBook(store).add(postable(**change), NOW)
        assert message in str(caught.value)


def test_an_update_keeps_the_id(tmp_path: Path) -> None:
    with Store(tmp_path / "riskmon.db") as store:
        book = SilenceBook(store)
        first = book.add(postable(), NOW)
        second = book.add(postable(id=first.id, comment="longer"), NOW + 1)
        assert second.id == first.id
        assert [s.comment for s in book.all] == ["longer"]


async def test_riskmon_silence_sends_the_token_from_its_file(tmp_path: Path) -> None:
    seen: list[str | None] = []

    async def silences(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response([])

    app = web.Application()
    app.router.add_get("/api/v2/silences", silences)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        (tmp_path / "token").write_text("s3cret\n")
        daemon = ApiTarget(f"http://127.0.0.1:{port}", Secret.file("token", tmp_path / "token"))
        out = io.StringIO()
        await asyncio.to_thread(silence_cmd.list_silences, daemon, out)
        assert seen == ["Bearer s3cret"]
        assert out.getvalue().split() == [
            "ID",
            "STATE",
            "MATCHERS",
            "ENDS",
            "AT",
            "CREATED",
            "BY",
            "COMMENT",
        ]
    finally:
        await runner.cleanup()


def test_a_silence_the_database_refuses_changes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "riskmon.db")
    book = SilenceBook(store)
    kept = book.add(postable(), NOW)
    store.close()  # every write now fails, as on a failing disk
    with pytest.raises(SilenceNotSaved, match=r"riskmon\.db"):
        book.add(postable(), NOW)
    with pytest.raises(SilenceNotSaved):
        book.expire(kept.id, NOW + 10)
    book.prune(kept.ends_at + RETENTION + 1)  # tried again later, no error now
    assert book.all == (kept,)
