"""The bridge's durable memory: `state_dir/pagerduty.db` (SQLite, WAL).

One table, `events`, one row per `event_id` ever received (within the retention
window). A row is `pending` (received and acknowledged to the broker, not yet accepted
by PagerDuty: its MQTT payload is kept so a restart forwards it), then `sent` (PagerDuty
answered 202), `dropped` (PagerDuty refused it, 400) or `unrouted` (no route took it).
The primary key on `event_id` is the de-duplication: `add` of an id already there is
refused, whatever its state. Finished rows are deleted `retention` seconds after they
finished; pending rows are never deleted.

A committed `add` survives a crash of the process (WAL, `synchronous=NORMAL`). One
process owns a state folder: a second `BridgeStore` on the same file fails with
`StoreLocked`; an unsafe path (a symlink, a folder that cannot be made) with its
`StoreError`. The lock, the 0700/0600 rules and WAL are the daemon's store's too
(`monitor/infra/locked_sqlite.py`).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Literal

from monitor.infra.locked_sqlite import StateLock, StoreError, StoreLocked, connect_wal

__all__ = ["BridgeStore", "StoreError", "StoreLocked"]

State = Literal["pending", "sent", "dropped", "unrouted"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    payload BLOB,
    received_at REAL NOT NULL,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS events_done ON events (done_at) WHERE done_at IS NOT NULL;
"""


class BridgeStore:
    def __init__(self, path: Path, *, retention: float) -> None:
        self.path = path
        self.retention = retention
        self._lock = StateLock(path, in_use=" is in use by another riskmon pagerduty")
        try:
            self._db = connect_wal(
                path, check_same_thread=False, init=lambda db: db.executescript(_SCHEMA)
            )
        except BaseException:
            self._lock.release()
            raise

    def add(self, event_id: str, payload: bytes | None, state: State = "pending") -> bool:
        """Remember `event_id` (with its payload while pending); False when it was seen."""
        done_at = None if state == "pending" else time.time()
        cursor = self._db.execute(
            "INSERT INTO events (event_id, state, payload, received_at, done_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
            (event_id, state, payload if state == "pending" else None, time.time(), done_at),
        )
        return cursor.rowcount == 1

    def finish(self, event_id: str, state: State) -> None:
        """A pending event is done: `sent`, `dropped` or `unrouted`; its payload goes."""
        self._db.execute(
            "UPDATE events SET state = ?, payload = NULL, done_at = ? WHERE event_id = ?",
            (state, time.time(), event_id),
        )

    def pending(self) -> Iterator[tuple[str, bytes]]:
        """(event_id, payload) of every pending event, oldest first."""
        rows = self._db.execute(
            "SELECT event_id, payload FROM events WHERE state = 'pending' ORDER BY seq"
        ).fetchall()
        for event_id, payload in rows:
            yield str(event_id), bytes(payload)

    def state(self, event_id: str) -> State | None:
        query = "SELECT state FROM events WHERE event_id = ?"
        row = self._db.execute(query, (event_id,)).fetchone()
        state: State | None = None if row is None else row[0]
        return state

    def prune(self) -> int:
        """Forget finished events older than the retention window; how many."""
        cutoff = time.time() - self.retention
        cursor = self._db.execute(
            "DELETE FROM events WHERE done_at IS NOT NULL AND done_at < ?", (cutoff,)
        )
        return cursor.rowcount

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._lock.release()

    def __enter__(self) -> BridgeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
