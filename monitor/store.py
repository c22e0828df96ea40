"""The durable outbox and the alert state, in one SQLite file: `state_dir/riskmon.db`.

The outbox is the only thing between an event and the network: the daemon `append`s an
event (with the alert state it leads to, in the same transaction) before anything is
published; the MQTT publisher reads `pending` records in `seq` order and `acknowledge`s
a record only after the broker's PUBACKs, which deletes it. A broker outage or a crash
therefore loses nothing; it can only repeat an event (consumers de-duplicate by
`event_id`).

Durability. The database runs in WAL mode. With `synchronous=NORMAL` (the default) a
committed transaction survives a crash of the process, SIGKILL included: the daemon's
failure mode. The last transactions before a power loss or kernel panic may roll back
(the WAL is fsynced at checkpoints, not at every commit); `synchronous="FULL"` fsyncs
every commit and is durable against that too, at the price of one fsync (0.1 to 10 ms,
depending on the disk) per `append`. A rolled-back `acknowledge` only means an event is
published again.

Cost. Every call is synchronous and meant for the event loop: `append` of one event with
`synchronous=NORMAL` is one small write transaction, about 20 to 40 microseconds on a
laptop SSD; `depth` is a counter in memory. Copying the WAL into the database file (a
checkpoint, with its fsyncs) is left to a thread of the Store's own, once a second:
done by whichever commit crossed SQLite's 1,000-page mark, it held that `append` or
`acknowledge`, and the loop, 4-5 ms (bench/latency.py), about one event in 200. Should
the thread fall behind, SQLite's own checkpoint at 10,000 pages bounds the WAL.

One process owns a state folder: a second `Store` on the same file, in this process or
another, fails at open with `StoreLocked` (two daemons draining one outbox would publish
everything twice).

Tables: `outbox` (the events, with when the venue answer behind each arrived),
`dead_letters` (records the broker refused again and again, moved aside with the reason
so that the records behind them flow: `dead_letter`; back into the outbox, in their
place, with `requeue_dead_letters`), `alert_state` (one row: the AlertBook's JSON),
`silences` (one JSON object per silence, `monitor/silences.py`),
`meta` (the schema version, the journal's head and anchor), `journal`: the
history (monitor/history/journal.py), whose records are written in the same
transactions as the events they record, and for the other destinations
(Alertmanager, with `set_destinations`): `delivery_queue` (each event a second time
per destination, written in the same transaction as the outbox record, read and
deleted by that destination's sender on its own: a slow destination holds back
neither MQTT nor another one). A file that is not a riskmon database, is corrupt or
was written by a newer riskmon gives a `StoreError` naming the file.

The folder is created 0700 and the file 0600; a `riskmon.db` that is a symlink is
refused (monitor/infra/statefiles.py); the lock and WAL set-up are the PagerDuty
bridge's too (monitor/infra/locked_sqlite.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from monitor.history.journal import Journal, NullJournal, rfc3339_ms
from monitor.infra.locked_sqlite import StateLock, StoreError, StoreLocked, connect_wal

__all__ = [
    "SCHEMA_VERSION",
    "OutboxEntry",
    "OutboxRecord",
    "Store",
    "StoreError",
    "StoreLocked",
]

#: The layout this code reads and writes; kept in `meta`.
SCHEMA_VERSION: Final = 1

_SYNCHRONOUS: Final = ("OFF", "NORMAL", "FULL", "EXTRA")
CHECKPOINT_INTERVAL: Final = 1.0  # seconds between the background checkpoints
_AUTOCHECKPOINT_PAGES: Final = 10_000  # SQLite's own, only if the thread falls behind

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    alert_key TEXT NOT NULL,
    event_topic TEXT NOT NULL,
    event_payload BLOB NOT NULL,
    alert_topic TEXT NOT NULL,
    alert_payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    answered_at REAL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    alert_key TEXT NOT NULL,
    event_topic TEXT NOT NULL,
    event_payload BLOB NOT NULL,
    alert_topic TEXT NOT NULL,
    alert_payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    answered_at REAL,
    reason TEXT NOT NULL,
    dead_at REAL NOT NULL,
    superseded INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS delivery_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    alert_key TEXT NOT NULL,
    event_payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS delivery_queue_destination ON delivery_queue (destination, id);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    json TEXT NOT NULL,
    saved_at REAL NOT NULL
);
"""

_INSERT: Final = (
    "INSERT INTO outbox (event_id, alert_key, event_topic, event_payload,"
    " alert_topic, alert_payload, created_at, answered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_QUEUE: Final = (
    "INSERT INTO delivery_queue (destination, alert_key, event_payload, created_at)"
    " VALUES (?, ?, ?, ?)"
)
_SAVE_ALERTS: Final = "INSERT OR REPLACE INTO alert_state (id, json, saved_at) VALUES (1, ?, ?)"
_COLUMNS: Final = (
    "seq, event_id, alert_key, event_topic, event_payload, alert_topic, alert_payload,"
    " created_at, answered_at"
)
_DEAD_LETTER: Final = (
    f"INSERT INTO dead_letters ({_COLUMNS}, reason, dead_at)"
    f" SELECT {_COLUMNS}, ?, ? FROM outbox WHERE seq = ?"
)
# A dead letter whose alert had a later record delivered meanwhile comes back without
# its retained alert state (alert_topic ''): that would overwrite a newer one.
_REQUEUE: Final = (
    f"INSERT INTO outbox ({_COLUMNS}) SELECT "
    + _COLUMNS.replace("alert_topic,", "CASE WHEN superseded THEN '' ELSE alert_topic END,")
    + " FROM dead_letters"
)
_SUPERSEDE: Final = (
    "UPDATE dead_letters SET superseded = 1 WHERE seq < ?1"
    " AND alert_key = (SELECT alert_key FROM outbox WHERE seq = ?1)"
)
_PENDING: Final = (
    "SELECT seq, event_id, alert_key, event_topic, event_payload, alert_topic,"
    " alert_payload, created_at, answered_at FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?"
)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One event to publish, and the retained alert state it leaves behind.

    `alert_payload` is the retained message for `alert_topic`: the event's JSON while
    the alert fires, `b""` (which clears the retained message) when it resolves; an
    `alert_topic` of "" (a re-queued dead letter whose alert moved on) publishes none.
    `alert_key` is the alert's fingerprint. `answered_at` is when the venue answer that
    caused the event arrived (its `Snapshot.taken_at`, epoch seconds), None for events
    no answer caused (staleness, reloads, accounts that left): the publisher times the
    delivery from it (`riskmon_event_delivery_seconds`).
    """

    event_id: str
    alert_key: str
    event_topic: str
    event_payload: bytes
    alert_topic: str
    alert_payload: bytes
    answered_at: float | None = None


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """An `OutboxEntry` as stored: with its place in the queue and when it was written."""

    seq: int
    event_id: str
    alert_key: str
    event_topic: str
    event_payload: bytes
    alert_topic: str
    alert_payload: bytes
    created_at: float
    answered_at: float | None = None


class Store:
    """The outbox and the alert state of one riskmon instance (see the module docstring).

    `path` is the database file (`state_dir/riskmon.db`); its folder is created.
    `synchronous` is SQLite's setting: NORMAL (durable against a process crash) or FULL
    (against power loss too). `journal`: keep the history (`self.journal`, written in
    the transactions of `append`, `save_alerts` and `write_journal`); False only to
    measure what it costs.
    """

    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "NORMAL",
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        journal: bool = True,
    ) -> None:
        mode = synchronous.upper()
        if mode not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock: StateLock | None = None
        self._checkpointer: _Checkpointer | None = None
        self._depth = 0
        self._dead = 0
        self._destinations: dict[str, int] = {}  # destination -> records queued for it
        self._keep_journal = journal
        self.journal: Journal = NullJournal()
        self._lock = StateLock(
            self.path,
            in_use=": in use by another riskmon process (or another Store in this one);"
            " one instance per state_dir",
        )
        try:
            self._db = self._open(mode)
        except BaseException:
            self._release_lock()
            raise
        self._checkpointer = _Checkpointer(self.path, checkpoint_interval)
        self._checkpointer.start()

    # -- opening --------------------------------------------------------------------------

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _open(self, synchronous: str) -> sqlite3.Connection:
        if self.path.exists() and not os.access(self.path, os.R_OK | os.W_OK):
            raise StoreError(f"{self.path}: cannot read and write it (permissions)")
        return connect_wal(
            self.path, synchronous=synchronous, kind="riskmon database", init=self._prepare
        )

    def _prepare(self, db: sqlite3.Connection) -> None:
        """The opened database checked, its schema brought up to date, its counts read."""
        db.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
        check = db.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            problems = "; ".join(str(row[0]) for row in check[:3])
            raise StoreError(f"{self.path}: the database is corrupt: {problems}")
        db.executescript(_SCHEMA)
        self._check_version(db)
        self._add_answered_at(db)
        self._depth = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        self._dead = int(db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])
        if self._keep_journal:
            self.journal = Journal.load(db)

    def _check_version(self, db: sqlite3.Connection) -> None:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            return
        try:
            version = int(row[0])
        except ValueError:
            raise StoreError(f"{self.path}: unreadable schema version {row[0]!r}") from None
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: written by a newer riskmon (schema {version}); "
                f"this one reads schema {SCHEMA_VERSION}"
            )

    @staticmethod
    def _add_answered_at(db: sqlite3.Connection) -> None:
        """`outbox.answered_at` came later, within schema 1: a nullable column that
        older riskmons neither read nor write (they name their columns), so a file
        moves between versions either way; added here to a file that lacks it."""
        columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
        if "answered_at" not in columns:
            db.execute("ALTER TABLE outbox ADD COLUMN answered_at REAL")

    # -- the outbox -------------------------------------------------------------------------

    def append(
        self, items: Sequence[OutboxEntry], alerts: list[dict[str, Any]] | None = None
    ) -> None:
        """Write `items` to the outbox and, when given, replace the alert state: one
        transaction, so the events and the state they lead to are saved together."""
        if not items and alerts is None and not self.journal.pending:
            return
        now = time.time()
        rows = [
            (
                e.event_id,
                e.alert_key,
                e.event_topic,
                e.event_payload,
                e.alert_topic,
                e.alert_payload,
                now,
                e.answered_at,
            )
            for e in items
        ]
        state = None if alerts is None else _dump_alerts(alerts)
        events = [(e.alert_key, e.event_payload) for e in items if e.event_topic]
        queued = [
            (destination, key, payload, now)
            for destination in self._destinations
            for key, payload in events
        ]
        with self._transaction("append to the outbox") as db:
            if rows:
                db.executemany(_INSERT, rows)
            if queued:
                db.executemany(_QUEUE, queued)
            if state is not None:
                db.execute(_SAVE_ALERTS, (state, now))
            journaled = self.journal.write(db)
        self._depth += len(rows)
        for destination in self._destinations:
            self._destinations[destination] += len(events)
        if journaled is not None:
            journaled()

    def pending(self, limit: int = 256, *, after: int = 0) -> list[OutboxRecord]:
        """Up to `limit` unacknowledged records with `seq > after`, oldest first."""
        with self._errors("read the outbox"):
            rows = self._conn().execute(_PENDING, (after, limit)).fetchall()
        return [OutboxRecord(*row) for row in rows]

    def acknowledge(self, seqs: Sequence[int]) -> None:
        """Delete the records `seqs` (published and PUBACKed); unknown seqs are ignored."""
        if not seqs:
            return
        with self._transaction("acknowledge outbox records") as db:
            if self._dead:
                db.executemany(_SUPERSEDE, [(s,) for s in seqs])
            deleted = db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            count = deleted.rowcount
        self._depth = max(0, self._depth - max(count, 0))

    def depth(self) -> int:
        """How many records wait to be published (a counter: no query). Still valid
        after `close`."""
        return self._depth

    # -- the other destinations -------------------------------------------------------------

    def set_destinations(self, names: Sequence[str]) -> dict[str, int]:
        """From now on `append` queues every event for each destination named (besides
        the outbox, which is MQTT's). What was queued for a destination no longer named
        is deleted: how many records, by destination."""
        wanted = list(dict.fromkeys(names))
        with self._transaction("set the delivery destinations") as db:
            counts = {
                str(name): int(count)
                for name, count in db.execute(
                    "SELECT destination, COUNT(*) FROM delivery_queue GROUP BY destination"
                )
            }
            dropped = {name: count for name, count in counts.items() if name not in wanted}
            db.executemany(
                "DELETE FROM delivery_queue WHERE destination = ?", [(d,) for d in dropped]
            )
            depths = {name: counts.get(name, 0) for name in wanted}
        self._destinations = depths
        return dropped

    def queued(self, destination: str, limit: int = 64) -> list[tuple[int, bytes]]:
        """Up to `limit` (id, event payload) queued for `destination`, oldest first."""
        with self._errors("read the delivery queue"):
            rows = self._conn().execute(
                "SELECT id, event_payload FROM delivery_queue WHERE destination = ?"
                " ORDER BY id LIMIT ?",
                (destination, limit),
            )
            return [(int(row_id), bytes(payload)) for row_id, payload in rows]

    def delivered(self, destination: str, ids: Sequence[int]) -> None:
        """Delete the queued records `ids` of `destination` (it took them)."""
        if not ids:
            return
        with self._transaction("acknowledge delivered records") as db:
            count = db.executemany(
                "DELETE FROM delivery_queue WHERE id = ? AND destination = ?",
                [(i, destination) for i in ids],
            ).rowcount
        if destination in self._destinations:
            left = self._destinations[destination] - max(count, 0)
            self._destinations[destination] = max(0, left)

    def queue_depth(self, destination: str) -> int:
        """How many records wait for `destination` (a counter: no query)."""
        return self._destinations.get(destination, 0)

    # -- dead letters -----------------------------------------------------------------------

    def dead_letter(self, seq: int, reason: str) -> bool:
        """Move the record `seq` from the outbox to the dead letters, with `reason` (the
        broker's refusal); False when it is no longer in the outbox."""
        with self._transaction("move a record to the dead letters") as db:
            moved = db.execute(_DEAD_LETTER, (reason, time.time(), seq)).rowcount
            if moved:
                db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
        if moved:
            self._depth = max(0, self._depth - 1)
            self._dead += 1
        return bool(moved)

    def dead_letters(self) -> int:
        """How many records are dead letters (a counter: no query)."""
        return self._dead

    def dead_letter_reasons(self) -> list[tuple[int, str, str]]:
        """(seq, event topic, reason) of each dead letter, oldest first."""
        with self._errors("read the dead letters"):
            rows = self._conn().execute(
                "SELECT seq, event_topic, reason FROM dead_letters ORDER BY seq"
            )
            return [(int(seq), str(topic), str(reason)) for seq, topic, reason in rows]

    def requeue_dead_letters(self) -> int:
        """Put every dead letter back into the outbox, in its old place in the queue
        (its seq); how many. One whose alert had a later record acknowledged meanwhile
        comes back with `alert_topic` '' (its retained state is out of date)."""
        with self._transaction("re-queue the dead letters") as db:
            moved = db.execute(_REQUEUE).rowcount
            db.execute("DELETE FROM dead_letters")
        self._depth += max(moved, 0)
        self._dead = 0
        return max(moved, 0)

    @property
    def checkpoint_error(self) -> str | None:
        """Why the last background checkpoint failed (the disk is full, most likely);
        None once one works again."""
        checkpointer = self._checkpointer
        return None if checkpointer is None else checkpointer.error

    # -- the alert state --------------------------------------------------------------------

    def save_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Replace the saved alert state (`AlertBook.to_json()`)."""
        state = _dump_alerts(alerts)
        with self._transaction("save the alert state") as db:
            db.execute(_SAVE_ALERTS, (state, time.time()))
            journaled = self.journal.write(db)
        if journaled is not None:
            journaled()

    # -- the journal ------------------------------------------------------------------------

    def write_journal(self) -> None:
        """Write the journal's waiting records (those no `append` took along) and keep
        its head (monitor/history/journal.py); no transaction when neither changed.
        The daemon calls it every tick."""
        journal = self.journal
        if not journal.pending and not journal.lost and journal.head == journal.saved_head:
            return
        with self._transaction("write the journal") as db:
            journaled = journal.write(db, save_head=True)
        if journaled is not None:
            journaled()

    def prune_journal(self, before: float) -> int:
        """Delete a batch of the journal's records older than `before` (epoch seconds),
        keeping the chain verifiable (monitor/history/journal.py); how many."""
        if not self._keep_journal:
            return 0
        with self._transaction("prune the journal") as db:
            return self.journal.prune(db, rfc3339_ms(before))

    def load_alerts(self) -> list[dict[str, Any]]:
        """The saved alert state; `[]` when none was saved."""
        with self._errors("read the alert state"):
            row = self._conn().execute("SELECT json FROM alert_state WHERE id = 1").fetchone()
        if row is None:
            return []
        try:
            data = json.loads(row[0])
        except ValueError as exc:
            raise StoreError(f"{self.path}: the saved alert state is not JSON: {exc}") from None
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise StoreError(f"{self.path}: the saved alert state is not a list of objects")
        return data

    # -- silences (monitor/silences.py) -------------------------------------------------------

    def save_silence(self, silence_id: str, data: dict[str, Any]) -> None:
        """Create or replace one silence (its JSON object)."""
        with self._transaction("save a silence") as db:
            db.execute(
                "INSERT OR REPLACE INTO silences (id, json) VALUES (?, ?)",
                (silence_id, json.dumps(data, separators=(",", ":"))),
            )

    def delete_silences(self, ids: Sequence[str]) -> None:
        with self._transaction("delete silences") as db:
            db.executemany("DELETE FROM silences WHERE id = ?", [(i,) for i in ids])

    def load_silences(self) -> list[dict[str, Any]]:
        """Every saved silence's JSON object, by id."""
        with self._errors("read the silences"):
            rows = self._conn().execute("SELECT json FROM silences ORDER BY id").fetchall()
        found: list[dict[str, Any]] = []
        for (text,) in rows:
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise StoreError(f"{self.path}: a saved silence is not JSON: {exc}") from None
            if not isinstance(data, dict):
                raise StoreError(f"{self.path}: a saved silence is not an object")
            found.append(data)
        return found

    # -- the rest ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database and let another Store open it; safe to call twice. The
        journal's waiting records and head are written first, if the disk takes them."""
        if self._db is not None:
            with contextlib.suppress(StoreError):
                self.write_journal()
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        self._release_lock()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, depth={self._depth})"

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"{self.path}: the store is closed")
        return self._db

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot {what}: {exc}") from None

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        with self._errors(what):
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise


class _Checkpointer(threading.Thread):
    """Checkpoints the WAL every `interval` seconds, or when asked (`request`), on a
    connection of its own (PASSIVE: it never waits for, nor blocks, the Store's writes).
    `done` is set after each one and `complete` tells whether it copied the whole WAL
    (the next write then starts the WAL over, unless a checkpoint is running just
    then: it appends, and a later write starts over); a failure is kept in `error` and
    tried again at the next turn."""

    def __init__(self, path: Path, interval: float) -> None:
        super().__init__(name=f"checkpoint {path.name}", daemon=True)
        self._path = path
        self._interval = interval
        self._wake = threading.Event()
        self._stopping = False
        self.done = threading.Event()
        self.complete = False
        self.error: str | None = None

    def run(self) -> None:
        db: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait(self._interval)
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    if db is None:
                        db = sqlite3.connect(self._path, isolation_level=None)
                    busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.complete = not busy and frames == copied
                    self.error = None
                except sqlite3.Error as exc:
                    self.error = str(exc)
                self.done.set()
        finally:
            if db is not None:
                db.close()

    def request(self) -> None:
        """Checkpoint now; `done` is set when it is over."""
        self.done.clear()
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self.join()


def _dump_alerts(alerts: list[dict[str, Any]]) -> str:
    return json.dumps(alerts, separators=(",", ":"), ensure_ascii=False)
