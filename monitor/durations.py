"""Prometheus-style durations: `500ms`, `2s`, `1m30s`, `1h`, `1d`."""

from __future__ import annotations

import re

_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w|y))+")


def parse_duration(text: str) -> float:
    """Seconds in a duration string; ValueError with a readable reason otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as 2s or 1m30s, got {text!r}")
    stripped = text.strip()
    if stripped == "0":
        return 0.0
    if not _WHOLE.fullmatch(stripped):
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit "
            "(ms, s, m, h, d, w, y), e.g. 500ms, 2s, 1m30s"
        )
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(stripped))


def format_duration(seconds: float) -> str:
    """The shortest Prometheus-style spelling of a number of seconds."""
    ms = round(seconds * 1000)
    if ms == 0:  # also what rounds to zero: never an empty string
        return "0s"
    if ms < 0:
        return "-" + format_duration(-seconds)
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    if ms:
        parts.append(f"{ms}ms")
    return "".join(parts)
