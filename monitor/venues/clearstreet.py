"""Clear Street Trading API: bearer key, balances, paginated account listing."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

from monitor.config import AccountConfig, Secret, SecretUnavailable, VenueConfig
from monitor.config.checking import Checker, Section
from monitor.config.secret import digest_of, header_value_problem
from monitor.errors import (
    SnapshotParseError,
    VenueAuthError,
    VenueError,
)
from monitor.snapshot import FieldSchema, FieldType, Snapshot, flatten
from monitor.venues import registry
from monitor.venues.base import VenueAdapter, settings_of
from monitor.venues.http import HttpClient, HttpResponse
from monitor.venues.ids import discovered_ids, path_segment
from monitor.venues.retry import with_retries
from monitor.venues.unchanged import ParsedAnswers
from monitor.venues.wire import clip, decode_json, error_for_status, try_decode_json

DEC, INT, BOOL, STR = FieldType.DECIMAL, FieldType.INTEGER, FieldType.BOOLEAN, FieldType.STRING
OBJ, LIST = FieldType.OBJECT, FieldType.LIST

_MONEY = (
    "buying_power daily_realized_pnl daily_total_pnl daily_unrealized_pnl daily_change "
    "daily_pnl unrealized_pnl equity long_market_value short_market_value multiplier "
    "open_order_adjustment settled_cash trade_cash unsettled_credits unsettled_debits "
    "withdrawable_cash"
).split()
_SOD = (
    "buying_power day_trade_buying_power equity long_market_value short_market_value "
    "maintenance_margin_excess maintenance_margin_requirement trade_cash"
).split()
_MARGIN = (
    "initial_margin_excess initial_margin_requirement maintenance_margin_excess "
    "maintenance_margin_requirement day_trade_buying_power_usage"
).split()
_CONTRIBUTOR = (
    "day_trade_buying_power_usage initial_margin_requirement maintenance_margin_requirement "
    "market_value"
).split()

SCHEMA = FieldSchema(
    types={
        "account_id": INT,
        "currency": STR,
        "margin_type": STR,
        **{name: DEC for name in _MONEY},
        "sod": OBJ,
        "sod.asof": STR,
        "margin_details": OBJ,
        "margin_details.usage": OBJ,
        "margin_details.top_contributors": LIST,
        "margin_details.top_contributors.*": OBJ,
        "margin_details.intraday_details": OBJ,
        "margin_details.overnight_details": OBJ,
        **{f"sod.{name}": DEC for name in _SOD},
        "margin_details.day_trade_count": INT,
        "margin_details.pattern_day_trader": BOOL,
        **{f"margin_details.{name}": DEC for name in _MARGIN},
        **{f"margin_details.top_contributors.*.{name}": DEC for name in _CONTRIBUTOR},
        "margin_details.top_contributors.*.underlying_instrument_id": STR,
        "margin_details.usage.total": DEC,
        "margin_details.usage.used": DEC,
        "margin_details.intraday_details.buying_power": DEC,
        "margin_details.intraday_details.multiplier": DEC,
        "margin_details.overnight_details.buying_power": DEC,
        "margin_details.overnight_details.multiplier": DEC,
        # the normalized fields copied from margin_details (`_normalize`): typed, so that
        # the venue's own field of that name, if it ever sent one, is held to the type too
        "margin_excess": DEC,
        "margin_requirement": DEC,
        "day_trade_count": INT,
        "pattern_day_trader": BOOL,
    },
    # Deprecated by Clear Street on 2026-06-04 with the end of the FINRA PDT rule.
    deprecated=frozenset(
        {
            "margin_details.day_trade_count",
            "margin_details.pattern_day_trader",
            "margin_details.day_trade_buying_power_usage",
            "sod.day_trade_buying_power",
            "daily_total_pnl",
        }
    ),
)

_ZERO = Decimal(0)
_PAGE_SIZE = 500
_MAX_PAGES = 1000


NORMALIZED = (
    registry.NormalizedField("buying_power", "buying_power"),
    registry.NormalizedField("equity", "equity"),
    registry.NormalizedField("margin_excess", "margin_details.maintenance_margin_excess"),
    registry.NormalizedField("margin_requirement", "margin_details.maintenance_margin_requirement"),
    registry.NormalizedField(
        "pattern_day_trader", "margin_details.pattern_day_trader", deprecated=True
    ),
    registry.NormalizedField("day_trade_count", "margin_details.day_trade_count", deprecated=True),
    registry.NormalizedField("daily_pnl", "daily_pnl", fallback="daily_total_pnl"),
)

GAUGES = (
    registry.Gauge(
        "margin_details.initial_margin_excess",
        "riskmon_account_initial_margin_excess",
        "Initial (Reg T) margin excess (margin_details.initial_margin_excess).",
    ),
    registry.Gauge(
        "margin_details.initial_margin_requirement",
        "riskmon_account_initial_margin_requirement",
        "Initial (Reg T) margin requirement (margin_details.initial_margin_requirement).",
    ),
    registry.Gauge(
        "margin_details.usage.used",
        "riskmon_account_margin_used",
        "Margin used (margin_details.usage.used).",
    ),
    registry.Gauge(
        "margin_details.usage.total",
        "riskmon_account_margin_total",
        "Margin available in total (margin_details.usage.total).",
    ),
    registry.Gauge(
        "margin_details.intraday_details.buying_power",
        "riskmon_account_intraday_buying_power",
        "Intraday buying power (margin_details.intraday_details.buying_power).",
    ),
    registry.Gauge(
        "margin_details.overnight_details.buying_power",
        "riskmon_account_overnight_buying_power",
        "Overnight buying power (margin_details.overnight_details.buying_power).",
    ),
    registry.Gauge("long_market_value", "riskmon_account_long_market_value", "Long market value."),
    registry.Gauge(
        "short_market_value",
        "riskmon_account_short_market_value",
        "Short market value (as the venue signs it).",
    ),
    registry.Gauge("settled_cash", "riskmon_account_settled_cash", "Settled cash."),
    registry.Gauge("withdrawable_cash", "riskmon_account_withdrawable_cash", "Withdrawable cash."),
    registry.Gauge("trade_cash", "riskmon_account_trade_cash", "Trade-date cash."),
    registry.Gauge(
        "unrealized_pnl", "riskmon_account_unrealized_pnl", "Unrealized profit and loss."
    ),
    registry.Gauge(
        "daily_realized_pnl", "riskmon_account_daily_realized_pnl", "Realized P&L today."
    ),
    registry.Gauge(
        "daily_unrealized_pnl", "riskmon_account_daily_unrealized_pnl", "Unrealized P&L today."
    ),
    registry.Gauge(
        "open_order_adjustment",
        "riskmon_account_open_order_adjustment",
        "Buying power adjustment for open orders.",
    ),
    registry.Gauge(
        "sod.equity", "riskmon_account_sod_equity", "Equity at the start of the day (sod.equity)."
    ),
    registry.Gauge(
        "sod.buying_power",
        "riskmon_account_sod_buying_power",
        "Buying power at the start of the day (sod.buying_power).",
    ),
    registry.Gauge(
        "sod.maintenance_margin_excess",
        "riskmon_account_sod_maintenance_margin_excess",
        "Maintenance margin excess at the start of the day (sod.maintenance_margin_excess).",
    ),
)


@dataclass(frozen=True, slots=True)
class ClearStreetSettings:
    """The settings of a clearstreet venue besides the common ones."""

    api_key: Secret
    top_margin_contributors_limit: int | None = None


def parse_settings(checker: Checker, s: Section, venue: str) -> ClearStreetSettings | None:
    api_key = _parse_api_key(checker, s, venue)
    top_limit = checker.field(
        s,
        "top_margin_contributors_limit",
        None,
        lambda p, v: checker.integer(p, v, minimum=1),
    )
    if api_key is None:
        return None
    return ClearStreetSettings(api_key=api_key, top_margin_contributors_limit=top_limit)


def _parse_api_key(checker: Checker, s: Section, venue: str) -> Secret | None:
    if s.has("api_key") and s.has("api_key_file"):
        checker.error(s.at("api_key_file"), "give api_key or api_key_file, not both", key=True)
        return None
    if s.has("api_key"):
        text = checker.field(s, "api_key", "", checker.header_secret_text)
        return Secret.literal(f"{venue} api_key", text) if text else None
    if s.has("api_key_file"):
        secret: Secret | None = checker.field(
            s,
            "api_key_file",
            None,
            lambda p, v: checker.secret_file(p, v, f"{venue} api_key_file", header=True),
        )
        return secret
    checker.error(
        s.path,
        f"missing api_key_file (or api_key) in {s.where}: clearstreet venues need an API key",
    )
    return None


def _account_id_problem(account_id: str) -> str | None:
    if not (account_id.isascii() and account_id.isdigit()):
        return "Clear Street account ids are numbers such as 19816"
    return None


class ClearStreetAdapter(VenueAdapter):
    kind: ClassVar[str] = "clearstreet"
    schema: ClassVar[FieldSchema] = SCHEMA

    def __init__(self, config: VenueConfig, http: HttpClient) -> None:
        super().__init__(config, http)
        self.settings = settings_of(config, ClearStreetSettings)
        self._usable_key: str | None = None  # the API key last found fit for a header
        # its request headers, made once per key rather than once per poll
        self._auth_headers: Mapping[str, str] = {}
        self._balances_params: dict[str, str | int] = {}
        if self.settings.top_margin_contributors_limit:
            limit = self.settings.top_margin_contributors_limit
            self._balances_params["top_margin_contributors_limit"] = limit
        self._parsed = ParsedAnswers()

    async def fetch(self, account: AccountConfig, deadline: float) -> Snapshot:
        with self.errors_about(account.id):
            path = f"/v1/accounts/{path_segment(account.id)}/balances"
            response = await self._get(path, self._balances_params, deadline)
            envelope = decode_json(response)
            request_id = _request_id(envelope, response)
            data = envelope.get("data") if isinstance(envelope, dict) else None
            try:
                if not isinstance(data, dict):
                    raise SnapshotParseError("balances answer has no `data` object")
                fields = self._parsed.fields(account.id, data, self.parse_balances)
            except SnapshotParseError as exc:
                exc.request_id, exc.status = request_id, response.status
                raise
        currency = fields.get("currency")  # the parse's shared text: not a copy per account
        return Snapshot(
            venue=self.config.name,
            venue_kind=self.kind,
            account=account.id,
            fields=fields,
            taken_at=time.time(),
            currency=currency if isinstance(currency, str) else None,
            request_id=request_id,
            labels=account.labels,
            params=account.params,
            decimal_fields=SCHEMA.decimal_paths,
        )

    @staticmethod
    def parse_balances(data: dict[str, Any], account_id: str) -> dict[str, Any]:
        """The snapshot fields of one `AccountBalances` object, normalized set included."""
        fields = flatten(data, SCHEMA)
        if "buying_power" not in fields:
            raise SnapshotParseError("balances answer lacks buying_power")
        answered = fields.get("account_id")
        if answered is not None and str(answered) != account_id:
            raise SnapshotParseError(
                f"asked for account {account_id}, the answer is for account {answered}"
            )
        fields.setdefault("short_market_value", _ZERO)
        if "sod" in fields:
            fields.setdefault("sod.short_market_value", _ZERO)
        _normalize(fields)
        return fields

    async def list_accounts(self, deadline: float) -> list[str]:
        """Every account the key can see whose status discovery asks for (ACTIVE)."""
        with self.errors_about(None):
            return await self._list_accounts(deadline)

    async def _list_accounts(self, deadline: float) -> list[str]:
        wanted = set(self.config.discovery.statuses) if self.config.discovery else {"ACTIVE"}
        ids: list[object] = []
        token: str | None = None
        for _ in range(_MAX_PAGES):
            params: dict[str, str | int] = {"page_size": _PAGE_SIZE}
            if token:
                params["page_token"] = token
            response = await self._get("/v1/accounts", params, deadline)
            envelope = decode_json(response)
            data = envelope.get("data") if isinstance(envelope, dict) else None
            if not isinstance(data, list):
                raise SnapshotParseError(
                    "account listing has no `data` list",
                    status=response.status,
                    request_id=_request_id(envelope, response),
                    venue=self.config.name,
                )
            for entry in data:
                if isinstance(entry, dict) and entry.get("id") is not None:
                    status = str(entry.get("status") or "ACTIVE").upper()
                    if status in wanted:
                        ids.append(entry["id"])
            metadata = envelope.get("metadata") or {}
            token = metadata.get("next_page_token") if isinstance(metadata, dict) else None
            if not token:
                return discovered_ids(ids, self.config.name)
        raise SnapshotParseError(
            f"account listing did not end after {_MAX_PAGES} pages", venue=self.config.name
        )

    async def _get(self, path: str, params: dict[str, str | int], deadline: float) -> HttpResponse:
        url = self.config.base_url + path

        async def attempt() -> HttpResponse:
            key = self._api_key()
            headers = self._auth_headers
            async with self.limits.slot(deadline):
                response = await self.http.request(
                    "GET",
                    url,
                    params=params,
                    headers=headers,
                    deadline=self.attempt_deadline(deadline),
                    max_bytes=self.config.max_response_bytes,
                )
            if response.status != 200:
                error = self._error(response)
                if response.status == 401:
                    self.settings.api_key.recheck()  # rotated since it was last read?
                    if isinstance(error, VenueAuthError):
                        error.credential_digest = digest_of(key)
                raise error
            return response

        return await with_retries(attempt, deadline=deadline, notice=self.limits.notice)

    def _api_key(self) -> str:
        secret = self.settings.api_key
        try:
            key = secret.get()
        except SecretUnavailable as exc:
            raise VenueAuthError(str(exc), venue=self.config.name) from None
        if key is not self._usable_key:  # checked at load; a key file may change since
            problem = header_value_problem(key)
            if problem is not None:
                where = secret.path or secret.name
                raise VenueAuthError(
                    f"{where} {problem}: an API key is visible ASCII only",
                    venue=self.config.name,
                )
            self._usable_key = key
            self._auth_headers = {"authorization": f"Bearer {key}"}
        return key

    def credential_digest(self) -> str | None:
        return self.settings.api_key.digest()

    def _error(self, response: HttpResponse) -> VenueError:
        body = try_decode_json(response)
        error = body.get("error") if isinstance(body, dict) else None
        message = clip(error.get("message")) if isinstance(error, dict) else ""
        what = f"Clear Street answered {response.status}" + (f": {message}" if message else "")
        return error_for_status(
            response, what, retryable=_retryable, request_id=_request_id(body, response)
        )


def _retryable(status: int) -> bool:
    """As the official SDK: 408, 409 (a conflict that resolves itself), 429 and 5xx."""
    return status in (408, 409, 429) or status >= 500


_COPIED = tuple((n.name, n.source) for n in NORMALIZED if n.name != n.source)


def _normalize(fields: dict[str, Any]) -> None:
    for target, source in _COPIED:
        value = fields.get(source)
        if value is not None:
            fields[target] = value
    if "daily_pnl" not in fields and "daily_total_pnl" in fields:
        fields["daily_pnl"] = fields["daily_total_pnl"]


def _request_id(body: Any, response: HttpResponse) -> str | None:
    if isinstance(body, dict):
        metadata = body.get("metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("request_id"), str):
            return clip(metadata["request_id"], 100)
    header = response.headers.get("x-request-id")
    return clip(header, 100) if header else None


KIND = registry.register(
    registry.VenueKind(
        name="clearstreet",
        settings_keys=("api_key", "api_key_file", "top_margin_contributors_limit"),
        settings_hint="clearstreet venues use api_key or api_key_file",
        parse_settings=parse_settings,
        schema=SCHEMA,
        adapter=lambda: ClearStreetAdapter,
        normalized=NORMALIZED,
        gauges=GAUGES,
        id_problem=_account_id_problem,
        discovery_statuses=True,
        deprecation_note=(
            "the FINRA pattern-day-trader rule was replaced by intraday margin in 2026 and "
            "venues are removing these fields"
        ),
        deprecation_successor="margin_details.intraday_details.buying_power",
    )
)
