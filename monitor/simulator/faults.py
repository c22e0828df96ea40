"""Faults: ways a venue misbehaves, injected from the scenario or the control API."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from monitor.durations import parse_duration
from monitor.simulator.templates import FieldPath, split_path

VENUES: Final = ("clearstreet", "polymarket")
ENDPOINTS: Final = ("balances", "accounts", "token", "whoami", "health", "any")
KINDS: Final = (
    "status",
    "delay",
    "malformed",
    "truncated",
    "wrong_type",
    "drop",
    "oversized",
    "remove_fields",
)
DEFAULT_OVERSIZED: Final = 5 * 1024 * 1024

_COMMON: Final = {"kind", "venue", "account", "endpoint", "count", "for"}
_BY_KIND: Final[dict[str, set[str]]] = {
    "status": {"status", "message", "retry_after", "retry_after_ms", "body", "content_type"},
    "delay": {"seconds"},
    "malformed": {"status", "body", "content_type"},
    "truncated": set(),
    "wrong_type": {"fields", "path", "value"},
    "drop": set(),
    "oversized": {"bytes"},
    "remove_fields": {"fields"},
}


class FaultSpecError(ValueError):
    """A fault description that does not make sense; `key` names the culprit."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(slots=True)
class Fault:
    kind: str
    venue: str = "*"
    account: str | None = None
    endpoint: str = "any"
    count: int | None = None
    duration: float | None = None  # `for`
    status: int = 503
    message: str | None = None
    retry_after: str | None = None
    retry_after_ms: str | None = None
    body: str | None = None
    content_type: str = "application/json"
    seconds: float = 0.0
    fields: dict[FieldPath, Any] = field(default_factory=dict)  # wrong_type values
    remove: list[FieldPath] = field(default_factory=list)  # remove_fields paths
    size: int = DEFAULT_OVERSIZED
    spec: dict[str, Any] = field(default_factory=dict)  # as given, for listings
    # runtime, in simulator seconds
    id: str = ""
    start: float = 0.0
    until: float | None = None
    remaining: int | None = None

    def describe(self) -> dict[str, Any]:
        out = {"id": self.id, **self.spec, "start": self.start, "until": self.until}
        out["remaining"] = self.remaining
        return out


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise FaultSpecError(key, f"{key} must be a duration such as 2s or a number of seconds")
    if isinstance(value, int | float):
        if value < 0:
            raise FaultSpecError(key, f"{key} must not be negative")
        return float(value)
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise FaultSpecError(key, str(exc)) from None


def _int(key: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultSpecError(key, f"{key} must be an integer")
    if value < low or (high is not None and value > high):
        upper = f" and at most {high}" if high is not None else ""
        raise FaultSpecError(key, f"{key} must be at least {low}{upper}")
    return value


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise FaultSpecError(key, f"{key} must be a non-empty string")
    return value


def _path(key: str, value: Any) -> FieldPath:
    try:
        return split_path(_str(key, value))
    except ValueError as exc:
        raise FaultSpecError(key, str(exc)) from None


def parse_fault(spec: Mapping[str, Any], *, extra_keys: frozenset[str] = frozenset()) -> Fault:
    """A Fault from its JSON/YAML description; FaultSpecError names the bad key."""
    if not isinstance(spec, Mapping):
        raise FaultSpecError(None, "a fault must be a mapping")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise FaultSpecError("kind", f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    allowed = _COMMON | _BY_KIND[kind] | extra_keys
    for key in spec:
        if key not in allowed:
            raise FaultSpecError(
                key,
                f"unknown key {key!r} for a {kind} fault; allowed: {', '.join(sorted(allowed))}",
            )
    fault = Fault(kind=kind, spec={k: v for k, v in spec.items() if k not in extra_keys})
    venue = spec.get("venue", "*")
    if venue not in (*VENUES, "*"):
        raise FaultSpecError("venue", f"venue must be clearstreet, polymarket or *; got {venue!r}")
    fault.venue = venue
    if spec.get("account") is not None:
        account = spec["account"]
        if isinstance(account, bool) or not isinstance(account, str | int):
            raise FaultSpecError("account", "account must be an account id")
        fault.account = str(account)
    endpoint = spec.get("endpoint", "any")
    if endpoint not in ENDPOINTS:
        raise FaultSpecError("endpoint", f"endpoint must be one of {', '.join(ENDPOINTS)}")
    fault.endpoint = endpoint
    if spec.get("count") is not None:
        fault.count = _int("count", spec["count"], 1)
    if spec.get("for") is not None:
        fault.duration = _seconds("for", spec["for"])
    if "status" in spec:
        fault.status = _int("status", spec["status"], 100, 599)
    elif kind == "malformed":
        fault.status = 200
    if "message" in spec:
        fault.message = _str("message", spec["message"])
    for key in ("retry_after", "retry_after_ms"):
        if key in spec:
            value = spec[key]
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise FaultSpecError(key, f"{key} must be a number")
            text = str(value)
            setattr(fault, key, text[:-2] if text.endswith(".0") else text)
    if "body" in spec:
        fault.body = spec["body"] if isinstance(spec["body"], str) else None
        if fault.body is None:
            raise FaultSpecError("body", "body must be a string (sent as is)")
    if "content_type" in spec:
        fault.content_type = _str("content_type", spec["content_type"])
    if kind == "delay":
        if "seconds" not in spec:
            raise FaultSpecError("seconds", "a delay fault needs seconds")
        fault.seconds = _seconds("seconds", spec["seconds"])
    if kind == "oversized" and "bytes" in spec:
        fault.size = _int("bytes", spec["bytes"], 1)
    if kind == "wrong_type":
        fields = spec.get("fields")
        if "path" in spec:
            if "value" not in spec:
                raise FaultSpecError("value", "a wrong_type fault with path needs value")
            fault.fields[_path("path", spec["path"])] = spec["value"]
        if fields is not None:
            if not isinstance(fields, Mapping) or not fields:
                raise FaultSpecError("fields", "fields must map field paths to JSON values")
            for name, value in fields.items():
                fault.fields[_path("fields", name)] = value
        if not fault.fields:
            raise FaultSpecError("fields", "a wrong_type fault needs fields (or path and value)")
    if kind == "remove_fields":
        fields = spec.get("fields")
        if isinstance(fields, str):
            fields = [fields]
        if not isinstance(fields, list) or not fields:
            raise FaultSpecError("fields", "a remove_fields fault needs fields: [paths]")
        fault.remove = [_path("fields", name) for name in fields]
    return fault


class FaultSet:
    """Active faults, indexed by venue so a request looks only at its own venue's."""

    def __init__(self) -> None:
        self._by_venue: dict[str, list[Fault]] = {"clearstreet": [], "polymarket": [], "*": []}
        self._ids = itertools.count(1)
        self.active = False  # any fault at all: the fast path skips matching otherwise

    def add(self, fault: Fault, now: float, start: float | None = None) -> str:
        fault.id = fault.id or f"f{next(self._ids)}"
        fault.start = now if start is None else start
        fault.until = None if fault.duration is None else fault.start + fault.duration
        fault.remaining = fault.count
        self._by_venue[fault.venue].append(fault)
        self.active = True
        return fault.id

    def remove(self, fault_id: str) -> bool:
        for faults in self._by_venue.values():
            for fault in faults:
                if fault.id == fault_id:
                    faults.remove(fault)
                    self._refresh()
                    return True
        return False

    def clear(self) -> None:
        for faults in self._by_venue.values():
            faults.clear()
        self.active = False

    def all(self) -> list[Fault]:
        return [f for faults in self._by_venue.values() for f in faults]

    def _refresh(self) -> None:
        self.active = any(self._by_venue.values())

    def match(
        self, venue: str, endpoint: str, account: str | None, now: float
    ) -> tuple[float, Fault | None]:
        """(total delay, the first other fault) that apply to one request, consuming them.

        Every matching delay fault adds its delay; the first matching fault of any other
        kind decides how the answer is spoiled. A fault with `count` is used up after it
        has applied that many times; one with `for` expires after that long.
        """
        delay = 0.0
        hit: Fault | None = None
        expired = False
        for faults in (self._by_venue[venue], self._by_venue["*"]):
            for fault in faults:
                if fault.until is not None and now >= fault.until:
                    expired = True
                    continue
                if fault.remaining is not None and fault.remaining <= 0:
                    expired = True
                    continue
                if now < fault.start:
                    continue
                if fault.endpoint != "any" and fault.endpoint != endpoint:
                    continue
                if fault.account is not None and fault.account != account:
                    continue
                if fault.kind == "delay":
                    delay += fault.seconds
                elif hit is None:
                    hit = fault
                else:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
        if expired:
            for key, faults in self._by_venue.items():
                self._by_venue[key] = [
                    f
                    for f in faults
                    if (f.until is None or now < f.until)
                    and (f.remaining is None or f.remaining > 0)
                ]
            self._refresh()
        return delay, hit
