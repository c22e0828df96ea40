"""Polymarket Exchange's API in the simulator: the auth0 token endpoint (private-key
JWT client assertions) and the Positions API behind its tokens
(`monitor/simulator/README.md`)."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final

import jwt
from aiohttp import web

from monitor.simulator.fakes import JSON_TYPE, AccountsFake, Route, error_message
from monitor.simulator.scenario import PmClient
from monitor.simulator.templates import PM_KINDS, PM_TEMPLATES, FieldKinds, dumps, patched
from monitor.simulator.values import Account

if TYPE_CHECKING:
    from monitor.simulator.server import Simulator

PM: Final = "polymarket"
ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME: Final = 300.0

# grpc-gateway: HTTP status -> gRPC code, and its usual messages.
_GRPC_CODES: Final = {
    400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 409: 10, 412: 9, 413: 3,
    422: 3, 429: 8, 499: 1, 500: 13, 501: 12, 503: 14, 504: 4,
}  # fmt: skip
_PM_MESSAGES: Final = {
    401: "unauthenticated",
    403: "permission denied",
    404: "not found",
    429: "rate limit exceeded",
    500: "internal error",
    503: "service unavailable",
    504: "deadline exceeded",
}
_AUTH0_ERRORS: Final = {400: "invalid_request", 401: "access_denied", 403: "access_denied"}
_AUTH0_ERRORS_429: Final = "too_many_requests"


def pm_error(status: int, message: str | None = None) -> bytes:
    code = _GRPC_CODES.get(status, 2)
    body = {"code": code, "message": message or error_message(status, _PM_MESSAGES), "details": []}
    return dumps(body).encode()


def auth0_error(status: int, message: str | None, error: str | None = None) -> bytes:
    if error is None:
        error = _AUTH0_ERRORS_429 if status == 429 else _AUTH0_ERRORS.get(status, "server_error")
    description = message or error_message(status, {})
    return dumps({"error": error, "error_description": description}).encode()


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class PolymarketFake(AccountsFake):
    """The Polymarket accounts of the scenario, its OAuth clients and their tokens."""

    kind: ClassVar[str] = PM
    field_kinds: ClassVar[FieldKinds] = PM_KINDS

    def __init__(self, sim: Simulator) -> None:
        super().__init__(sim)
        pm = sim.scenario.polymarket
        self.token_ttl = pm.token_ttl
        self._clients = {c.client_id: c for c in pm.clients}
        self._tokens: dict[str, tuple[float, PmClient]] = {}
        self._jtis: dict[str, float] = {}
        self.accounts: dict[str, Account] = {}

    def build(self) -> None:
        for pspec in self.sim.scenario.polymarket.accounts:
            template = PM_TEMPLATES[pspec.template]
            patch = self.sim.patch(PM_KINDS, pspec.set, pspec.remove)
            for name in pspec.names():
                display = pspec.display_name or name.rsplit("/", 1)[-1]
                self.put(Account(name, template, "ACTIVE", {"display_name": display}, patch))

    def routes(self) -> Iterable[Route]:
        return [
            Route("POST", "/oauth/token", self._h_token, "token", logged=True),
            Route("GET", "/v1/health", self._h_health, "health", logged=True),
            Route("GET", "/v1/whoami", self._h_whoami, "whoami", logged=True),
            Route("GET", "/v1/accounts", self._h_accounts, "accounts", logged=True),
            Route("POST", "/v1/positions/balance", self._h_balance, "balances", logged=True),
            Route("POST", "/v1/positions/balances", self._h_balances, "balances", logged=True),
        ]

    def error_body(self, status: int, message: str | None, request_id: str, endpoint: str) -> bytes:
        if endpoint == "token":
            return auth0_error(status, message)
        return pm_error(status, message)

    def put(self, account: Account) -> None:
        self.accounts[account.id] = account
        self.sim.attach(PM, account)

    def find(self, account_id: str) -> Account | None:
        return self.accounts.get(account_id)

    def account_ids(self) -> list[str]:
        return list(self.accounts)

    def add_account(
        self,
        account_id: str | int,
        *,
        template: str | None = None,
        status: str | None = None,
        values: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
        display_name: str | None = None,
    ) -> None:
        account_name = str(account_id)
        if not account_name:
            raise ValueError("a Polymarket account needs a name")
        name = template or "default"
        if name not in PM_TEMPLATES:
            raise ValueError(f"template must be one of {', '.join(PM_TEMPLATES)}")
        patch = self.sim.patch(PM_KINDS, values or {}, remove)
        display = display_name or account_name.rsplit("/", 1)[-1]
        account = Account(
            account_name, PM_TEMPLATES[name], "ACTIVE", {"display_name": display}, patch
        )
        self.accounts.pop(account_name, None)
        self.put(account)

    def remove_account(self, account_id: str | int) -> bool:
        return self.accounts.pop(str(account_id), None) is not None

    def balance(self, account: Account) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body_json(account))
        return result

    def expire_tokens(self) -> None:
        """Every token issued so far is expired from now on."""
        self._tokens = {k: (float("-inf"), c) for k, (_, c) in self._tokens.items()}

    def _auth(self, request: web.Request, participant: bool = True) -> tuple[int, bytes] | PmClient:
        header = request.headers.get("Authorization", "")
        if header[:7] != "Bearer ":
            return 401, pm_error(401, "Jwt is missing")
        entry = self._tokens.get(header[7:].strip())
        if entry is None:
            return 401, pm_error(401, "Jwt verification fails")
        if entry[0] <= self.sim.clock():
            return 401, pm_error(401, "Jwt is expired")
        client = entry[1]
        if participant and request.headers.get("x-participant-id") != client.participant_id:
            return 403, pm_error(403, "permission denied")
        return client

    async def _h_health(self, request: web.Request) -> web.StreamResponse:
        received = time.time()
        rid = str(uuid.uuid4())
        return await self.sim.serve(
            request, PM, "health", None, rid, received, lambda: (200, b'{"status":"SERVING"}')
        )

    async def _h_whoami(self, request: web.Request) -> web.StreamResponse:
        received = time.time()
        rid = str(uuid.uuid4())

        def produce() -> tuple[int, bytes]:
            client = self._auth(request, participant=False)
            if not isinstance(client, PmClient):
                return client
            return 200, dumps({"user": client.user, "firm": client.firm}).encode()

        return await self.sim.serve(request, PM, "whoami", None, rid, received, produce)

    async def _h_accounts(self, request: web.Request) -> web.StreamResponse:
        received = time.time()
        rid = str(uuid.uuid4())

        def produce() -> tuple[int, bytes]:
            client = self._auth(request)
            if not isinstance(client, PmClient):
                return client
            accounts = list(self.accounts.values())
            body = {
                "accounts": [a.id for a in accounts],
                "displayNames": [a.info.get("display_name", a.id) for a in accounts],
            }
            return 200, dumps(body).encode()

        return await self.sim.serve(request, PM, "accounts", None, rid, received, produce)

    async def _balance_request(
        self, request: web.Request, all_currencies: bool
    ) -> web.StreamResponse:
        received = time.time()
        rid = str(uuid.uuid4())
        raw = await request.read()
        parsed: Any = None
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        name = parsed.get("name") if isinstance(parsed, dict) else None
        account_name = name if isinstance(name, str) else None

        def produce() -> tuple[int, bytes]:
            client = self._auth(request)
            if not isinstance(client, PmClient):
                return client
            if not isinstance(parsed, dict):
                return 400, pm_error(400, "invalid request body: not a JSON object")
            if not account_name:
                return 400, pm_error(400, "name is required")
            currency = parsed.get("currency")
            if not all_currencies:
                if not isinstance(currency, str) or not currency:
                    return 400, pm_error(400, "currency is required")
                if currency != "USD":
                    return 404, pm_error(404, f"no {currency} balance")
            account = self.accounts.get(account_name)
            if account is None:
                return 404, pm_error(404, "account not found")
            body = self.body_json(account)
            if all_currencies:
                return 200, ('{"balances":{"USD":' + body + "}}").encode()
            return 200, body.encode()

        def targets(obj: Any) -> list[Any]:
            if all_currencies:
                balances = obj.get("balances") if isinstance(obj, dict) else None
                return list(balances.values()) if isinstance(balances, dict) else [obj]
            return [obj]

        return await self.sim.serve(
            request, PM, "balances", account_name, rid, received, produce, targets
        )

    async def _h_balance(self, request: web.Request) -> web.StreamResponse:
        return await self._balance_request(request, all_currencies=False)

    async def _h_balances(self, request: web.Request) -> web.StreamResponse:
        return await self._balance_request(request, all_currencies=True)

    def body_json(self, account: Account) -> str:
        stamp = _rfc3339(self.sim.clock())
        if account.pristine:
            return account.template.json_body[:-1] + ',"updateTime":"' + stamp + '"}'
        patches = [(("updateTime",), stamp), *account.patches_at(self.sim.timeline_time())]
        return dumps(patched(account.template.body, patches))

    async def _h_token(self, request: web.Request) -> web.StreamResponse:
        received = time.time()
        rid = str(uuid.uuid4())
        form: Mapping[str, Any]
        if request.content_type == JSON_TYPE:
            try:
                loaded = json.loads(await request.read())
            except ValueError:
                loaded = None
            form = loaded if isinstance(loaded, dict) else {}
        else:
            form = await request.post()
        token_url = str(request.url.with_query(None))
        api_url = f"{request.scheme}://{request.host}/polymarket"
        return await self.sim.serve(
            request,
            PM,
            "token",
            None,
            rid,
            received,
            lambda: self._token(form, token_url, api_url),
        )

    def _token(self, form: Mapping[str, Any], token_url: str, api_url: str) -> tuple[int, bytes]:
        grant = form.get("grant_type")
        if grant != "client_credentials":
            return 400, auth0_error(
                400, f"Unsupported grant type: {grant}", "unsupported_grant_type"
            )
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return 400, auth0_error(400, f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion")
        if not isinstance(assertion, str) or not assertion:
            return 401, auth0_error(401, "Client authentication is required", "invalid_client")
        result = self._verify_assertion(assertion, token_url)
        if isinstance(result, str):
            return 401, auth0_error(401, f"Invalid client assertion: {result}", "invalid_client")
        pm = self.sim.scenario.polymarket
        audiences = {api_url, api_url + "/"}
        if pm.api_audience:
            audiences.add(pm.api_audience)
        audience = form.get("audience")
        if audience not in audiences:
            return 401, auth0_error(401, f"Service not found: {audience}", "access_denied")
        token = secrets.token_urlsafe(32)
        now = self.sim.clock()
        if len(self._tokens) > 10_000:
            self._tokens = {k: v for k, v in self._tokens.items() if v[0] > now}
        self._tokens[token] = (now + self.token_ttl, result)
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": round(self.token_ttl),
            "scope": "read:positions",
        }
        return 200, dumps(body).encode()

    def _verify_assertion(self, assertion: str, token_url: str) -> PmClient | str:
        """The client a JWT client assertion proves to be, or why it does not."""
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.InvalidTokenError as exc:
            return f"malformed JWT ({exc})"
        if header.get("alg") != "RS256":
            return f"alg must be RS256, got {header.get('alg')!r}"
        issuer = unverified.get("iss")
        client = self._clients.get(issuer) if isinstance(issuer, str) else None
        if client is None:
            return f"unknown client {issuer!r}"
        audiences = [token_url]
        if self.sim.scenario.polymarket.token_audience:
            audiences.append(self.sim.scenario.polymarket.token_audience)
        try:
            claims = jwt.decode(
                assertion,
                client.public_key,
                algorithms=["RS256"],
                audience=audiences,
                issuer=client.client_id,
                options={
                    "require": ["iss", "sub", "aud", "exp", "jti"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidSignatureError:
            return "signature verification failed"
        except jwt.InvalidAudienceError:
            return f"aud must be {token_url}"
        except jwt.InvalidTokenError as exc:
            return str(exc)
        if claims.get("sub") != client.client_id:
            return "sub must equal iss (the client_id)"
        exp = claims.get("exp")
        iat = claims.get("iat")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            return "exp must be a number"
        now = self.sim.clock()
        if exp <= now:
            return "jwt expired"
        if iat is not None:
            if isinstance(iat, bool) or not isinstance(iat, int | float):
                return "iat must be a number"
            if iat > now + 60:
                return "iat is in the future"
            lifetime = exp - iat
        else:
            lifetime = exp - now
        if lifetime > MAX_ASSERTION_LIFETIME:
            return "exp must be at most 5 minutes after iat"
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            return "jti must be a non-empty string"
        if jti in self._jtis:
            return "jti has already been used"
        if len(self._jtis) > 100_000:
            self._jtis = {k: v for k, v in self._jtis.items() if v > now}
        self._jtis[jti] = float(exp)
        return client
