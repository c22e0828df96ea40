"""Small helpers shared by adapters for reading venue answers."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from monitor.errors import SnapshotParseError
from monitor.venues.http import HttpResponse


def decode_json(response: HttpResponse) -> Any:
    """The JSON body, numbers as exact Decimals; SnapshotParseError if it is not JSON."""
    try:
        return json.loads(response.body, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:
        size = len(response.body)
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise SnapshotParseError(
            f"response is not valid JSON ({reason}; {size} bytes, possibly truncated)",
            status=response.status,
            request_id=response.headers.get("x-request-id"),
        ) from None


def try_decode_json(response: HttpResponse) -> Any:
    """The JSON body of an error answer, or None: error bodies are a courtesy."""
    try:
        return json.loads(response.body, parse_float=Decimal)
    except (ValueError, RecursionError):
        return None


def clip(text: object, limit: int = 200) -> str:
    """A venue-supplied message, made safe to log: one line, bounded length."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
