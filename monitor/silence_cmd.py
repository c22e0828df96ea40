"""`riskmon silence add|list|expire`: silences set through the daemon's HTTP API.

The same Alertmanager v2 endpoints amtool uses (`monitor/api_v2.py`), so a silence set
here shows in `amtool silence query` and the other way round.
"""

from __future__ import annotations

import getpass
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from monitor import schema
from monitor.silences import matcher_json, parse_time, time_text

__all__ = ["Daemon", "SilenceCommandError", "add", "expire", "list_silences"]

TIMEOUT = 10.0  # seconds for each request to the daemon


class SilenceCommandError(Exception):
    """The daemon cannot be reached or refused the request; the message says why."""


@dataclass(frozen=True, slots=True)
class Daemon:
    """Where the daemon's API is, and the bearer token file it wants, if any."""

    url: str
    token_file: Path | None = None

    def headers(self) -> dict[str, str]:
        if self.token_file is None:
            return {}
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SilenceCommandError(
                f"cannot read the token file {self.token_file}: {exc.strerror}"
            ) from None
        return {"Authorization": f"Bearer {token}"}


def _request(daemon: Daemon, method: str, path: str, body: Any = None) -> Any:
    url = daemon.url
    data = None if body is None else json.dumps(body).encode("utf-8")
    headers = daemon.headers()
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(
        url.rstrip("/") + path, data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            text = response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        raw = exc.read().decode("utf-8", errors="replace")
        try:
            reason = json.loads(raw)
        except ValueError:
            reason = raw
        raise SilenceCommandError(f"{method} {path}: {exc.code}: {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SilenceCommandError(f"cannot reach riskmon at {url}: {reason}") from None
    return json.loads(text) if text else None


def add(
    daemon: Daemon,
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
        "startsAt": time_text(start),
        "endsAt": time_text(start + duration),
        "createdBy": author or getpass.getuser(),
        "comment": comment,
    }
    answer = _request(daemon, "POST", "/api/v2/silences", body)
    return str(answer["silenceID"])


def list_silences(
    daemon: Daemon, out: TextIO, *, expired: bool = False, as_json: bool = False
) -> None:
    """Print the active and pending silences (with `expired`, the expired ones too)."""
    found: list[dict[str, Any]] = _request(daemon, "GET", "/api/v2/silences")
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


def expire(daemon: Daemon, silence_ids: Sequence[str]) -> None:
    for silence_id in silence_ids:
        _request(daemon, "DELETE", f"/api/v2/silence/{urllib.parse.quote(silence_id, safe='')}")
