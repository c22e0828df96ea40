"""`riskmon silence add|list|expire`: silences set through the daemon's HTTP API.

The same Alertmanager v2 endpoints amtool uses (`monitor/api_v2.py`), so a silence set
here shows in `amtool silence query` and the other way round.
"""

from __future__ import annotations

import getpass
import json
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any, TextIO

from monitor import schema
from monitor.api_client import ApiError, ApiTarget, call_api
from monitor.publish.events import rfc3339
from monitor.silences import matcher_json, parse_time

__all__ = ["SilenceCommandError", "add", "expire", "list_silences"]


class SilenceCommandError(Exception):
    """The daemon cannot be reached or refused the request; the message says why."""


def _request(target: ApiTarget, method: str, path: str, body: Any = None) -> Any:
    try:
        status, answer = call_api(target, method, path, body)
    except ApiError as exc:
        raise SilenceCommandError(f"cannot reach riskmon at {target.url}: {exc}") from None
    if status >= 300:
        raise SilenceCommandError(f"{method} {path}: {status}: {answer}")
    return answer


def add(
    target: ApiTarget,
    matchers: Sequence[str],
    *,
    duration: float,
    comment: str,
    author: str | None,
    now: float | None = None,
) -> str:
    """Create a silence from now for `duration` seconds; its id."""
    parsed = []
    for text in matchers:
        try:
            parsed.append(schema.parse_matcher(text))
        except schema.Invalid as exc:
            raise SilenceCommandError(f"matcher {text!r}: {exc}") from None
    if not parsed:
        raise SilenceCommandError("give at least one matcher, such as alertname=VenueDown")
    start = time.time() if now is None else now
    body = {
        "matchers": [matcher_json(m) for m in parsed],
        "startsAt": rfc3339(start),
        "endsAt": rfc3339(start + duration),
        "createdBy": author or getpass.getuser(),
        "comment": comment,
    }
    answer = _request(target, "POST", "/api/v2/silences", body)
    return str(answer["silenceID"])


def list_silences(
    target: ApiTarget, out: TextIO, *, expired: bool = False, as_json: bool = False
) -> None:
    """Print the active and pending silences (with `expired`, the expired ones too)."""
    found: list[dict[str, Any]] = _request(target, "GET", "/api/v2/silences")
    shown = [s for s in found if expired or s["status"]["state"] != "expired"]
    shown.sort(key=lambda s: parse_time(s["endsAt"], "endsAt"))
    if as_json:
        json.dump(shown, out, indent=2)
        out.write("\n")
        return
    rows = [("ID", "STATE", "MATCHERS", "ENDS AT", "CREATED BY", "COMMENT")]
    for silence in shown:
        matchers = " ".join(_matcher_text(m) for m in silence["matchers"])
        rows.append(
            (
                silence["id"],
                silence["status"]["state"],
                matchers,
                silence["endsAt"],
                silence["createdBy"],
                silence["comment"],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")


def _matcher_text(matcher: dict[str, Any]) -> str:
    op = (
        ("=~" if matcher.get("isEqual", True) else "!~")
        if matcher["isRegex"]
        else ("=" if matcher.get("isEqual", True) else "!=")
    )
    return f"{matcher['name']}{op}{json.dumps(matcher['value'], ensure_ascii=False)}"


def expire(target: ApiTarget, silence_ids: Sequence[str]) -> None:
    for silence_id in silence_ids:
        _request(target, "DELETE", f"/api/v2/silence/{urllib.parse.quote(silence_id, safe='')}")
