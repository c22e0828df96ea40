"""riskmon's commands run on uvloop unless RISKMON_EVENT_LOOP says asyncio."""

from __future__ import annotations

import asyncio

import pytest

from monitor import eventloop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENVIRONMENT_VARIABLE, raising=False)
    assert eventloop.loop_name() == "uvloop"
    assert eventloop.run(_loop_module()).startswith("uvloop")


def test_the_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENVIRONMENT_VARIABLE, " AsyncIO ")
    assert eventloop.loop_name() == "asyncio"
    assert eventloop.run(_loop_module()).startswith("asyncio")


def test_an_unknown_loop_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENVIRONMENT_VARIABLE, "trio")
    with pytest.raises(SystemExit, match="must be uvloop or asyncio, not 'trio'"):
        eventloop.loop_name()
