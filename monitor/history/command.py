"""`riskmon history`: the journal, read from `state_dir/riskmon.db` directly (the daemon
may run or not), as lines or JSON lines; `--verify` checks the chain."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from monitor.history.reader import (
    HistoryError,
    Query,
    Record,
    Verified,
    iter_records,
    open_journal,
    verify,
)

__all__ = ["run_history"]


def run_history(
    database: Path,
    query: Query,
    out: TextIO,
    err: TextIO,
    *,
    as_json: bool = False,
    check: bool = False,
) -> int:
    """Print the records `query` selects (or, with `check`, verify the chain); exit code."""
    try:
        db = open_journal(database)
    except HistoryError as exc:
        print(f"riskmon history: {exc}", file=err)
        return 1
    try:
        if check:
            return _verify(db_path=database, result=verify(db), out=out)
        _print(iter_records(db, query), out, as_json=as_json)
    finally:
        db.close()
    return 0


def _verify(*, db_path: Path, result: Verified, out: TextIO) -> int:
    if result.problem is not None:
        print(f"{db_path}: the journal does not chain: {result.problem}", file=out)
        return 1
    if not result.records:
        print(f"{db_path}: the journal is empty", file=out)
        return 0
    print(
        f"{db_path}: the journal chains: {result.records:,} records (seq {result.first} to "
        f"{result.last}), head digest {result.head}",
        file=out,
    )
    return 0


def _print(records: Iterable[Record], out: TextIO, *, as_json: bool) -> None:
    for record in records:
        if as_json:
            out.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
        else:
            out.write(f"{record.at}  #{record.seq:<6} {describe(record)}\n")


def describe(record: Record) -> str:
    """One line for a record: what happened, to what."""
    payload = json.loads(record.payload)
    if record.kind == "event":
        return _event_line(payload)
    if record.kind == "reload":
        return _reload_line(payload)
    if record.kind == "silence":
        silence = payload.get("silence", {})
        matchers = silence.get("matchers", "")
        comment = silence.get("comment", "")
        who = silence.get("createdBy", silence.get("created_by", ""))
        return (
            f"silence {payload.get('action', '?')} {silence.get('id', '')} "
            f"{json.dumps(matchers, ensure_ascii=False)} by {who}: {comment}"
        )
    if record.kind == "gap":
        return f"gap: {payload.get('lost')} records lost ({payload.get('reason')})"
    return f"{record.kind} {record.payload}"


def _event_line(payload: dict[str, Any]) -> str:
    status = str(payload.get("status"))
    if not payload.get("published", True):
        suppressed = ", ".join(payload.get("suppressed_by", [])) or "?"
        status += f" (suppressed by {suppressed}; not published)"
    summary = payload.get("annotations", {}).get("summary") or payload.get("reason") or ""
    where = f"{payload.get('venue')}/{payload.get('account')}"
    return f"{status:<9} {payload.get('severity')}  {where}  {payload.get('alertname')}  {summary}"


def _reload_line(payload: dict[str, Any]) -> str:
    outcome = "ok" if payload.get("successful") else "FAILED (the running config stayed)"
    parts = [f"reload ({payload.get('trigger')}) {outcome}"]
    config = payload.get("config")
    if config:
        parts.append(f"config {config['path']} sha256 {str(config['sha256'])[:12]}")
    files = payload.get("rule_files", [])
    parts.append(
        f"{len(files)} rule file(s): "
        + ", ".join(f"{Path(f['path']).name} {str(f['sha256'])[:12]}" for f in files)
    )
    for problem in payload.get("problems", []):
        parts.append(problem)
    return "; ".join(parts)
