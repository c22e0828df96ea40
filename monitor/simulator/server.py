"""The venue simulator: every venue kind's fake API from one aiohttp server.

    /clearstreet/v1/accounts[/{id}/balances]         Clear Street Trading API (clearstreet_fake.py)
    /polymarket/oauth/token                          Polymarket's auth0 token endpoint
    /polymarket/v1/...                               Polymarket Exchange API (polymarket_fake.py)
    /<kind>/...                                      a plugged-in kind's fake (fakes.py)
    /_sim/...                                        control API (JSON)

The simulator owns what is common: the scenario's timeline, faults, the request log and
the control API; each venue's fake (`fakes.VenueFake`) owns its accounts and endpoints.

Bodies are computed per request from each account's template, overrides and timeline;
see monitor/simulator/README.md.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from aiohttp import web

from monitor.simulator.clearstreet_fake import ClearStreetFake
from monitor.simulator.fakes import (
    JSON_TYPE,
    AccountsFake,
    Handler,
    Route,
    VenueFake,
    registered_fakes,
)
from monitor.simulator.faults import Fault, FaultSet, FaultSpecError, parse_fault
from monitor.simulator.polymarket_fake import PolymarketFake
from monitor.simulator.scenario import (
    LAST_PAGE_TOKEN,
    Scenario,
    TimelineChange,
)
from monitor.simulator.templates import (
    MISSING,
    FieldKinds,
    FieldPath,
    dumps,
    mutate,
    split_path,
    wire_value,
)
from monitor.simulator.values import Account, Event, RampEvent, SetEvent, WalkEvent

CS: Final = "clearstreet"
PM: Final = "polymarket"

Produce = Callable[[], tuple[int, bytes]]
Targets = Callable[[Any], list[Any]]


class ControlError(Exception):
    """A control call that cannot be done; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Simulator:
    """Both venues' APIs, driven by a Scenario, on one port."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        clock: Callable[[], float] = time.time,
        max_requests: int = 100_000,
        fakes: Iterable[VenueFake] = (),
    ) -> None:
        self.scenario = scenario
        self.fakes: dict[str, VenueFake] = {}  # every venue kind's fake, by kind
        self.clock = clock
        self._t0 = clock()
        self._seq = itertools.count()
        self._faults = FaultSet()
        self._log: deque[tuple[Any, ...]] = deque(maxlen=max_requests)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._host = "127.0.0.1"
        self.clearstreet = ClearStreetFake(self)
        self.polymarket = PolymarketFake(self)
        self._builtin: dict[str, AccountsFake] = {CS: self.clearstreet, PM: self.polymarket}
        self._timeline: dict[tuple[str, str], list[tuple[FieldPath, Event]]] = {}
        # a looping scenario's timeline faults: the cycle they belong to, and its copies
        self._fault_cycle = 0
        self._cycle_faults: list[Fault] = []
        self._build()
        self.fakes.update(self._builtin)
        # other venue kinds' fakes (monitor/simulator/fakes.py)
        self.fakes.update((f.kind, f) for f in registered_fakes())
        self.fakes.update((f.kind, f) for f in fakes)

    # --- construction ------------------------------------------------------------------

    def _build(self) -> None:
        scenario = self.scenario
        for change in scenario.timeline:
            self._timeline.setdefault((change.venue, change.account), []).extend(
                self._events(change)
            )
        for fake in self._builtin.values():
            fake.build()
        self._arm_timeline_faults(0)

    @staticmethod
    def patch(
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
        kinds = self._builtin[change.venue].field_kinds
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

    def next_seq(self) -> int:
        """The order of a change among all changes (a later one wins at the same time)."""
        return next(self._seq)

    def attach(self, venue: str, account: Account) -> None:
        """Give a new account of `venue` its timeline events."""
        for path, event in self._timeline.get((venue, account.id), ()):
            account.add_event(path, event)

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
        for fake in self.fakes.values():
            for route in fake.routes():
                handler = route.handler if route.logged else self._fake_handler(fake, route)
                r.add_route(route.method, f"/{fake.kind}{route.path}", handler)
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

    def url_of(self, kind: str) -> str:
        """The base_url of venue kind `kind` here."""
        return f"{self.base_url}/{kind}"

    # --- serving -----------------------------------------------------------------------

    def _fake_handler(self, fake: VenueFake, route: Route) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            received = self.clock()
            response = await route.handler(request)
            account = request.match_info.get("account_id")
            rid = response.headers.get("x-request-id") or uuid.uuid4().hex
            self._log.append(
                (
                    received,
                    request.method,
                    request.path,
                    fake.kind,
                    route.endpoint,
                    account,
                    response.status,
                    rid,
                )
            )
            return response

        return handle

    async def serve(
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
            else:
                body = self.fakes[venue].error_body(status, fault.message, request_id, endpoint)
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

    # --- Python control API --------------------------------------------------------------

    def _venue(self, venue: str) -> AccountsFake:
        if venue not in self._builtin:
            others = "".join(f", {kind}" for kind in self.fakes if kind not in self._builtin)
            raise ValueError(f"venue must be {CS} or {PM}{others}, got {venue!r}")
        return self._builtin[venue]

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
        if venue not in self.fakes:
            self._venue(venue)  # the error naming the venues
        self.fakes[venue].set_fields(str(account), values or {}, remove)

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
        self._venue(venue).add_account(
            account_id,
            template=template,
            status=status,
            values=values,
            remove=remove,
            display_name=display_name,
        )

    def remove_account(self, venue: str, account_id: str | int) -> bool:
        """Remove an account; False when there was none."""
        return self._venue(venue).remove_account(account_id)

    def account_ids(self, venue: str) -> list[str]:
        if venue in self.fakes:
            return self.fakes[venue].account_ids()
        return self._venue(venue).account_ids()

    def balance(self, venue: str, account_id: str | int) -> dict[str, Any]:
        """The body an account's balance request gets now (Clear Street: `data`)."""
        fake = self._venue(venue)
        return fake.balance(fake.account(account_id))

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
        self.polymarket.expire_tokens()

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
            self.polymarket.token_ttl = float(token_ttl)
        if last_page_token is not None:
            if last_page_token not in LAST_PAGE_TOKEN:
                raise ValueError(f"last_page_token must be one of {', '.join(LAST_PAGE_TOKEN)}")
            self.clearstreet.last_page_token = last_page_token
        if api_keys is not None:
            keys = list(api_keys)
            if not all(isinstance(k, str) and k for k in keys):
                raise ValueError("api_keys must be non-empty strings")
            self.clearstreet.set_literal_keys(keys)
        return {
            "token_ttl": self.polymarket.token_ttl,
            "last_page_token": self.clearstreet.last_page_token,
        }

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
