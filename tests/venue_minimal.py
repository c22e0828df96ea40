"""A third venue kind, registered from the test suite alone (README "Adding a venue").

Imported by a riskmon process through `RISKMON_VENUE_PLUGINS=venue_minimal` (with this
folder on PYTHONPATH), never by the test process itself: registering it there would add
"minimal" to the known kinds of every later test. Its API: GET {base_url}/accounts/{id}
-> {"cash": "...", "currency": "USD"}, with `Authorization: Bearer <api_key>`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import ClassVar

from venue_minimal_fake import MinimalFake

from monitor.config import AccountConfig, Secret
from monitor.config.checking import Checker, Section
from monitor.errors import SnapshotParseError
from monitor.simulator.fakes import register_fake
from monitor.snapshot import FieldSchema, FieldType, Snapshot, flatten
from monitor.venues import registry
from monitor.venues.base import VenueAdapter, settings_of
from monitor.venues.ids import path_segment
from monitor.venues.wire import decode_json, error_for_status

SCHEMA = FieldSchema(
    types={
        "cash": FieldType.DECIMAL,
        "legacy_cash": FieldType.DECIMAL,
        "currency": FieldType.STRING,
    },
    deprecated=frozenset({"legacy_cash"}),
)
_ID = re.compile(r"[a-z0-9-]+")


@dataclass(frozen=True, slots=True)
class MinimalSettings:
    api_key: Secret


def parse_settings(checker: Checker, s: Section, venue: str) -> MinimalSettings | None:
    if not checker.require(s, "api_key"):
        return None
    text = checker.field(s, "api_key", "", checker.header_secret_text)
    return MinimalSettings(Secret.literal(f"{venue} api_key", text)) if text else None


def _id_problem(account_id: str) -> str | None:
    if not _ID.fullmatch(account_id):
        return "minimal account ids are lower-case words such as acct-1"
    return None


class MinimalAdapter(VenueAdapter):
    kind: ClassVar[str] = "minimal"
    schema: ClassVar[FieldSchema] = SCHEMA

    async def fetch(self, account: AccountConfig, deadline: float) -> Snapshot:
        key = settings_of(self.config, MinimalSettings).api_key.get()
        with self.errors_about(account.id):
            response = await self.http.request(
                "GET",
                f"{self.config.base_url}/accounts/{path_segment(account.id)}",
                headers={"authorization": f"Bearer {key}"},
                deadline=self.attempt_deadline(deadline),
                max_bytes=self.config.max_response_bytes,
            )
            if response.status != 200:
                raise error_for_status(
                    response, f"minimal answered {response.status}", retryable=lambda s: s >= 500
                )
            data = decode_json(response)
            if not isinstance(data, dict) or "cash" not in data:
                raise SnapshotParseError("answer lacks cash")
            fields = flatten(data, SCHEMA)
            fields["buying_power"] = fields["cash"]
        return Snapshot(
            venue=self.config.name,
            venue_kind=self.kind,
            account=account.id,
            fields=fields,
            taken_at=time.time(),
            currency=str(data.get("currency") or "USD"),
            labels=account.labels,
            params=account.params,
        )

    async def list_accounts(self, deadline: float) -> list[str]:
        raise SnapshotParseError("the minimal venue has no account listing")


registry.register(
    registry.VenueKind(
        name="minimal",
        settings_keys=("api_key",),
        settings_hint="minimal venues use api_key",
        parse_settings=parse_settings,
        schema=SCHEMA,
        adapter=lambda: MinimalAdapter,
        normalized=(registry.NormalizedField("buying_power", "cash"),),
        gauges=(registry.Gauge("cash", "riskmon_account_cash", "Cash (minimal venue)."),),
        id_problem=_id_problem,
        statuses_hint="statuses is for clearstreet venues; minimal has no discovery",
    )
)
register_fake("minimal", MinimalFake)
