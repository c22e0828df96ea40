"""Prometheus-style durations: parsing, formatting and the messages for bad ones."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("1y", 31536000.0),
        ("1h2m3s4ms", 3723.004),
        ("1.5s", 1.5),
        ("0", 0.0),
        ("0s", 0.0),
        (" 2s ", 2.0),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_ms_is_not_minutes_and_seconds() -> None:
    assert parse_duration("5ms") == pytest.approx(0.005)
    assert parse_duration("5m") == 300.0


@pytest.mark.parametrize("text", ["", "2", "s", "2 s", "-1s", "2sec", "1m 30s", "abc", "1.s"])
def test_parse_rejects_bad_text_and_says_what_form_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"use a number and a unit .* e\.g\. 500ms, 2s, 1m30s"):
        parse_duration(text)


@pytest.mark.parametrize("value", [2, 2.5, None, True, ["2s"]])
def test_parse_rejects_non_text(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration such as 2s or 1m30s"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "500ms"),
        (2, "2s"),
        (90, "1m30s"),
        (3600, "1h"),
        (3723.004, "1h2m3s4ms"),
        (86400, "24h"),
        (0.0004, "0s"),  # rounds to nothing: still a valid duration, never ""
        (-61, "-1m1s"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**10))
def test_format_then_parse_round_trips_whole_milliseconds(ms: int) -> None:
    seconds = ms / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["500ms", "2s", "1m30s", "1h", "2h30m", "1h2m3s4ms"])
def test_parse_then_format_round_trips_the_canonical_form(text: str) -> None:
    assert format_duration(parse_duration(text)) == text
