"""`riskmon snapshot`: poll every configured account once and print what came back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TextIO

from monitor.config import AccountConfig, Config, VenueConfig
from monitor.errors import VenueError
from monitor.shard import Shard
from monitor.snapshot import NORMALIZED_FIELDS, Snapshot
from monitor.venues import registry
from monitor.venues.base import VenueAdapter, create_adapter
from monitor.venues.http import http_client_for


@dataclass(slots=True)
class PollResult:
    venue: VenueConfig
    account: str
    snapshot: Snapshot | None
    error: VenueError | None
    duration: float


async def poll_all(
    config: Config,
    *,
    venue: str | None = None,
    account: str | None = None,
    shard: Shard | None = None,
) -> list[PollResult]:
    """One poll of every selected account (discovered ones included), concurrently."""
    venues = [v for v in config.venues if venue in (None, v.name)]
    clients = [http_client_for(v) for v in venues]
    try:
        adapters = [create_adapter(v, http) for v, http in zip(venues, clients, strict=True)]
        batches = await asyncio.gather(*(_poll_venue(a, account, shard) for a in adapters))
    finally:
        for http in clients:
            await http.aclose()
    return [result for batch in batches for result in batch]


async def _poll_venue(
    adapter: VenueAdapter, only: str | None, shard: Shard | None
) -> list[PollResult]:
    config = adapter.config
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(config.timeout, config.poll_interval)
    accounts = {a.id: a for a in config.accounts}
    results: list[PollResult] = []
    if config.discovery is not None:
        try:
            for found in await adapter.list_accounts(deadline):
                accounts.setdefault(
                    found, AccountConfig(found, config.discovery.labels, config.discovery.params)
                )
        except VenueError as error:
            results.append(PollResult(config, "(discovery)", None, error, 0.0))
    selected = [
        a
        for a in accounts.values()
        if only in (None, a.id) and (shard is None or shard.owns(config.name, a.id))
    ]

    async def one(account: AccountConfig) -> PollResult:
        started = loop.time()
        try:
            snapshot = await adapter.fetch(account, deadline)
        except VenueError as error:
            return PollResult(config, account.id, None, error, loop.time() - started)
        return PollResult(config, account.id, snapshot, None, loop.time() - started)

    results.extend(await asyncio.gather(*(one(a) for a in selected)))
    await adapter.aclose()
    return results


def leaf_fields(snapshot: Snapshot) -> dict[str, Any]:
    """The scalar fields, normalized ones first, then every venue field by path."""
    scalars = {k: v for k, v in snapshot.fields.items() if not isinstance(v, dict | list)}
    ordered = {k: scalars[k] for k in NORMALIZED_FIELDS if k in scalars}
    ordered.update(sorted((k, v) for k, v in scalars.items() if k not in ordered))
    return ordered


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_table(results: Sequence[PollResult], out: TextIO) -> None:
    for result in results:
        head = f"{result.venue.name} / {result.account}"
        if result.snapshot is None:
            error = result.error
            kind = type(error).__name__ if error else "error"
            out.write(f"{head}  FAILED  {kind}: {error}\n\n")
            continue
        snap = result.snapshot
        meta = f"({snap.venue_kind}, {snap.currency or '-'}, {result.duration * 1000:.0f} ms"
        meta += f", request_id {snap.request_id})" if snap.request_id else ")"
        out.write(f"{head}  ok  {meta}\n")
        fields = leaf_fields(snap)
        # Normalized fields this venue kind maps but did not send are shown as missing.
        mapped = {n.name for n in registry.get(snap.venue_kind).normalized}
        rows = [
            (f"* {name}", _text(fields[name]) if name in fields else "(missing)")
            for name in NORMALIZED_FIELDS
            if name in fields or name in mapped
        ]
        rows += [(f"  {k}", _text(v)) for k, v in fields.items() if k not in NORMALIZED_FIELDS]
        width = max((len(name) for name, _ in rows), default=0)
        for name, text in rows:
            out.write(f" {name.ljust(width)}  {text}\n")
        out.write("\n")
    failed = sum(1 for r in results if r.snapshot is None)
    out.write(
        f"{len(results) - failed} account(s) polled, {failed} failed  (* = normalized field)\n"
    )


def render_json(results: Sequence[PollResult], out: TextIO) -> None:
    def encode(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        raise TypeError(type(value).__name__)

    items = []
    for result in results:
        snap = result.snapshot
        items.append(
            {
                "venue": result.venue.name,
                "venue_kind": result.venue.kind,
                "account": result.account,
                "ok": snap is not None,
                "error": None
                if result.error is None
                else {
                    "type": type(result.error).__name__,
                    "message": str(result.error),
                    "status": result.error.status,
                    "request_id": result.error.request_id,
                },
                "duration_ms": round(result.duration * 1000, 3),
                "taken_at": snap.taken_at if snap else None,
                "currency": snap.currency if snap else None,
                "request_id": snap.request_id if snap else None,
                "fields": leaf_fields(snap) if snap else None,
            }
        )
    json.dump(items, out, default=encode, indent=2)
    out.write("\n")
