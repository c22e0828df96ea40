"""Snapshots as JSON lines: what the daemon records and `riskmon replay` reads back."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from monitor.snapshot import FieldSchema, Snapshot, flatten
from monitor.yamlsource import Location, Problem, SourceError

_ANY = FieldSchema(types={})


def snapshot_record(snapshot: Snapshot) -> dict[str, Any]:
    """A JSON-safe dict: the snapshot's top-level fields (nested ones inside their
    parents), decimals as exact strings."""
    return {
        "taken_at": snapshot.taken_at,
        "venue": snapshot.venue,
        "venue_kind": snapshot.venue_kind,
        "account": snapshot.account,
        "currency": snapshot.currency,
        "labels": dict(snapshot.labels),
        "params": {k: _jsonable(v) for k, v in snapshot.params.items()},
        "fields": {k: _jsonable(v) for k, v in snapshot.fields.items() if "." not in k},
    }


def write_record(snapshot: Snapshot, out: TextIO) -> None:
    out.write(json.dumps(snapshot_record(snapshot), separators=(",", ":")) + "\n")


def snapshot_from_record(record: Mapping[str, Any]) -> Snapshot:
    """The Snapshot a record describes; ValueError naming what is wrong."""
    for key in ("taken_at", "venue", "venue_kind", "account", "fields"):
        if key not in record:
            raise ValueError(f"record lacks {key!r}")
    fields = record["fields"]
    if not isinstance(fields, dict):
        raise ValueError("record's fields must be an object")
    params = record.get("params") or {}
    return Snapshot(
        venue=str(record["venue"]),
        venue_kind=str(record["venue_kind"]),
        account=str(record["account"]),
        fields=flatten(fields, _ANY),
        taken_at=float(record["taken_at"]),
        currency=record.get("currency"),
        labels={str(k): str(v) for k, v in (record.get("labels") or {}).items()},
        params={str(k): _param(v) for k, v in params.items()},
    )


def read_records(path: Path) -> Iterator[Snapshot]:
    """Every snapshot of a JSONL file, in order; a bad line is a SourceError at its line,
    a file that cannot be read one at its start."""
    try:
        lines = path.open("rb")  # decoded line by line: a bad byte is placed at its line
    except OSError as exc:
        where = Location(str(path), 1, 1)
        raise SourceError([Problem(where, f"cannot read: {exc.strerror or exc}")]) from None
    with lines:
        for number, raw in enumerate(lines, start=1):
            where = Location(str(path), number, 1)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SourceError([Problem(where, f"not UTF-8 text: {exc.reason}")]) from None
            if not line.strip():
                continue
            try:
                yield snapshot_from_record(json.loads(line))
            except (ValueError, TypeError, AttributeError) as exc:
                raise SourceError([Problem(where, f"bad snapshot record: {exc}")]) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _param(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return Decimal(value)
        except ArithmeticError:
            return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(str(value))
    return value
