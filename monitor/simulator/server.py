"""The venue simulator: Clear Street and Polymarket APIs from one aiohttp server.

    /clearstreet/v1/accounts[/{id}/balances]         Clear Street Trading API
    /polymarket/oauth/token                          Polymarket's auth0 token endpoint
    /polymarket/v1/...                               Polymarket Exchange API
    /_sim/...                                        control API (JSON)

Bodies are computed per request from each account's template, overrides and timeline;
see monitor/simulator/README.md.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import itertools
import json
import os
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final

import jwt
from aiohttp import web

from monitor.simulator.faults import Fault, FaultSet, FaultSpecError, parse_fault
from monitor.simulator.scenario import (
    CS_STATUSES,
    LAST_PAGE_TOKEN,
    PmClient,
    Scenario,
    TimelineChange,
)
from monitor.simulator.templates import (
    CS_KINDS,
    CS_TEMPLATES,
    CS_TOP_CONTRIBUTORS,
    MISSING,
    PM_KINDS,
    PM_TEMPLATES,
    FieldKinds,
    FieldPath,
    dumps,
    mutate,
    patched,
    split_path,
    wire_value,
)
from monitor.simulator.values import Account, Event, RampEvent, SetEvent, WalkEvent

CS: Final = "clearstreet"
PM: Final = "polymarket"
JSON_TYPE: Final = "application/json"
MAX_PAGE_SIZE: Final = 1000
DEFAULT_PAGE_SIZE: Final = 100
ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME: Final = 300.0

# Clear Street's error messages are Google API style (see the seed's 403 and 404).
_CS_MESSAGES: Final = {
    400: "The request is invalid",
    401: "The request does not have valid authentication credentials for the operation",
    403: "The caller does not have permission to execute the specified operation",
    404: "Some requested entity was not found",
    409: "The operation was aborted",
    429: "Too many requests: rate limit exceeded",
    500: "Internal error",
    503: "The service is currently unavailable",
    504: "The deadline expired before the operation could complete",
}
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

Produce = Callable[[], tuple[int, bytes]]
Targets = Callable[[Any], list[Any]]


class ControlError(Exception):
    """A control call that cannot be done; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _message(status: int, table: Mapping[int, str]) -> str:
    if status in table:
        return table[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def cs_error(status: int, message: str | None, request_id: str) -> bytes:
    body = {
        "error": {"code": status, "message": message or _message(status, _CS_MESSAGES)},
        "metadata": {"request_id": request_id},
    }
    return dumps(body).encode()


def pm_error(status: int, message: str | None = None) -> bytes:
    code = _GRPC_CODES.get(status, 2)
    body = {"code": code, "message": message or _message(status, _PM_MESSAGES), "details": []}
    return dumps(body).encode()


def auth0_error(status: int, message: str | None, error: str | None = None) -> bytes:
    if error is None:
        error = _AUTH0_ERRORS_429 if status == 429 else _AUTH0_ERRORS.get(status, "server_error")
    description = message or _message(status, {})
    return dumps({"error": error, "error_description": description}).encode()


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _page_token(after: int) -> str:
    return base64.urlsafe_b64encode(f"after:{after}".encode()).decode().rstrip("=")


def _page_after(token: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:
        return None
    prefix, _, number = text.partition(":")
    return int(number) if prefix == "after" and number.isdigit() else None


class _KeyFiles:
    """API key files, re-read (at most once a second) when they change on disk."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = list(paths)
        self._stamps: dict[Path, tuple[int, int, int]] = {}
        self._values: dict[Path, str] = {}
        self._checked = -1e18
        self.check()

    def check(self) -> bool:
        """Re-read changed files; True when a value changed."""
        changed = False
        for path in self.paths:
            try:
                st = os.stat(path)
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
                if self._stamps.get(path) != stamp:
                    value = path.read_text(encoding="utf-8").strip()
                    self._stamps[path] = stamp
                    changed = changed or self._values.get(path) != value
                    self._values[path] = value
            except (OSError, UnicodeDecodeError):
                continue  # keep the last value read
        return changed

    def maybe_check(self) -> bool:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return False
        self._checked = now
        return self.check()

    def values(self) -> set[str]:
        return {v for v in self._values.values() if v}


class Simulator:
    """Both venues' APIs, driven by a Scenario, on one port."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        clock: Callable[[], float] = time.time,
        max_requests: int = 100_000,
    ) -> None:
        self.scenario = scenario
        self.clock = clock
        self._t0 = clock()
        self._seq = itertools.count()
        self._faults = FaultSet()
        self._log: deque[tuple[Any, ...]] = deque(maxlen=max_requests)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._host = "127.0.0.1"
        # Clear Street
        cs = scenario.clearstreet
        self._cs_literal_keys = list(cs.api_keys)
        self._cs_key_files = _KeyFiles(cs.api_key_files)
        self._cs_keys: frozenset[str] = frozenset()
        self._refresh_cs_keys()
        self.last_page_token = cs.last_page_token
        self._cs_accounts: dict[int, Account] = {}
        self._cs_ids: list[int] = []
        # Polymarket
        pm = scenario.polymarket
        self.token_ttl = pm.token_ttl
        self._clients = {c.client_id: c for c in pm.clients}
        self._tokens: dict[str, tuple[float, PmClient]] = {}
        self._jtis: dict[str, float] = {}
        self._pm_accounts: dict[str, Account] = {}
        self._timeline: dict[tuple[str, str], list[tuple[FieldPath, Event]]] = {}
        # a looping scenario's timeline faults: the cycle they belong to, and its copies
        self._fault_cycle = 0
        self._cycle_faults: list[Fault] = []
        self._build()

    # --- construction ------------------------------------------------------------------

    def _build(self) -> None:
        scenario = self.scenario
        for change in scenario.timeline:
            self._timeline.setdefault((change.venue, change.account), []).extend(
                self._events(change)
            )
        for spec in scenario.clearstreet.accounts:
            template = CS_TEMPLATES[spec.template]
            patch = self._patch(CS_KINDS, spec.set, spec.remove)
            for n in range(spec.id, spec.id + spec.count):
                info = {"subtype": template.subtype, **spec.info}
                account = Account(str(n), template, spec.status, info, patch)
                self._put_cs(account)
        for pspec in scenario.polymarket.accounts:
            template = PM_TEMPLATES[pspec.template]
            patch = self._patch(PM_KINDS, pspec.set, pspec.remove)
            for name in pspec.names():
                display = pspec.display_name or name.rsplit("/", 1)[-1]
                self._put_pm(Account(name, template, "ACTIVE", {"display_name": display}, patch))
        self._arm_timeline_faults(0)

    @staticmethod
    def _patch(
        kinds: FieldKinds, values: Mapping[str, Any], remove: Iterable[str]
    ) -> dict[FieldPath, Any]:
        patch: dict[FieldPath, Any] = {}
        for name, value in values.items():
            path = split_path(name)
            patch[path] = wire_value(value, kinds.kind(path))
        for name in remove:
            patch[split_path(name)] = MISSING
        return patch

    def _events(self, change: TimelineChange) -> list[tuple[FieldPath, Event]]:
        kinds = CS_KINDS if change.venue == CS else PM_KINDS
        out: list[tuple[FieldPath, Event]] = []
        at = change.at
        for name, value in change.set.items():
            path = split_path(name)
            kind = kinds.kind(path)
            out.append((path, SetEvent(at, next(self._seq), kind, wire_value(value, kind))))
        for name in change.remove:
            path = split_path(name)
            out.append((path, SetEvent(at, next(self._seq), kinds.kind(path), MISSING)))
        if change.ramp is not None:
            ramp = change.ramp
            path = split_path(ramp.field)
            seq = next(self._seq)
            out.append(
                (path, RampEvent(at, seq, kinds.kind(path), ramp.start, ramp.end, ramp.over))
            )
        if change.walk is not None:
            walk = change.walk
            path = split_path(walk.field)
            seq = next(self._seq)
            rng_seed = f"{self.scenario.seed}|{change.venue}|{change.account}|{walk.field}|{seq}"
            event = WalkEvent(
                at,
                seq,
                kinds.kind(path),
                step=walk.step,
                every=walk.every,
                low=walk.low,
                high=walk.high,
                rng_seed=rng_seed,
            )
            out.append((path, event))
        return out

    def _attach(self, venue: str, account: Account) -> None:
        for path, event in self._timeline.get((venue, account.id), ()):
            account.add_event(path, event)

    def _put_cs(self, account: Account) -> None:
        n = int(account.id)
        if n not in self._cs_accounts:
            bisect.insort(self._cs_ids, n)
        self._cs_accounts[n] = account
        self._attach(CS, account)

    def _put_pm(self, account: Account) -> None:
        self._pm_accounts[account.id] = account
        self._attach(PM, account)

    def _arm_timeline_faults(self, cycle: int) -> None:
        """The timeline's faults for one cycle of the scenario (the only one, unless it loops)."""
        for old in self._cycle_faults:
            if old.until is None:  # open-ended: the new cycle's copy takes its place
                self._faults.remove(old.id)
        self._fault_cycle = cycle
        self._cycle_faults = []
        offset = cycle * (self.scenario.loop or 0.0)
        for tfault in self.scenario.faults:
            fault = tfault.instance()
            self._faults.add(fault, 0.0, start=offset + tfault.at)
            self._cycle_faults.append(fault)

    def _refresh_cs_keys(self) -> None:
        self._cs_keys = frozenset([*self._cs_literal_keys, *self._cs_key_files.values()])

    # --- lifecycle ---------------------------------------------------------------------

    def elapsed(self) -> float:
        """Simulated seconds since start (faults and the control API run on it)."""
        return self.clock() - self._t0

    def timeline_time(self) -> float:
        """Where the timeline is: `elapsed()`, modulo the scenario's `loop` when it has one."""
        return self.scenario.timeline_time(self.elapsed())

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = self.app()
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self._port = int(sockets[0].getsockname()[1]) if sockets else port
        self._host = host
        self._t0 = self.clock()

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        return self._port

    @property
    def base_url(self) -> str:
        host = self._host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif ":" in host:
            host = "[::1]" if host == "::" else f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def clearstreet_url(self) -> str:
        return f"{self.base_url}/clearstreet"

    @property
    def polymarket_url(self) -> str:
        return f"{self.base_url}/polymarket"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/polymarket/oauth/token"

    def app(self) -> web.Application:
        """The aiohttp application (for embedding it in another server)."""
        app = web.Application()
        r = app.router
        r.add_get("/clearstreet/v1/accounts", self._h_cs_accounts)
        r.add_get("/clearstreet/v1/accounts/{account_id}/balances", self._h_cs_balances)
        r.add_post("/polymarket/oauth/token", self._h_pm_token)
        r.add_get("/polymarket/v1/health", self._h_pm_health)
        r.add_get("/polymarket/v1/whoami", self._h_pm_whoami)
        r.add_get("/polymarket/v1/accounts", self._h_pm_accounts)
        r.add_post("/polymarket/v1/positions/balance", self._h_pm_balance)
        r.add_post("/polymarket/v1/positions/balances", self._h_pm_balances)
        r.add_get("/_sim/health", self._c_health)
        r.add_get("/_sim/clock", self._c_clock)
        r.add_post("/_sim/set", self._c_set)
        r.add_get("/_sim/accounts/{venue}", self._c_list_accounts)
        r.add_post("/_sim/accounts", self._c_add_account)
        r.add_delete("/_sim/accounts", self._c_remove_account)
        r.add_get("/_sim/balance", self._c_balance)
        r.add_get("/_sim/faults", self._c_faults)
        r.add_post("/_sim/faults", self._c_add_fault)
        r.add_delete("/_sim/faults", self._c_clear_faults)
        r.add_delete("/_sim/faults/{fault_id}", self._c_remove_fault)
        r.add_get("/_sim/requests", self._c_requests)
        r.add_delete("/_sim/requests", self._c_clear_requests)
        r.add_post("/_sim/tokens/expire", self._c_expire_tokens)
        r.add_get("/_sim/config", self._c_config)
        r.add_post("/_sim/config", self._c_configure)
        return app

    # --- serving -----------------------------------------------------------------------

    async def _serve(
        self,
        request: web.Request,
        venue: str,
        endpoint: str,
        account: str | None,
        request_id: str,
        received: float,
        produce: Produce,
        targets: Targets | None = None,
    ) -> web.StreamResponse:
        """Answer one venue request, spoiled by whatever fault matches, and log it."""
        fault: Fault | None = None
        response: web.StreamResponse
        loop = self.scenario.loop
        if loop and self.scenario.faults:
            cycle = int(self.elapsed() // loop)
            if cycle != self._fault_cycle:
                self._arm_timeline_faults(cycle)
        if self._faults.active:
            delay, fault = self._faults.match(venue, endpoint, account, self.elapsed())
            if delay:
                await asyncio.sleep(delay)
        if fault is None:
            status, body = produce()
            response = web.Response(body=body, status=status, content_type=JSON_TYPE)
        else:
            status, response = self._faulted(
                request, venue, endpoint, request_id, fault, produce, targets
            )
        self._log.append(
            (received, request.method, request.path, venue, endpoint, account, status, request_id)
        )
        return response

    def _faulted(
        self,
        request: web.Request,
        venue: str,
        endpoint: str,
        request_id: str,
        fault: Fault,
        produce: Produce,
        targets: Targets | None,
    ) -> tuple[int, web.StreamResponse]:
        kind = fault.kind
        if kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            return 0, web.Response(status=500)
        if kind == "status":
            status = fault.status
            if fault.body is not None:
                body = fault.body.encode()
            elif venue == CS:
                body = cs_error(status, fault.message, request_id)
            elif endpoint == "token":
                body = auth0_error(status, fault.message)
            else:
                body = pm_error(status, fault.message)
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = fault.retry_after
            if fault.retry_after_ms is not None:
                headers["retry-after-ms"] = fault.retry_after_ms
            return status, web.Response(
                body=body, status=status, headers=headers, content_type=fault.content_type
            )
        if kind == "malformed":
            if fault.body is not None:
                body = fault.body.encode()
            else:
                body = produce()[1]
                body = body.replace(b":", b" ", 1) if b":" in body else b"{" + body
            return fault.status, web.Response(
                body=body, status=fault.status, content_type=fault.content_type
            )
        status, body = produce()
        if kind == "truncated":
            body = body[: len(body) // 2]
            return status, web.Response(body=body, status=status, content_type=JSON_TYPE)
        obj = json.loads(body)
        if kind in ("wrong_type", "remove_fields"):
            places = targets(obj) if targets is not None and status == 200 else [obj]
            for place in places:
                for path, value in fault.fields.items():
                    mutate(place, path, value)
                for path in fault.remove:
                    mutate(place, path, MISSING)
            body = dumps(obj).encode()
        elif kind == "oversized":
            text = dumps(obj)
            room = fault.size - len(text.encode()) - len(',"padding":""')
            if isinstance(obj, dict) and room > 0:
                obj["padding"] = "x" * room
                text = dumps(obj)
            body = text.encode()
        return status, web.Response(body=body, status=status, content_type=JSON_TYPE)

    # --- Clear Street --------------------------------------------------------------------

    def _cs_authorized(self, request: web.Request) -> bool:
        """A known API key? Key files are re-read once a second, and at once on a miss,
        so a rotated key works on its first request."""
        files = self._cs_key_files
        if files.paths and files.maybe_check():
            self._refresh_cs_keys()
        header = request.headers.get("Authorization", "")
        if header[:7] != "Bearer ":
            return False
        key = header[7:].strip()
        if key in self._cs_keys:
            return True
        if files.paths and files.check():
            self._refresh_cs_keys()
            return key in self._cs_keys
        return False

    async def _h_cs_balances(self, request: web.Request) -> web.StreamResponse:
        received = time.time()
        rid = str(uuid.uuid4())
        raw = request.match_info["account_id"]

        def produce() -> tuple[int, bytes]:
            if not self._cs_authorized(request):
                return 401, cs_error(401, None, rid)
            if not raw.isdigit():
                return 400, cs_error(400, f"account_id must be an integer, got {raw!r}", rid)
            account = self._cs_accounts.get(int(raw))
            if account is None:
                return 404, cs_error(404, None, rid)
            limit: int | None = None
            if request.query_string:
                given = request.query.get("top_margin_contributors_limit")
                if given is not None:
                    if not given.isdigit() or int(given) < 1:
                        message = "top_margin_contributors_limit must be an integer of at least 1"
                        return 400, cs_error(400, message, rid)
                    limit = int(given)
            data = self._cs_data_json(account, limit)
            return 200, (
                '{"data":' + data + ',"error":null,"metadata":{"request_id":"' + rid + '"}}'
            ).encode()

        return await self._serve(
            request, CS, "balances", raw, rid, received, produce, lambda o: [o.get("data")]
        )

    def _cs_data_json(self, account: Account, limit: int | None) -> str:
        if account.pristine and limit is None:
            return '{"account_id":' + account.id + "," + account.template.json_body[1:]
        return dumps(self._cs_data(account, limit))

    def _cs_data(self, account: Account, limit: int | None) -> dict[str, Any]:
        body = patched(account.template.body, account.patches_at(self.timeline_time()))
        data = {"account_id": int(account.id), **body}
        details = data.get("margin_details")
        if isinstance(details, dict):
            details = dict(details)
            given = details.pop("top_contributors", None)
            if limit is not None:
                contributors = given if isinstance(given, list) else CS_TOP_CONTRIBUTORS
                details["top_contributors"] = [
                    dict(c) if isinstance(c, dict) else c for c in contributors[:limit]
                ]
                details = dict(sorted(details.items()))  # where the venue puts it
            data["margin_details"] = details
        return data

    async def _h_cs_accounts(self, request: web.Request) -> web.StreamResponse:
        received = time.time()
        rid = str(uuid.uuid4())

        def produce() -> tuple[int, bytes]:
            if not self._cs_authorized(request):
                return 401, cs_error(401, None, rid)
            query = request.query
            size = DEFAULT_PAGE_SIZE
            if query.get("page_size"):
                text = query["page_size"]
                if not text.isdigit() or int(text) < 1:
                    return 400, cs_error(400, "page_size must be a positive integer", rid)
                size = min(int(text), MAX_PAGE_SIZE)
            start = 0
            if query.get("page_token"):
                after = _page_after(query["page_token"])
                if after is None:
                    return 400, cs_error(400, "invalid page_token", rid)
                start = bisect.bisect_right(self._cs_ids, after)
            ids = self._cs_ids[start : start + size]
            data = [self._cs_listing(self._cs_accounts[n]) for n in ids]
            metadata: dict[str, Any] = {"request_id": rid}
            if start + size < len(self._cs_ids) and ids:
                metadata["next_page_token"] = _page_token(ids[-1])
            elif self.last_page_token == "empty":
                metadata["next_page_token"] = ""
            body = {"data": data, "error": None, "metadata": metadata}
            return 200, dumps(body).encode()

        return await self._serve(request, CS, "accounts", None, rid, received, produce)

    @staticmethod
    def _cs_listing(account: Account) -> dict[str, Any]:
        info = account.info
        return {
            "id": int(account.id),
            "full_name": info.get("full_name") or f"Simulated account {account.id}",
            "short_name": info.get("short_name") or f"SIM{account.id}",
            "status": account.status,
            "subtype": info.get("subtype") or account.template.subtype,
            "type": info.get("type") or "CUSTOMER",
        }

    # --- Polymarket ----------------------------------------------------------------------

    def _pm_auth(
        self, request: web.Request, participant: bool = True
    ) -> tuple[int, bytes] | PmClient:
        header = request.headers.get("Authorization", "")
        if header[:7] != "Bearer ":
            return 401, pm_error(401, "Jwt is missing")
        entry = self._tokens.get(header[7:].strip())
        if entry is None:
            return 401, pm_error(401, "Jwt verification fails")
        if entry[0] <= self.clock():
            return 401, pm_error(401, "Jwt is expired")
        client = entry[1]
        if participant and request.headers.get("x-participant-id") != client.participant_id:
            return 403, pm_error(403, "permission denied")
        return client

    async def _h_pm_health(self, request: web.Request) -> web.StreamResponse:
        received = time.time()
        rid = str(uuid.uuid4())
        return await self._serve(
            request, PM, "health", None, rid, received, lambda: (200, b'{"status":"SERVING"}')
        )

    async def _h_pm_whoami(self, request: web.Request) -> web.StreamResponse:
        received = time.time()
        rid = str(uuid.uuid4())

        def produce() -> tuple[int, bytes]:
            client = self._pm_auth(request, participant=False)
            if not isinstance(client, PmClient):
                return client
            return 200, dumps({"user": client.user, "firm": client.firm}).encode()

        return await self._serve(request, PM, "whoami", None, rid, received, produce)

    async def _h_pm_accounts(self, request: web.Request) -> web.StreamResponse:
        received = time.time()
        rid = str(uuid.uuid4())

        def produce() -> tuple[int, bytes]:
            client = self._pm_auth(request)
            if not isinstance(client, PmClient):
                return client
            accounts = list(self._pm_accounts.values())
            body = {
                "accounts": [a.id for a in accounts],
                "displayNames": [a.info.get("display_name", a.id) for a in accounts],
            }
            return 200, dumps(body).encode()

        return await self._serve(request, PM, "accounts", None, rid, received, produce)

    async def _pm_balance_request(
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
            client = self._pm_auth(request)
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
            account = self._pm_accounts.get(account_name)
            if account is None:
                return 404, pm_error(404, "account not found")
            body = self._pm_body_json(account)
            if all_currencies:
                return 200, ('{"balances":{"USD":' + body + "}}").encode()
            return 200, body.encode()

        def targets(obj: Any) -> list[Any]:
            if all_currencies:
                balances = obj.get("balances") if isinstance(obj, dict) else None
                return list(balances.values()) if isinstance(balances, dict) else [obj]
            return [obj]

        return await self._serve(
            request, PM, "balances", account_name, rid, received, produce, targets
        )

    async def _h_pm_balance(self, request: web.Request) -> web.StreamResponse:
        return await self._pm_balance_request(request, all_currencies=False)

    async def _h_pm_balances(self, request: web.Request) -> web.StreamResponse:
        return await self._pm_balance_request(request, all_currencies=True)

    def _pm_body_json(self, account: Account) -> str:
        stamp = _rfc3339(self.clock())
        if account.pristine:
            return account.template.json_body[:-1] + ',"updateTime":"' + stamp + '"}'
        patches = [(("updateTime",), stamp), *account.patches_at(self.timeline_time())]
        return dumps(patched(account.template.body, patches))

    async def _h_pm_token(self, request: web.Request) -> web.StreamResponse:
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
        return await self._serve(
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
        pm = self.scenario.polymarket
        audiences = {api_url, api_url + "/"}
        if pm.api_audience:
            audiences.add(pm.api_audience)
        audience = form.get("audience")
        if audience not in audiences:
            return 401, auth0_error(401, f"Service not found: {audience}", "access_denied")
        token = secrets.token_urlsafe(32)
        now = self.clock()
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
        if self.scenario.polymarket.token_audience:
            audiences.append(self.scenario.polymarket.token_audience)
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
        now = self.clock()
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

    # --- Python control API --------------------------------------------------------------

    def _venue(self, venue: str) -> str:
        if venue not in (CS, PM):
            raise ValueError(f"venue must be {CS} or {PM}, got {venue!r}")
        return venue

    def _account(self, venue: str, account_id: str | int) -> Account:
        if self._venue(venue) == CS:
            text = str(account_id)
            found = self._cs_accounts.get(int(text)) if text.isdigit() else None
        else:
            found = self._pm_accounts.get(str(account_id))
        if found is None:
            raise KeyError(f"no {venue} account {account_id!r}")
        return found

    def set_fields(
        self,
        venue: str,
        account: str | int,
        values: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
    ) -> None:
        """Change fields of one account now (dotted wire paths); `remove` deletes fields.

        A change made now overrides the timeline's earlier events for that field;
        timeline events still to come apply after it.
        """
        target = self._account(venue, account)
        kinds = CS_KINDS if venue == CS else PM_KINDS
        now = self.timeline_time()
        changes = [(split_path(name), value) for name, value in (values or {}).items()]
        changes += [(split_path(name), MISSING) for name in remove]
        for path, value in changes:
            kind = kinds.kind(path)
            target.set_now(path, now, next(self._seq), kind, wire_value(value, kind))

    def add_account(
        self,
        venue: str,
        account_id: str | int,
        *,
        template: str | None = None,
        status: str | None = None,
        values: Mapping[str, Any] | None = None,
        remove: Iterable[str] = (),
        display_name: str | None = None,
    ) -> None:
        """Add (or replace) an account; it shows in listings at once."""
        if self._venue(venue) == CS:
            text = str(account_id)
            if not text.isdigit():
                raise ValueError(f"a Clear Street account id is an integer, got {account_id!r}")
            name = template or "margin"
            if name not in CS_TEMPLATES:
                raise ValueError(f"template must be one of {', '.join(CS_TEMPLATES)}")
            if status is not None and status not in CS_STATUSES:
                raise ValueError(f"status must be one of {', '.join(CS_STATUSES)}")
            tmpl = CS_TEMPLATES[name]
            patch = self._patch(CS_KINDS, values or {}, remove)
            info = {"subtype": tmpl.subtype}
            self._put_cs(Account(str(int(text)), tmpl, status or "ACTIVE", info, patch))
        else:
            account_name = str(account_id)
            if not account_name:
                raise ValueError("a Polymarket account needs a name")
            name = template or "default"
            if name not in PM_TEMPLATES:
                raise ValueError(f"template must be one of {', '.join(PM_TEMPLATES)}")
            patch = self._patch(PM_KINDS, values or {}, remove)
            display = display_name or account_name.rsplit("/", 1)[-1]
            account = Account(
                account_name, PM_TEMPLATES[name], "ACTIVE", {"display_name": display}, patch
            )
            self._pm_accounts.pop(account_name, None)
            self._put_pm(account)

    def remove_account(self, venue: str, account_id: str | int) -> bool:
        """Remove an account; False when there was none."""
        if self._venue(venue) == CS:
            text = str(account_id)
            if not text.isdigit() or int(text) not in self._cs_accounts:
                return False
            n = int(text)
            del self._cs_accounts[n]
            del self._cs_ids[bisect.bisect_left(self._cs_ids, n)]
            return True
        return self._pm_accounts.pop(str(account_id), None) is not None

    def account_ids(self, venue: str) -> list[str]:
        if self._venue(venue) == CS:
            return [str(n) for n in self._cs_ids]
        return list(self._pm_accounts)

    def balance(self, venue: str, account_id: str | int) -> dict[str, Any]:
        """The body an account's balance request gets now (Clear Street: `data`)."""
        account = self._account(venue, account_id)
        if venue == CS:
            result: dict[str, Any] = json.loads(self._cs_data_json(account, None))
        else:
            result = json.loads(self._pm_body_json(account))
        return result

    def add_fault(self, fault: Mapping[str, Any] | Fault) -> str:
        """Inject a fault (see README); returns its id. FaultSpecError when invalid."""
        parsed = fault if isinstance(fault, Fault) else parse_fault(fault)
        return self._faults.add(parsed, self.elapsed())

    def remove_fault(self, fault_id: str) -> bool:
        return self._faults.remove(fault_id)

    def clear_faults(self) -> None:
        self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        return [f.describe() for f in self._faults.all()]

    def requests(
        self,
        venue: str | None = None,
        account: str | None = None,
        endpoint: str | None = None,
        since: float | None = None,
    ) -> list[dict[str, Any]]:
        """Logged venue requests, oldest first, filtered by whatever is given."""
        out = []
        for t, method, path, v, e, a, status, rid in self._log:
            if (
                (venue is not None and v != venue)
                or (account is not None and a != account)
                or (endpoint is not None and e != endpoint)
                or (since is not None and t < since)
            ):
                continue
            out.append(
                {
                    "t": t,
                    "method": method,
                    "path": path,
                    "venue": v,
                    "endpoint": e,
                    "account": a,
                    "status": status,
                    "request_id": rid,
                }
            )
        return out

    def clear_requests(self) -> None:
        self._log.clear()

    def expire_tokens(self) -> None:
        """Every token issued so far is expired from now on."""
        self._tokens = {k: (float("-inf"), c) for k, (_, c) in self._tokens.items()}

    def configure(
        self,
        *,
        token_ttl: float | None = None,
        last_page_token: str | None = None,
        api_keys: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Change settings; returns them all. `api_keys` replaces the scenario's literal keys."""
        if token_ttl is not None:
            if (
                isinstance(token_ttl, bool)
                or not isinstance(token_ttl, int | float)
                or token_ttl < 0
            ):
                raise ValueError("token_ttl must be a number of seconds")
            self.token_ttl = float(token_ttl)
        if last_page_token is not None:
            if last_page_token not in LAST_PAGE_TOKEN:
                raise ValueError(f"last_page_token must be one of {', '.join(LAST_PAGE_TOKEN)}")
            self.last_page_token = last_page_token
        if api_keys is not None:
            keys = list(api_keys)
            if not all(isinstance(k, str) and k for k in keys):
                raise ValueError("api_keys must be non-empty strings")
            self._cs_literal_keys = keys
            self._refresh_cs_keys()
        return {"token_ttl": self.token_ttl, "last_page_token": self.last_page_token}

    # --- control API over HTTP -----------------------------------------------------------

    @staticmethod
    def _json(value: Any, status: int = 200) -> web.Response:
        return web.Response(body=dumps(value).encode(), status=status, content_type=JSON_TYPE)

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw.strip():
            body: Any = {}
        else:
            try:
                body = json.loads(raw)
            except ValueError:
                raise ControlError(400, "the body must be JSON") from None
        if not isinstance(body, dict):
            raise ControlError(400, "the body must be a JSON object")
        body.update({k: v for k, v in request.query.items() if k not in body})
        return body

    async def _run(self, request: web.Request, fn: Callable[[dict[str, Any]], Any]) -> web.Response:
        try:
            body = await self._body(request)
            result = fn(body)
        except ControlError as exc:
            return self._json({"error": str(exc)}, exc.status)
        except KeyError as exc:
            return self._json({"error": str(exc.args[0]) if exc.args else "not found"}, 404)
        except (ValueError, TypeError) as exc:
            return self._json({"error": str(exc)}, 400)
        return self._json(result)

    async def _c_health(self, request: web.Request) -> web.Response:
        return self._json({"ok": True})

    async def _c_clock(self, request: web.Request) -> web.Response:
        """Where the simulator's clock is, for a client that times events against it."""
        return self._json({"elapsed": self.elapsed(), "timeline": self.timeline_time()})

    async def _c_set(self, request: web.Request) -> web.Response:
        def fn(body: dict[str, Any]) -> Any:
            values = body.get("set") or {}
            remove = body.get("remove") or []
            if not isinstance(values, dict) or not isinstance(remove, list):
                raise ValueError("set must be an object and remove a list of paths")
            self.set_fields(_req(body, "venue"), _req(body, "account"), values, remove)
            return {"ok": True}

        return await self._run(request, fn)

    async def _c_add_account(self, request: web.Request) -> web.Response:
        def fn(body: dict[str, Any]) -> Any:
            values = body.get("set") or {}
            if not isinstance(values, dict):
                raise ValueError("set must be an object")
            self.add_account(
                _req(body, "venue"),
                _req(body, "id"),
                template=body.get("template"),
                status=body.get("status"),
                values=values,
                remove=body.get("remove") or [],
                display_name=body.get("display_name"),
            )
            return {"ok": True}

        return await self._run(request, fn)

    async def _c_remove_account(self, request: web.Request) -> web.Response:
        def fn(body: dict[str, Any]) -> Any:
            if not self.remove_account(_req(body, "venue"), _req(body, "id")):
                raise KeyError(f"no {body['venue']} account {body['id']!r}")
            return {"ok": True}

        return await self._run(request, fn)

    async def _c_list_accounts(self, request: web.Request) -> web.Response:
        return await self._run(request, lambda _: self.account_ids(request.match_info["venue"]))

    async def _c_balance(self, request: web.Request) -> web.Response:
        return await self._run(
            request, lambda body: self.balance(_req(body, "venue"), _req(body, "account"))
        )

    async def _c_faults(self, request: web.Request) -> web.Response:
        return self._json(self.faults())

    async def _c_add_fault(self, request: web.Request) -> web.Response:
        def fn(body: dict[str, Any]) -> Any:
            try:
                return {"id": self.add_fault(body)}
            except FaultSpecError as exc:
                raise ControlError(400, str(exc)) from None

        return await self._run(request, fn)

    async def _c_clear_faults(self, request: web.Request) -> web.Response:
        self.clear_faults()
        return self._json({"ok": True})

    async def _c_remove_fault(self, request: web.Request) -> web.Response:
        fault_id = request.match_info["fault_id"]
        if not self.remove_fault(fault_id):
            return self._json({"error": f"no fault {fault_id!r}"}, 404)
        return self._json({"ok": True})

    async def _c_requests(self, request: web.Request) -> web.Response:
        q = request.query
        since = q.get("since")
        try:
            since_value = float(since) if since else None
        except ValueError:
            return self._json({"error": "since must be a number"}, 400)
        found = self.requests(
            q.get("venue") or None, q.get("account") or None, q.get("endpoint") or None, since_value
        )
        return self._json(found)

    async def _c_clear_requests(self, request: web.Request) -> web.Response:
        self.clear_requests()
        return self._json({"ok": True})

    async def _c_expire_tokens(self, request: web.Request) -> web.Response:
        self.expire_tokens()
        return self._json({"ok": True})

    async def _c_config(self, request: web.Request) -> web.Response:
        return self._json(self.configure())

    async def _c_configure(self, request: web.Request) -> web.Response:
        def fn(body: dict[str, Any]) -> Any:
            unknown = set(body) - {"token_ttl", "last_page_token", "api_keys"}
            if unknown:
                raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
            return self.configure(
                token_ttl=body.get("token_ttl"),
                last_page_token=body.get("last_page_token"),
                api_keys=body.get("api_keys"),
            )

        return await self._run(request, fn)


def _req(body: Mapping[str, Any], key: str) -> Any:
    if body.get(key) in (None, ""):
        raise ControlError(400, f"missing {key!r}")
    return body[key]


__all__ = ["ControlError", "Simulator"]
