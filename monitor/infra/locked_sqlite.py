"""An SQLite database one process owns: the state folder's rules, its lock, WAL.

`StateLock(path, in_use=...)` makes `path`'s folder (0700) and file (0600, never
through a symlink: `statefiles.py`), then takes an exclusive `flock` on `path.lock`
held until `release()`: a second owner, in this process or another, fails with
`StoreLocked` carrying the owner's own `in_use` text (two daemons draining one outbox,
or two bridges forwarding one queue, would send everything twice). `connect_wal` opens
the file in WAL mode. Every failure is a `StoreError` naming the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import IO

from monitor.infra.statefiles import UnsafeStatePath, prepare_database

__all__ = ["StateLock", "StoreError", "StoreLocked", "connect_wal"]


class StoreError(Exception):
    """The database cannot be opened, read or written; the message names the file."""


class StoreLocked(StoreError):
    """Another owner (another riskmon, most likely) has the database open."""


class StateLock:
    """The exclusive hold on `path` (see the module docstring). `in_use` is the text
    after `{path}` in the StoreLocked message."""

    def __init__(self, path: Path, *, in_use: str) -> None:
        self.path = path
        try:
            prepare_database(path)
        except UnsafeStatePath as exc:
            raise StoreError(str(exc)) from None
        lock_path = path.with_name(path.name + ".lock")
        try:
            lock = open(lock_path, "ab")  # noqa: SIM115 (held open while the owner lives)
        except OSError as exc:
            raise StoreError(f"{lock_path}: cannot open: {exc.strerror}") from None
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise StoreLocked(f"{path}{in_use}") from None
        self._lock: IO[bytes] | None = lock

    def release(self) -> None:
        """Let another owner open the database; safe to call twice."""
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None


def connect_wal(
    path: Path,
    *,
    synchronous: str = "NORMAL",
    check_same_thread: bool = True,
    kind: str = "database",
    init: Callable[[sqlite3.Connection], object] | None = None,
) -> sqlite3.Connection:
    """`path` opened in autocommit mode (transactions are explicit), WAL journal and
    `synchronous` set, then `init(db)` (the schema, checks); StoreError naming the file
    (and what it should be, `kind`) when SQLite refuses. Nothing is left open on error."""
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the database: {exc}") from None
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: cannot switch the database to WAL mode")
        db.execute(f"PRAGMA synchronous={synchronous}")
        if init is not None:
            init(db)
    except sqlite3.Error as exc:
        db.close()
        raise StoreError(f"{path}: not a readable {kind}: {exc}") from None
    except BaseException:
        db.close()
        raise
    return db
