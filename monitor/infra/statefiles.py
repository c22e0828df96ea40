"""A state folder and the SQLite file in it, readable by riskmon's user alone.

The outbox, alert state and the PagerDuty bridge's memory hold alert payloads (account
ids, balances): the folder is created 0700 and the database file 0600 (SQLite gives its
`-wal` and `-shm` files the database file's mode). A database path that is a symlink,
dangling or not, is refused rather than followed: a planted link would send the writes
elsewhere.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

__all__ = ["UnsafeStatePath", "prepare_database"]

FOLDER_MODE: Final = 0o700
FILE_MODE: Final = 0o600


class UnsafeStatePath(Exception):
    """The database path cannot be used safely; the message names it."""


def prepare_database(path: Path) -> None:
    """Create `path`'s folder (0700, with its parents) and `path` itself (0600, empty)
    unless it exists; make an existing file 0600. UnsafeStatePath when `path` is a
    symlink or not a regular file, or the folder or file cannot be made."""
    try:
        path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise UnsafeStatePath(f"{path}: cannot create its folder: {exc.strerror}") from None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafeStatePath(
                f"{path}: is a symbolic link; riskmon does not follow one for its database"
            ) from None
        raise UnsafeStatePath(f"{path}: cannot open: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeStatePath(f"{path}: is not a regular file")
        if stat.S_IMODE(mode) & ~FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except OSError as exc:
        raise UnsafeStatePath(f"{path}: cannot make it private (0600): {exc.strerror}") from None
    finally:
        os.close(fd)
