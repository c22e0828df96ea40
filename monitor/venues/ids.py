"""Account ids as they go into URLs, and the ids a venue's discovery may hand out."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

import structlog

from monitor.errors import VenueRequestError
from monitor.venues.wire import clip

log = structlog.get_logger("riskmon.venues")

#: Longer ids than this are no account's: refused from discovery.
MAX_ID_LENGTH = 256
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def path_segment(account_id: str) -> str:
    """`account_id` as one URL path segment: every reserved character percent-encoded.
    `.` and `..` would be dot segments (`/v1/accounts/../balances` is `/v1/balances`)
    and an empty id no segment at all: VenueRequestError, the request is not sent."""
    if account_id.isdigit() and account_id.isascii():
        return account_id  # the usual (Clear Street's ids): nothing to quote, 1 us less
    if account_id in ("", ".", ".."):
        raise VenueRequestError(f"account id {account_id!r} cannot be a URL path segment")
    return quote(account_id, safe="")


def discovered_ids(found: Iterable[object], venue: str) -> list[str]:
    """The ids among `found` (a venue's listing) riskmon can poll, each once, in order.
    Ids that are not text or whole numbers, empty, dot segments, longer than
    MAX_ID_LENGTH or holding control characters are left out, each logged."""
    ids: list[str] = []
    seen: set[str] = set()
    for raw in found:
        reason = _unusable(raw)
        if reason is not None:
            log.warning(
                "discovery: account id refused",
                venue=venue,
                account=clip(repr(raw), 80),
                reason=reason,
            )
            continue
        account_id = str(raw)
        if account_id not in seen:
            seen.add(account_id)
            ids.append(account_id)
    return ids


def _unusable(raw: object) -> str | None:
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return f"not text or a whole number but {type(raw).__name__}"
    if isinstance(raw, int):
        return None if 0 <= raw < 10**MAX_ID_LENGTH else "a number out of range"
    if raw.strip() in ("", ".", ".."):
        return "empty or a dot segment"
    if len(raw) > MAX_ID_LENGTH:
        return f"longer than {MAX_ID_LENGTH} characters"
    if _CONTROL.search(raw):
        return "holds a control character"
    return None
