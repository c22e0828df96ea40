"""Secrets that never show themselves, and key files that are re-read when they change."""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from pathlib import Path

#: How long a file secret's value is used before the file is looked at again.
RECHECK_SECONDS = 1.0
#: The digest of a secret that cannot be read (no value hashes to it).
UNREADABLE_DIGEST = "unreadable"


_HEADER_SAFE = re.compile("[\x21-\x7e]+")


def header_value_problem(value: str) -> str | None:
    """Why `value` (an API key or token sent as `Bearer <value>`) cannot be a header
    value, or None: it must be visible ASCII. Says which kind of character, never the
    value: a line break would end the header (and begin another)."""
    if _HEADER_SAFE.fullmatch(value):
        return None
    if not value:
        return "is empty"
    if "\r" in value or "\n" in value:
        return "holds a line break"
    if any(c < " " or "\x7f" <= c <= "\x9f" for c in value):
        return "holds a control character"
    if " " in value:
        return "holds a space"
    return "holds a character that is not ASCII"


def digest_of(value: str) -> str:
    """A digest of a secret's value: tells whether it changed without keeping a copy."""
    return hashlib.sha256(value.encode()).hexdigest()


class Secret:
    """A credential: a literal (from `${VAR}`) or a file re-read when it changes on disk.

    A Kubernetes Secret mounted as a file is rotated by swapping a symlink, so the file is
    checked by its inode, size and modification time: at most once per `RECHECK_SECONDS`
    (a `stat` per request was 2% of a poll's CPU), and at the next `get()` after
    `recheck()`, which a caller whose credentials were refused calls.
    `repr` and `str` never show the value.
    """

    __slots__ = ("_cached", "_check_after", "_lock", "_path", "_stamp", "_value", "name")

    def __init__(self, name: str, *, value: str | None = None, path: Path | None = None) -> None:
        if (value is None) == (path is None):
            raise ValueError("a Secret needs exactly one of value or path")
        self.name = name
        self._value = value
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._cached: str | None = None
        self._check_after = 0.0  # time.monotonic() from which the file is looked at again
        self._lock = threading.Lock()

    @classmethod
    def literal(cls, name: str, value: str) -> Secret:
        return cls(name, value=value)

    @classmethod
    def file(cls, name: str, path: Path) -> Secret:
        return cls(name, path=path)

    @property
    def path(self) -> Path | None:
        return self._path

    def get(self, *, fresh: bool = False) -> str:
        """The current value; a file secret is re-read when the file changed.

        `fresh`: look at the file now, for rare uses where a `stat` costs nothing.
        """
        if self._value is not None:
            return self._value
        now = time.monotonic()
        if now < self._check_after and self._cached is not None and not fresh:
            return self._cached
        assert self._path is not None
        try:
            st = os.stat(self._path)
        except OSError as exc:
            raise SecretUnavailable(
                f"{self.name}: cannot read {self._path}: {exc.strerror}"
            ) from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if stamp != self._stamp or self._cached is None:
                try:
                    text = self._path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    reason = getattr(exc, "strerror", None) or str(type(exc).__name__)
                    raise SecretUnavailable(
                        f"{self.name}: cannot read {self._path}: {reason}"
                    ) from None
                self._cached = text.strip()
                self._stamp = stamp
            self._check_after = now + RECHECK_SECONDS
            return self._cached

    def digest(self) -> str | None:
        """`digest_of` the value in the file now (`UNREADABLE_DIGEST` when it cannot be
        read); a `stat`, and a read only when the file changed. None for a secret not
        read from a file: it cannot change while riskmon runs."""
        if self.path is None:
            return None
        try:
            return digest_of(self.get(fresh=True))
        except SecretUnavailable:
            return UNREADABLE_DIGEST

    def recheck(self) -> None:
        """Look at the file again on the next `get()` (its value was just refused)."""
        self._check_after = 0.0

    def __repr__(self) -> str:
        where = f"file {self._path}" if self._path is not None else "literal"
        return f"Secret({self.name}, {where}, value hidden)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return (self.name, self._value, self._path) == (other.name, other._value, other._path)

    def __hash__(self) -> int:
        return hash((self.name, self._path))


class SecretUnavailable(Exception):
    """A secret file that cannot be read; the message names the file, never the value."""
