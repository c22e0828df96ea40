"""The journal's reading side: pages of records by filter, and the check of the chain.

Readers open `state_dir/riskmon.db` read-only, beside a running daemon (SQLite's WAL
lets them read while it writes) or after it stopped: `riskmon history` and
`GET /api/v1/history` both go through here.

`verify` walks every record in `seq` order and names the first that does not chain:
its digest is not that of its content (edited), its `prev` is not the digest of the
record before it (the one before was edited, or it was moved), a `seq` is missing
(deleted), the first record does not follow the anchor pruning left, or the last is
short of the head the daemon keeps (records deleted from the end; the head is kept
once a second, so the records of the last second before a stop are not covered). The
venue and account
columns (which the filters read) must match the payload. What no chain can catch: the
journal's head and anchor are in the same file, so someone who rewrites every record
after the one changed, and the head, goes unseen; `--verify` prints the head digest so
that it can be kept elsewhere and compared.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from monitor.durations import parse_duration
from monitor.history.chain import GENESIS, record_digest
from monitor.history.journal import ANCHOR_KEY, HEAD_KEY, read_meta_link, rfc3339_ms

__all__ = [
    "MAX_PAGE",
    "HistoryError",
    "Query",
    "Record",
    "Verified",
    "iter_records",
    "open_journal",
    "parse_since",
    "read_page",
    "verify",
]

MAX_PAGE: Final = 1000  # records in one page of /api/v1/history
_COLUMNS: Final = "seq, at, kind, venue, account, payload, prev, digest"


class HistoryError(Exception):
    """The journal cannot be read; the message names the file."""


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    at: str
    kind: str
    venue: str | None
    account: str | None
    payload: str  # the stored (canonical) JSON text
    prev: str
    digest: str

    def to_json(self) -> dict[str, Any]:
        """The record as `riskmon history --json` and the API give it."""
        return {
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind,
            "venue": self.venue,
            "account": self.account,
            "payload": json.loads(self.payload),
            "prev": self.prev,
            "digest": self.digest,
        }


@dataclass(frozen=True, slots=True)
class Query:
    """Which records: at or after `since` (RFC 3339 text as the journal writes it), of
    a venue, of an account (records of neither, reloads and silences, are left out
    when either is asked for), of a kind; with `seq` greater than `after`; at most
    `limit` (None: all), oldest first."""

    since: str | None = None
    venue: str | None = None
    account: str | None = None
    kind: str | None = None
    after: int = 0
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Verified:
    """What `verify` found: how many records, their seq range, the head digest, and
    the first problem (None: the chain holds)."""

    records: int
    first: int | None
    last: int | None
    head: str
    problem: str | None


def parse_since(text: str, now: float | None = None) -> str:
    """`--since`: RFC 3339 (`2026-12-05T06:00:00Z`; without an offset it is UTC) or a
    duration before now (`2h`, `30m`), as the journal's time text. ValueError naming
    both forms otherwise."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        pass
    else:
        return rfc3339_ms((time.time() if now is None else now) - seconds)
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a time (RFC 3339, e.g. 2026-12-05T06:00:00Z) nor a "
            "duration before now (e.g. 2h, 30m)"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return rfc3339_ms(at.timestamp())


def open_journal(path: Path) -> sqlite3.Connection:
    """The database at `path`, read-only; HistoryError naming it when it cannot be."""
    if not path.is_file():
        raise HistoryError(f"{path}: no such file (is state_dir right, has riskmon run?)")
    try:
        # a URI, for read-only: the path quoted (a `?` or `#` in a folder name)
        db = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
        db.execute("SELECT 1 FROM journal LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise HistoryError(f"{path}: cannot read the journal: {exc}") from None
    return db


def read_page(db: sqlite3.Connection, query: Query) -> list[Record]:
    """The records `query` asks for, oldest first."""
    return list(iter_records(db, query))


def iter_records(db: sqlite3.Connection, query: Query) -> Iterator[Record]:
    """The records `query` asks for, oldest first, read as they are consumed."""
    where = ["seq > ?"]
    args: list[Any] = [query.after]
    for column, value in (
        ("at >= ?", query.since),
        ("venue = ?", query.venue),
        ("account = ?", query.account),
        ("kind = ?", query.kind),
    ):
        if value is not None:
            where.append(column)
            args.append(value)
    sql = f"SELECT {_COLUMNS} FROM journal WHERE {' AND '.join(where)} ORDER BY seq"
    if query.limit is not None:
        sql += " LIMIT ?"
        args.append(query.limit)
    return (Record(*row) for row in db.execute(sql, args))


def _records(db: sqlite3.Connection) -> Iterator[Record]:
    yield from (Record(*row) for row in db.execute(f"SELECT {_COLUMNS} FROM journal ORDER BY seq"))


def verify(db: sqlite3.Connection) -> Verified:
    """Check the whole chain (module docstring)."""
    try:
        anchor = read_meta_link(db, ANCHOR_KEY)
        head = read_meta_link(db, HEAD_KEY)
    except ValueError as exc:
        return Verified(0, None, None, "", str(exc))
    expected_seq, expected_prev = anchor if anchor is not None else (0, GENESIS)
    count = 0
    first: int | None = None
    last: Record | None = None
    for record in _records(db):
        problem = _check(record, expected_seq + 1, expected_prev, last, anchor is not None)
        replaced = head is not None and record.seq == head[0] and record.digest != head[1]
        if problem is None and replaced:
            problem = (
                f"record {record.seq} ({record.at}, {record.kind}): not the record the"
                " journal's head names (replaced?)"
            )
        if problem is not None:
            return Verified(count, first, last.seq if last else None, "", problem)
        count += 1
        first = record.seq if first is None else first
        last = record
        expected_seq, expected_prev = record.seq, record.digest
    if head is not None and head[0] > expected_seq:
        problem = (
            f"record {expected_seq + 1}: missing (deleted?): the journal ends at record "
            f"{expected_seq} but its head is record {head[0]}"
        )
        return Verified(count, first, expected_seq or None, "", problem)
    return Verified(count, first, last.seq if last else None, expected_prev, None)


def _check(
    record: Record, seq: int, prev: str, before: Record | None, anchored: bool
) -> str | None:
    """Why `record` does not chain where `seq` and `prev` were expected; None if it does."""
    name = f"record {record.seq} ({record.at}, {record.kind})"
    if record.seq < seq:
        return f"{name}: out of order: it comes after record {seq - 1}"
    if record.seq > seq:
        gone = f"record {seq}" if record.seq == seq + 1 else f"records {seq} to {record.seq - 1}"
        if before is not None:
            return f"{name}: {gone} missing between it and record {before.seq} (deleted?)"
        if anchored:
            return f"{name}: {gone} missing after the anchor record {seq - 1} (deleted?)"
        return f"{name}: {gone} missing: the journal starts at record 1 (deleted?)"
    digest = record_digest(record.seq, record.at, record.kind, record.payload, record.prev)
    if digest != record.digest:
        return f"{name}: its content does not match its digest (edited or moved?)"
    if record.prev != prev:
        after = f"record {before.seq}" if before is not None else "the anchor"
        return (
            f"{name}: does not chain to {after}: its prev digest is not {after}'s digest"
            f" ({after} edited, or records reordered?)"
        )
    try:
        payload = json.loads(record.payload)
    except ValueError:
        return f"{name}: its payload is not JSON"
    if isinstance(payload, dict) and (
        payload.get("venue") != record.venue or payload.get("account") != record.account
    ):
        return f"{name}: its venue/account columns do not match its payload (edited?)"
    return None
