"""Silences: kept in the state database, read and written in Alertmanager's v2 shape.

`SilenceBook` holds the silences of a daemon, saved in `state_dir/riskmon.db` (table
`silences`) at every change, so they survive restarts and reloads. Expiring a silence
sets its `ends_at` to now (as Alertmanager does; a silence that has not started yet
ends where it starts); expired silences are kept `RETENTION` (Alertmanager's
default, 5 days) for `silence query --expired`, then dropped.

The JSON is Alertmanager's API v2 (`postableSilence`, `gettableSilence`): matchers as
`{"name", "value", "isRegex", "isEqual"}`, times as RFC 3339 text.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from monitor import schema
from monitor.engine.suppress import Silence
from monitor.publish.events import rfc3339
from monitor.store import Store, StoreError

__all__ = [
    "RETENTION",
    "SilenceBook",
    "SilenceError",
    "SilenceNotSaved",
    "matcher_json",
    "parse_time",
    "silence_from_json",
    "silence_json",
]

RETENTION: Final = 5 * 24 * 3600.0  # seconds an expired silence is kept
_FRACTION: Final = re.compile(r"\.(\d+)")
_MAX_TEXT: Final = 4096  # characters of a comment, author, matcher value


class SilenceError(ValueError):
    """A silence that cannot be accepted; the message says why."""


class SilenceNotSaved(Exception):
    """The state database refused the change (a full or failing disk): nothing changed."""


def parse_time(text: Any, name: str) -> float:
    """An RFC 3339 time (`2026-12-05T07:00:00.123456789Z`, `...+01:00`) as epoch seconds."""
    if not isinstance(text, str) or not text:
        raise SilenceError(f"{name}: expected an RFC 3339 time, got {text!r}")
    cleaned = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text.strip(), count=1)
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError:
        raise SilenceError(f"{name}: {text!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise SilenceError(f"{name}: {text!r} has no time zone (add Z for UTC)")
    return parsed.timestamp()


def matcher_json(matcher: schema.Matcher) -> dict[str, Any]:
    return {
        "name": matcher.name,
        "value": matcher.value,
        "isRegex": matcher.op in ("=~", "!~"),
        "isEqual": matcher.op in ("=", "=~"),
    }


def _matcher(item: Any, index: int) -> schema.Matcher:
    where = f"matchers[{index}]"
    if not isinstance(item, Mapping):
        raise SilenceError(f"{where}: expected an object with name and value")
    name, value = item.get("name"), item.get("value")
    if not isinstance(name, str) or not schema.LABEL_NAME.fullmatch(name):
        raise SilenceError(f"{where}: name {name!r} is not a label name")
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise SilenceError(f"{where}: value must be text of at most {_MAX_TEXT} characters")
    is_regex, is_equal = item.get("isRegex", False), item.get("isEqual", True)
    if not isinstance(is_regex, bool) or not isinstance(is_equal, bool):
        raise SilenceError(f"{where}: isRegex and isEqual must be true or false")
    op: schema.MatchOp = ("=~" if is_equal else "!~") if is_regex else ("=" if is_equal else "!=")
    pattern = None
    if is_regex:
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise SilenceError(f"{where}: invalid regular expression {value!r}: {exc.msg}") from (
                None
            )
    return schema.Matcher(name, op, value, pattern)


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise SilenceError(f"{name}: required, as non-empty text")
    if len(value) > _MAX_TEXT:
        raise SilenceError(f"{name}: longer than {_MAX_TEXT} characters")
    return value


def silence_from_json(data: Any, *, silence_id: str, updated_at: float) -> Silence:
    """A silence from a `postableSilence` (or a saved `silence_json`)."""
    if not isinstance(data, Mapping):
        raise SilenceError("a silence is a JSON object")
    raw = data.get("matchers")
    if not isinstance(raw, list) or not raw:
        raise SilenceError("matchers: at least one matcher is required")
    matchers = tuple(_matcher(item, i) for i, item in enumerate(raw))
    if all(m.matches({}) for m in matchers):
        raise SilenceError("matchers: at least one matcher must not match the empty text")
    # to the millisecond, as riskmon writes times (and saves the silence)
    starts_at = round(parse_time(data.get("startsAt"), "startsAt"), 3)
    ends_at = round(parse_time(data.get("endsAt"), "endsAt"), 3)
    if ends_at < starts_at:
        raise SilenceError("endsAt: before startsAt")
    return Silence(
        id=silence_id,
        matchers=matchers,
        starts_at=starts_at,
        ends_at=ends_at,
        created_by=_text(data, "createdBy"),
        comment=_text(data, "comment"),
        updated_at=round(updated_at, 3),
    )


def silence_json(silence: Silence, now: float) -> dict[str, Any]:
    """A `gettableSilence`."""
    return {
        "id": silence.id,
        "status": {"state": silence.state(now)},
        "updatedAt": rfc3339(silence.updated_at),
        "matchers": [matcher_json(m) for m in silence.matchers],
        "startsAt": rfc3339(silence.starts_at),
        "endsAt": rfc3339(silence.ends_at),
        "createdBy": silence.created_by,
        "comment": silence.comment,
    }


class SilenceBook:
    """The silences of a daemon, saved in its Store at every change."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._silences: dict[str, Silence] = {}
        for data in store.load_silences():
            try:
                silence = silence_from_json(
                    data,
                    silence_id=str(data.get("id")),
                    updated_at=parse_time(data.get("updatedAt"), "updatedAt"),
                )
            except SilenceError as exc:
                raise SilenceError(f"saved silence {data.get('id')!r}: {exc}") from None
            self._silences[silence.id] = silence
        #: the silences as a tuple, rebuilt at each change (read at every tick)
        self.all: tuple[Silence, ...] = tuple(self._silences.values())

    def get(self, silence_id: str) -> Silence | None:
        return self._silences.get(silence_id)

    def add(self, data: Any, now: float) -> Silence:
        """Create a silence from a `postableSilence`, or update the one its `id` names
        (an expired one cannot be updated: create a new one). SilenceError if invalid."""
        wanted = data.get("id") if isinstance(data, Mapping) else None
        if wanted:
            old = self._silences.get(str(wanted))
            if old is None:
                raise SilenceError(f"silence {wanted!r} not found")
            if old.state(now) == "expired":
                raise SilenceError(f"silence {wanted!r} has expired; create a new one")
            silence_id = old.id
        else:
            silence_id = str(uuid.uuid4())
        silence = silence_from_json(data, silence_id=silence_id, updated_at=now)
        if silence.ends_at <= now:
            raise SilenceError("endsAt: in the past; the silence would never be active")
        self._put(silence)
        return silence

    def expire(self, silence_id: str, now: float) -> Silence:
        """End a silence now; KeyError if there is none, SilenceError if it already ended."""
        old = self._silences[silence_id]
        if old.state(now) == "expired":
            raise SilenceError(f"silence {silence_id!r} already expired")
        starts_at = min(old.starts_at, now)
        silence = Silence(
            id=old.id,
            matchers=old.matchers,
            starts_at=starts_at,
            ends_at=now,
            created_by=old.created_by,
            comment=old.comment,
            updated_at=now,
        )
        self._put(silence)
        return silence

    def prune(self, now: float) -> None:
        """Drop the silences expired more than RETENTION ago (kept, to try again at the
        next call, while the database refuses to delete them)."""
        old = [s.id for s in self._silences.values() if s.ends_at + RETENTION < now]
        if old:
            try:
                self._store.delete_silences(old)
            except StoreError:
                return
            for silence_id in old:
                del self._silences[silence_id]
            self.all = tuple(self._silences.values())

    def _put(self, silence: Silence) -> None:
        try:
            self._store.save_silence(silence.id, silence_json(silence, silence.updated_at))
        except StoreError as exc:
            raise SilenceNotSaved(str(exc)) from None
        self._silences[silence.id] = silence
        self.all = tuple(self._silences.values())
