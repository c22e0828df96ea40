"""Polymarket Exchange (institutional) Positions API: balances per account and currency."""

from __future__ import annotations

import time
from typing import Any, ClassVar
from urllib.parse import quote

from monitor.config import AccountConfig, VenueConfig
from monitor.errors import (
    SnapshotParseError,
    VenueError,
)
from monitor.snapshot import FieldSchema, FieldType, Snapshot, flatten
from monitor.venues.base import VenueAdapter, register
from monitor.venues.http import HttpClient, HttpResponse
from monitor.venues.ids import discovered_ids
from monitor.venues.pmx_auth import AccessToken, TokenProvider
from monitor.venues.retry import with_retries
from monitor.venues.wire import clip, decode_json, error_for_status, try_decode_json

DEC, INT, STR = FieldType.DECIMAL, FieldType.INTEGER, FieldType.STRING

SCHEMA = FieldSchema(
    types={
        **{
            name: DEC
            for name in (
                "balance capital_requirement excess_capital buying_power "
                "total_security_notional_value total_security_available_value open_orders "
                "alternate_capital_requirement unsettled_funds margin_requirement"
            ).split()
        },
        "alternate_capital_requirement_currency": STR,
        "update_time": STR,
        "securities": FieldType.OBJECT,
        "securities.*": FieldType.OBJECT,
        "securities.*.balance": DEC,
        "securities.*.market_value": DEC,
        "securities.*.haircut": INT,
        "securities.*.notional_value": DEC,
        "securities.*.available_value": DEC,
    },
    maps=frozenset({"securities"}),
)

# gRPC codes that are worth another try: RESOURCE_EXHAUSTED, UNAVAILABLE, and the
# HTTP statuses VENUES.md lists as retryable.
_RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@register
class PolymarketAdapter(VenueAdapter):
    kind: ClassVar[str] = "polymarket"
    schema: ClassVar[FieldSchema] = SCHEMA
    normalized_from: ClassVar[dict[str, str]] = {
        "buying_power": "buyingPower",
        "margin_excess": "excessCapital",
        "margin_requirement": "marginRequirement",
    }

    def __init__(self, config: VenueConfig, http: HttpClient) -> None:
        super().__init__(config, http)
        if config.auth is None:
            raise ValueError(f"venue {config.name}: polymarket needs an auth section")
        self.auth = TokenProvider(
            config.auth,
            http,
            audience=config.auth.audience or config.base_url,
            venue=config.name,
            limits=self.limits,
        )

    async def fetch(self, account: AccountConfig, deadline: float) -> Snapshot:
        body = {"name": account.id, "currency": self.config.currency}
        with self.errors_about(account.id):
            response = await self._call("POST", "/v1/positions/balance", body, deadline)
            data = decode_json(response)
            try:
                if not isinstance(data, dict):
                    raise SnapshotParseError("balance answer is not a JSON object")
                fields = self.parse_balance(data)
            except SnapshotParseError as exc:
                exc.status, exc.request_id = response.status, response.headers.get("x-request-id")
                raise
        return Snapshot(
            venue=self.config.name,
            venue_kind=self.kind,
            account=account.id,
            fields=fields,
            taken_at=time.time(),
            currency=self.config.currency,
            request_id=response.headers.get("x-request-id"),
            labels=account.labels,
            params=account.params,
        )

    @staticmethod
    def parse_balance(data: dict[str, Any]) -> dict[str, Any]:
        fields = flatten(data, SCHEMA)
        if "buying_power" not in fields:
            raise SnapshotParseError("balance answer lacks buyingPower")
        excess = fields.get("excess_capital")
        if excess is not None:
            fields["margin_excess"] = excess
        return fields

    async def list_accounts(self, deadline: float) -> list[str]:
        user = self.config.auth.participant_id if self.config.auth else ""
        path = f"/v1/accounts?user={quote(user, safe='')}"
        with self.errors_about(None):
            response = await self._call("GET", path, None, deadline)
            body = decode_json(response)
        names = body.get("accounts") if isinstance(body, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SnapshotParseError(
                "account listing has no `accounts` list of names", venue=self.config.name
            )
        return discovered_ids(names, self.config.name)

    async def _call(self, method: str, path: str, body: Any, deadline: float) -> HttpResponse:
        url = self.config.base_url + path
        participant = self.config.auth.participant_id if self.config.auth else ""

        async def with_token(token: AccessToken) -> HttpResponse:
            async with self.limits.slot(deadline):
                return await self.http.request(
                    method,
                    url,
                    json_body=body,
                    deadline=self.attempt_deadline(deadline),
                    headers={
                        "authorization": f"Bearer {token.value}",
                        "x-participant-id": participant,
                    },
                    max_bytes=self.config.max_response_bytes,
                )

        async def send() -> HttpResponse:
            token = await self.auth.token(deadline)
            response = await with_token(token)
            if response.status == 401:
                # The token was revoked or expired early: mint a new one, retry once.
                self.auth.invalidate(token)
                response = await with_token(await self.auth.token(deadline))
            return response

        async def attempt() -> HttpResponse:
            response = await send()
            if response.status != 200:
                raise self._error(response)
            return response

        return await with_retries(attempt, deadline=deadline, notice=self.limits.notice)

    def credential_digest(self) -> str | None:
        return self.auth.config.private_key.digest()

    def _error(self, response: HttpResponse) -> VenueError:
        body = try_decode_json(response)
        message = clip(body.get("message", "")) if isinstance(body, dict) else ""
        what = f"Polymarket answered {response.status}" + (f": {message}" if message else "")
        return error_for_status(
            response,
            what,
            retryable=_RETRYABLE_STATUSES.__contains__,
            request_id=response.headers.get("x-request-id"),
        )
