"""The journal's writing side: records waiting for the Store's next transaction, chained.

The daemon (and later the silences and the inhibitions) calls `record_event`,
`record_silence` and `record_reload`: each builds the record's payload and queues it, in
memory, in the order things happened. Nothing is written there: the Store writes what
waits inside its next transaction (`write`, then the callback it returns once the
transaction committed), so an event's journal record is committed with the event itself
in the outbox, in the same transaction, and costs one more small INSERT (bench/
journal_cost.py). What a rolled-back transaction did not write stays queued for the
next one. When nothing else writes (a reload, a silence), the daemon has the Store
write the journal alone (`Store.write_journal`).

While the disk refuses writes, at most `capacity` records wait; later ones are counted
and, once writes work again, a `gap` record says how many were lost.

The table (`journal` in `state_dir/riskmon.db`) and `meta` keys: `journal_head`
(`{"seq": n, "digest": d}` of the last record written) and `journal_anchor` (the same
of the last record pruned for `history_retention`: the first record kept must chain
to it). See `monitor.history.chain` for what a digest covers and
`monitor.history.reader` for the checks.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

from monitor.engine.lifecycle import AlertEvent
from monitor.history.chain import GENESIS, canonical, record_digest

__all__ = [
    "CAPACITY",
    "SCHEMA",
    "Journal",
    "NullJournal",
    "file_digest",
    "rfc3339_ms",
]

CAPACITY: Final = 10_000  # records waiting in memory while the disk refuses them
PRUNE_BATCH: Final = 2_000  # records deleted per prune transaction (a few ms)

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    venue TEXT,
    account TEXT,
    payload TEXT NOT NULL,
    prev TEXT NOT NULL,
    digest TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_at ON journal (at);
"""

_INSERT: Final = (
    "INSERT INTO journal (seq, at, kind, venue, account, payload, prev, digest)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_SET_META: Final = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
HEAD_KEY: Final = "journal_head"
ANCHOR_KEY: Final = "journal_anchor"


def rfc3339_ms(t: float) -> str:
    """Epoch seconds as `2026-11-21T10:00:00.000Z` (as the event payloads write times)."""
    seconds, millis = divmod(round(t * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class _Pending(NamedTuple):
    at: str
    kind: str
    venue: str | None
    account: str | None
    payload: str  # canonical


class Journal:
    """The records waiting to be written and the head of the chain (module docstring).

    `head` is (seq, digest) of the last record written; `clock` gives the time of the
    records that are not events."""

    def __init__(
        self,
        head: tuple[int, str] = (0, GENESIS),
        *,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.head = head
        self._capacity = capacity
        self._clock = clock
        self._pending: deque[_Pending] = deque()
        self.lost = 0  # records dropped since the last write: a `gap` record follows
        self._saved_head = head  # the head as `meta` holds it

    @classmethod
    def load(cls, db: sqlite3.Connection, **kwargs: Any) -> Journal:
        """The journal of an open database (its table made if missing)."""
        db.executescript(SCHEMA)
        row = db.execute("SELECT seq, digest FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        if row is not None:
            journal = cls((int(row[0]), str(row[1])), **kwargs)
        else:  # empty, or everything pruned: the next record follows the anchor
            journal = cls(_meta_link(db, ANCHOR_KEY) or (0, GENESIS), **kwargs)
        journal._saved_head = _meta_link(db, HEAD_KEY) or (0, GENESIS)
        return journal

    @property
    def pending(self) -> int:
        """Records waiting for a transaction."""
        return len(self._pending)

    # -- what happened -----------------------------------------------------------------

    def record_event(
        self,
        event: AlertEvent,
        *,
        event_id: str | None = None,
        published: bool = True,
        suppressed_by: Sequence[str] = (),
    ) -> None:
        """An alert event: published (to the outbox, as `event_id`), or suppressed (by
        the silences or inhibitions `suppressed_by` names, e.g. `silence <id>`,
        `inhibited by VenueDown cs/*`) and published nowhere (`event_id` None then).
        Written with the next Store transaction (the outbox append of the events it
        goes with), or at the next tick."""
        payload: dict[str, Any] = {
            "event_id": event_id,
            "status": event.status,
            "alertname": event.alertname,
            "severity": event.severity,
            "venue": event.venue,
            "account": event.account,
            "labels": dict(event.labels),
            "annotations": dict(event.annotations),
            "values": dict(event.values),
            "starts_at": rfc3339_ms(event.starts_at),
            "ends_at": None if event.ends_at is None else rfc3339_ms(event.ends_at),
            "fingerprint": event.fingerprint,
            "published": published,
        }
        if event.status == "resolved":
            payload["firing_values"] = dict(event.firing_values)
        if event.reason is not None:
            payload["reason"] = event.reason
        if suppressed_by:
            payload["suppressed_by"] = list(suppressed_by)
        self._queue(rfc3339_ms(event.at), "event", payload, event.venue, event.account)

    def record_silence(self, action: str, silence: Mapping[str, Any]) -> None:
        """A silence was created, updated or expired (`action`); `silence` as the API
        serves it (id, matchers, starts_at, ends_at, created_by, comment)."""
        payload = {"action": action, "silence": dict(silence)}
        self._queue(rfc3339_ms(self._clock()), "silence", payload)

    def record_reload(
        self,
        *,
        trigger: str,
        successful: bool,
        config: tuple[str, str | None] | None = None,
        rule_files: Iterable[tuple[str, str | None]] = (),
        problems: Sequence[str] = (),
    ) -> None:
        """The config and rules were (re)loaded: at `trigger` (`start`, `SIGHUP`, `rule
        files changed`), with the SHA-256 of the config file and each rule file
        (`file_digests`: None where it could not be read), and the problems of a
        failed one (the running config and rules stayed)."""
        payload: dict[str, Any] = {
            "trigger": trigger,
            "successful": successful,
            "rule_files": [{"path": path, "sha256": digest} for path, digest in rule_files],
        }
        if config is not None:
            payload["config"] = {"path": config[0], "sha256": config[1]}
        if problems:
            payload["problems"] = list(problems)
        self._queue(rfc3339_ms(self._clock()), "reload", payload)

    def _queue(
        self,
        at: str,
        kind: str,
        payload: Mapping[str, Any],
        venue: str | None = None,
        account: str | None = None,
    ) -> None:
        if len(self._pending) >= self._capacity:
            self.lost += 1
            return
        self._pending.append(_Pending(at, kind, venue, account, canonical(payload)))

    # -- the Store's side ------------------------------------------------------------------

    @property
    def saved_head(self) -> tuple[int, str]:
        """The head as `meta` holds it (it may lag `head`: `write`)."""
        return self._saved_head

    def write(
        self, db: sqlite3.Connection, *, save_head: bool = False
    ) -> Callable[[], None] | None:
        """Insert what waits, chained, inside the caller's open transaction; the
        callback to call once it committed (None: nothing to write). A transaction
        that rolls back leaves everything queued and the head where it was.

        With `save_head`, the head (seq and digest of the last record) is kept in
        `meta` too, if it moved. The Store asks for that once a tick rather than with
        every event (one more page written per event, a quarter of the journal's cost):
        so records deleted from the end are caught by `verify` unless they were written
        in the second before the daemon stopped."""
        seq, prev = self.head
        rows = []
        for item in self._pending:
            seq += 1
            digest = record_digest(seq, item.at, item.kind, item.payload, prev)
            rows.append((seq, *item[:4], item.payload, prev, digest))
            prev = digest
        lost = self.lost
        if lost:
            seq += 1
            at = rfc3339_ms(self._clock())
            payload = canonical(
                {"lost": lost, "reason": "the disk refused writes and the queue was full"}
            )
            digest = record_digest(seq, at, "gap", payload, prev)
            rows.append((seq, at, "gap", None, None, payload, prev, digest))
            prev = digest
        head = (seq, prev)
        saving = save_head and head != self._saved_head
        if not rows and not saving:
            return None
        if rows:
            db.executemany(_INSERT, rows)
        if saving:
            db.execute(_SET_META, (HEAD_KEY, _link_text(head)))
        written = len(rows) - (1 if lost else 0)

        def committed() -> None:
            for _ in range(written):
                self._pending.popleft()
            self.lost -= lost
            self.head = head
            if saving:
                self._saved_head = head

        return committed

    @staticmethod
    def prune(db: sqlite3.Connection, before: str, limit: int = PRUNE_BATCH) -> int:
        """Delete up to `limit` of the oldest records dated before `before`, inside the
        caller's transaction, keeping the digest of the last one deleted as the anchor
        the first one kept must chain to; how many."""
        # A prefix of the chain goes, up to the first record that is recent enough
        # (records are in time order but for clock steps).
        first = db.execute("SELECT at FROM journal ORDER BY seq LIMIT 1").fetchone()
        if first is None or str(first[0]) >= before:
            return 0
        cut: tuple[int, str] | None = None
        rows = db.execute("SELECT seq, at, digest FROM journal ORDER BY seq LIMIT ?", (limit,))
        for seq, at, digest in rows:
            if str(at) >= before:
                break
            cut = (int(seq), str(digest))
        if cut is None:
            return 0
        last, digest = cut
        deleted = db.execute("DELETE FROM journal WHERE seq <= ?", (last,)).rowcount
        db.execute(_SET_META, (ANCHOR_KEY, _link_text((last, digest))))
        return max(deleted, 0)


class NullJournal(Journal):
    """A journal that keeps nothing (benchmarks that measure the journal's cost)."""

    def _queue(
        self,
        at: str,
        kind: str,
        payload: Mapping[str, Any],
        venue: str | None = None,
        account: str | None = None,
    ) -> None:
        return None

    def write(
        self, db: sqlite3.Connection, *, save_head: bool = False
    ) -> Callable[[], None] | None:
        return None


def file_digest(path: str | Path) -> str | None:
    """The SHA-256 (hex) of a file's bytes, as `sha256sum` prints it; None when it
    cannot be read."""
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except OSError:
        return None


def _link_text(link: tuple[int, str]) -> str:
    return json.dumps({"seq": link[0], "digest": link[1]}, sort_keys=True)


def _meta_link(db: sqlite3.Connection, key: str) -> tuple[int, str] | None:
    """`read_meta_link`, None for an unreadable one too: a writer starts from the
    records, `verify` reports the damage."""
    try:
        return read_meta_link(db, key)
    except ValueError:
        return None


def read_meta_link(db: sqlite3.Connection, key: str) -> tuple[int, str] | None:
    """The (seq, digest) kept in `meta` under `key` (head or anchor); None when absent.
    ValueError when it is not one."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        return None
    try:
        data = json.loads(row[0])
        seq, digest = data["seq"], data["digest"]
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"meta {key} is not {{seq, digest}}: {row[0]!r}") from None
    if not isinstance(seq, int) or not isinstance(digest, str):
        raise ValueError(f"meta {key} is not {{seq, digest}}: {row[0]!r}")
    return seq, digest
