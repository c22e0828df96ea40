"""Polymarket Exchange (institutional) Positions API: balances per account and currency."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from monitor.config import AccountConfig, PolymarketAuthConfig, Secret, VenueConfig
from monitor.config.checking import Checker, Section
from monitor.errors import (
    SnapshotParseError,
    VenueError,
)
from monitor.snapshot import FieldSchema, FieldType, Snapshot, flatten
from monitor.venues import registry
from monitor.venues.base import VenueAdapter, settings_of
from monitor.venues.http import HttpClient, HttpResponse
from monitor.venues.ids import discovered_ids
from monitor.venues.retry import with_retries
from monitor.venues.wire import clip, decode_json, error_for_status, try_decode_json

if TYPE_CHECKING:
    from monitor.venues.pmx_auth import AccessToken

DEC, INT, STR = FieldType.DECIMAL, FieldType.INTEGER, FieldType.STRING

SCHEMA = FieldSchema(
    types={
        **{
            name: DEC
            for name in (
                "balance capital_requirement excess_capital buying_power "
                "total_security_notional_value total_security_available_value open_orders "
                "alternate_capital_requirement unsettled_funds margin_requirement"
                " margin_excess"  # normalized, copied from excess_capital
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


NORMALIZED = (
    registry.NormalizedField("buying_power", "buying_power", wire="buyingPower"),
    registry.NormalizedField("margin_excess", "excess_capital", wire="excessCapital"),
    registry.NormalizedField("margin_requirement", "margin_requirement", wire="marginRequirement"),
)

GAUGES = (
    registry.Gauge("balance", "riskmon_account_balance", "Cash balance (Polymarket balance)."),
    registry.Gauge(
        "capital_requirement",
        "riskmon_account_capital_requirement",
        "Capital requirement (Polymarket capitalRequirement).",
    ),
    registry.Gauge(
        "open_orders",
        "riskmon_account_open_orders_value",
        "Value held by open orders (Polymarket openOrders).",
    ),
    registry.Gauge(
        "unsettled_funds",
        "riskmon_account_unsettled_funds",
        "Unsettled funds (Polymarket unsettledFunds).",
    ),
    registry.Gauge(
        "total_security_notional_value",
        "riskmon_account_security_notional_value",
        "Notional value of all positions (Polymarket totalSecurityNotionalValue).",
    ),
    registry.Gauge(
        "total_security_available_value",
        "riskmon_account_security_available_value",
        "Value of all positions after haircuts (Polymarket totalSecurityAvailableValue).",
    ),
)

_ACCOUNT = re.compile(r"firms/[^/\s]+/accounts/[^/\s]+")
_CURRENCY = re.compile(r"[A-Z]{3}")
_PARTICIPANT = re.compile(r"firms/[^/\s]+/users/[^/\s]+")
_AUTH_KEYS_ALL = (
    "token_url",
    "client_id",
    "private_key",
    "private_key_file",
    "participant_id",
    "audience",
)


@dataclass(frozen=True, slots=True)
class PolymarketSettings:
    """The settings of a polymarket venue besides the common ones."""

    auth: PolymarketAuthConfig
    currency: str = "USD"


def parse_settings(checker: Checker, s: Section, venue: str) -> PolymarketSettings | None:
    currency = checker.field(s, "currency", "USD", lambda p, v: _currency(checker, p, v))
    auth = _auth(checker, s, venue) if checker.require(s, "auth") else None
    if auth is None:
        return None
    return PolymarketSettings(auth=auth, currency=currency)


def _currency(checker: Checker, path: Any, value: Any) -> str | None:
    text = checker.string(path, value)
    if text is not None and not _CURRENCY.fullmatch(text):
        checker.error(
            path,
            f"currency: expected a 3-letter upper-case code such as USD, got "
            f"{checker.show(path, text)}",
        )
        return None
    return text


def _auth(checker: Checker, venue: Section, name: str) -> PolymarketAuthConfig | None:
    path, value = venue.at("auth"), venue.data["auth"]
    if path in checker.failed:
        return None
    if not isinstance(value, dict):
        checker.error(
            path,
            "auth: expected a mapping with token_url, client_id, private_key_file and "
            f"participant_id, got {checker.show(path, value)}",
        )
        return None
    s = checker.section(path, value, f"auth of {venue.where}", _AUTH_KEYS_ALL)
    before = len(checker.problems)
    token_url = checker.field(s, "token_url", "", checker.exact_url, required=True)
    client_id = checker.field(s, "client_id", "", checker.string, required=True)
    participant = checker.field(
        s, "participant_id", "", lambda p, v: _participant_id(checker, p, v), required=True
    )
    audience = checker.field(s, "audience", None, checker.exact_url)
    key: Secret | None = None
    if s.has("private_key") and s.has("private_key_file"):
        checker.error(
            s.at("private_key_file"), "give private_key or private_key_file, not both", key=True
        )
    elif s.has("private_key"):
        text = checker.field(s, "private_key", "", checker.secret_text)
        if text and not _looks_like_pem(text):
            checker.error(
                s.at("private_key"),
                "private_key is not a PEM private key (-----BEGIN ... PRIVATE KEY-----)",
            )
        elif text:
            key = Secret.literal(f"{name} private_key", text)
    elif s.has("private_key_file"):
        key = checker.field(
            s,
            "private_key_file",
            None,
            lambda p, v: checker.secret_file(p, v, f"{name} private_key_file"),
        )
        if key is not None and not _looks_like_pem(key.get()):
            checker.error(
                s.at("private_key_file"),
                f"private_key_file {key.path} is not a PEM private key "
                "(-----BEGIN ... PRIVATE KEY-----)",
            )
    else:
        checker.error(s.path, f"missing private_key_file (or private_key) in {s.where}")
    if key is None or len(checker.problems) > before:
        return None
    return PolymarketAuthConfig(
        token_url=token_url,
        client_id=client_id,
        private_key=key,
        participant_id=participant,
        audience=audience,
    )


def _participant_id(checker: Checker, path: Any, value: Any) -> str | None:
    text = checker.string(path, value)
    if text is not None and not _PARTICIPANT.fullmatch(text):
        checker.error(
            path,
            "participant_id must look like firms/<FIRM>/users/<USER>, got "
            f"{checker.show(path, text)}",
        )
        return None
    return text


def _looks_like_pem(text: str) -> bool:
    return "-----BEGIN" in text and "PRIVATE KEY-----" in text


def _account_id_problem(account_id: str) -> str | None:
    if not _ACCOUNT.fullmatch(account_id):
        return "Polymarket account ids look like firms/<FIRM>/accounts/<NAME>"
    return None


class PolymarketAdapter(VenueAdapter):
    kind: ClassVar[str] = "polymarket"
    schema: ClassVar[FieldSchema] = SCHEMA

    def __init__(self, config: VenueConfig, http: HttpClient) -> None:
        super().__init__(config, http)
        # JWT signing and cryptography: imported only when a polymarket venue is polled
        from monitor.venues.pmx_auth import TokenProvider

        self.settings = settings_of(config, PolymarketSettings)
        auth = self.settings.auth
        self.auth = TokenProvider(
            auth,
            http,
            audience=auth.audience or config.base_url,
            venue=config.name,
            limits=self.limits,
        )

    async def fetch(self, account: AccountConfig, deadline: float) -> Snapshot:
        body = {"name": account.id, "currency": self.settings.currency}
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
            currency=self.settings.currency,
            request_id=response.headers.get("x-request-id"),
            labels=account.labels,
            params=account.params,
            decimal_fields=SCHEMA.decimal_paths,
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
        user = self.settings.auth.participant_id
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
        participant = self.settings.auth.participant_id

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


KIND = registry.register(
    registry.VenueKind(
        name="polymarket",
        settings_keys=("currency", "auth"),
        settings_hint="polymarket venues use auth",
        parse_settings=parse_settings,
        schema=SCHEMA,
        adapter=lambda: PolymarketAdapter,
        normalized=NORMALIZED,
        gauges=GAUGES,
        id_problem=_account_id_problem,
        statuses_hint=(
            "statuses is for clearstreet venues; polymarket discovery has no account status"
        ),
    )
)
