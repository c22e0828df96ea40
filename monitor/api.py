"""The HTTP side: /metrics, /healthz, /readyz, /api/v1/alerts, /accounts and /status.

Served by aiohttp.web (already a dependency for venue HTTP and the simulator) on the
daemon's own event loop: no second thread, no hand-written HTTP. The daemon implements
`ApiSource`; this module only turns its answers into HTTP responses. Bound to
127.0.0.1:9817 unless the config's `http.listen` says otherwise; HTTPS with `http.tls`
(`monitor.api_tls`); the bearer token and the rule on writes are a middleware over
every route (`monitor.api_auth`).

- `GET /metrics`: `ApiSource.metrics_text()`, text format 0.0.4; gzip when the client
  accepts it and the body is 1 KiB or more;
- `GET /healthz`: 200 `ok` while `health_problems()` is empty, else 503 `unhealthy` and
  a line `component: reason` for each problem;
- `GET /readyz`: `{"ready": bool, "checks": {name: bool}, "failed": [name]}`, 200 when
  every check holds, else 503;
- `GET /api/v1/alerts`: `{"alerts": [alert_json...]}`; filters `?venue=`, `?account=`,
  `?state=firing|pending`;
- `GET /api/v1/accounts`: `{"accounts": [account_json...]}`; filters `?venue=`,
  `?account=`;
- `GET /api/v1/status`: `status_json`: the config and rules in force, the last reload
  (when, whether it worked, and why not) and the warnings `riskmon check` would print;
- `GET /api/v1/history`: the journal (monitor/history), oldest first, a page at a time:
  `{"records": [...], "next_after": seq or null}`; filters `?since=` (RFC 3339 or a
  duration ago: `2h`), `?venue=`, `?account=`, `?kind=event|reload|silence|gap`,
  `?after=SEQ` (the previous page's `next_after`), `?limit=` (default 100, at most
  1,000); read from the database in a thread, on a connection of its own;
- `GET /`: a plain-text list of the above.

JSON bodies carry money as exact decimal strings (`"24000.00"`) and times as ISO 8601
UTC with milliseconds (`"2026-11-21T10:00:00.000Z"`), as the MQTT payloads do. A bad
query parameter gets 400 with `{"error": "..."}`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import ssl
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Protocol

from aiohttp import web

from monitor import schema
from monitor.api_auth import ApiAuth, auth_middleware
from monitor.engine.lifecycle import Alert
from monitor.engine.model import RuleSet
from monitor.history.reader import (
    MAX_PAGE,
    HistoryError,
    Query,
    open_journal,
    parse_since,
    read_page,
)
from monitor.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from monitor.poller import AccountState
from monitor.yamlsource import Problem

__all__ = [
    "DEFAULT_LISTEN",
    "METRICS_CONTENT_TYPE",
    "ApiSource",
    "AsyncHttpServer",
    "account_json",
    "alert_json",
    "create_app",
    "parse_listen",
    "start_http",
    "status_json",
]

DEFAULT_LISTEN: Final = "127.0.0.1:9817"
GZIP_MIN_BYTES: Final = 1024  # smaller bodies are sent as they are
_GZIP_IN_THREAD_BYTES: Final = 256 * 1024  # larger ones are compressed off the loop
_ALERT_STATES: Final = frozenset({"firing", "pending"})
_SOURCE_KEY: Final = web.AppKey["ApiSource"]("riskmon_api_source")
_HISTORY_KEY: Final = web.AppKey[Path]("riskmon_history_file")
HISTORY_PAGE: Final = 100  # records in a page of /api/v1/history unless ?limit= says
_HISTORY_KINDS: Final = frozenset({"event", "reload", "silence", "gap"})


class ApiSource(Protocol):
    """What the daemon answers the HTTP endpoints with."""

    def metrics_text(self) -> bytes:
        """The /metrics body (`Metrics.render()`)."""
        ...

    def health_problems(self) -> dict[str, str]:
        """What keeps riskmon from alerting now, by component (empty: healthy). The
        event loop is alive (answering proves it runs now); the daemon also checks that
        its periodic tick is not late, and the parts that can fail say so
        (`monitor.health`): `tick` (late or failing), `loop` (lagging past 5 s),
        `evaluation` (snapshots that could not be taken in), `task <name>` (a
        background task crashed and is not yet running steadily again), `outbox`."""
        ...

    def alive(self) -> bool:
        """The event loop turns and runs the periodic tick on time: what a restart can
        cure (/livez, for a liveness probe); unlike `health_problems`, a full disk or a
        failing part leaves it true, since restarting cures neither and would lose what
        riskmon holds in memory meanwhile."""
        ...

    def readiness(self) -> dict[str, bool]:
        """Named readiness checks: config loaded, first poll cycle done, MQTT connected."""
        ...

    def alerts(self) -> list[dict[str, Any]]:
        """The pending and firing alerts (`alert_json`)."""
        ...

    def accounts(self) -> list[dict[str, Any]]:
        """Every monitored account (`account_json`)."""
        ...

    def status(self) -> dict[str, Any]:
        """The config and rules in force and the last reload (`status_json`)."""
        ...


# -- JSON shapes ----------------------------------------------------------------------


def iso_time(at: float | None) -> str | None:
    """Epoch seconds as `2026-11-21T10:00:00.000Z`; None stays None."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def json_value(value: Any) -> Any:
    """A snapshot or parameter value for JSON: Decimals as exact strings, booleans,
    strings and None as they are, anything else as `str`."""
    if type(value) is Decimal:
        return str(value)
    if value is None or isinstance(value, bool | str):
        return value
    return str(value)


def account_json(state: AccountState, now: float, stale_after: float) -> dict[str, Any]:
    """One account for /api/v1/accounts: its poll health, staleness and latest snapshot.

    `now` is wall-clock seconds since the epoch. `up` is None before the first poll
    ended. `snapshot` is the last good one (kept while polls fail), its fields flat by
    their rule paths, scalars only (nested objects' leaves are there by path).
    """
    snapshot = state.last_snapshot
    error = state.last_error
    body: dict[str, Any] = {
        "venue": state.venue,
        "account": state.id,
        "venue_kind": snapshot.venue_kind if snapshot else None,
        "currency": snapshot.currency if snapshot else None,
        "labels": dict(state.account.labels),
        "params": {k: json_value(v) for k, v in state.account.params.items()},
        "discovered": state.discovered,
        "up": None if state.polls == 0 and error is None else error is None,
        "stale": state.is_stale(now, stale_after),
        "age_seconds": round(state.age(now), 3),
        "stale_after_seconds": stale_after,
        "last_success": iso_time(state.last_success),
        "last_attempt": iso_time(state.last_attempt),
        "polls": state.polls,
        "consecutive_failures": state.consecutive_failures,
        "last_error": None,
        "snapshot": None,
    }
    if error is not None:
        body["last_error"] = {
            "outcome": error.outcome,
            "type": type(error).__name__,
            "message": error.message,
            "status": error.status,
            "request_id": error.request_id,
        }
    if snapshot is not None:
        body["snapshot"] = {
            "taken_at": iso_time(snapshot.taken_at),
            "request_id": snapshot.request_id,
            "fields": {
                path: json_value(value)
                for path, value in snapshot.fields.items()
                if not isinstance(value, dict | list)
            },
        }
    return body


def alert_json(alert: Alert) -> dict[str, Any]:
    """One pending or firing alert for /api/v1/alerts; names as in the MQTT payload."""
    return {
        "alertname": alert.alertname,
        "state": alert.phase.value,
        "severity": alert.severity,
        "venue": alert.venue,
        "venue_kind": alert.venue_kind,
        "account": alert.account,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "values": alert.values,
        # what it fired with (its `values` move on with each evaluation); null while pending
        "firing_values": dict(alert.firing_values) if alert.fired_at is not None else None,
        "starts_at": iso_time(alert.active_at),
        "fired_at": iso_time(alert.fired_at),
        "keep_firing_since": iso_time(alert.keep_firing_since),
        "last_evaluated_at": iso_time(alert.last_evaluated_at),
        "fingerprint": alert.fingerprint,
        "rule": alert.rule_key,
        # as in the retained MQTT message: what keeps a firing alert from the pager
        "suppressed_by": (
            {"inhibited_by": list(alert.inhibited_by), "silenced_by": list(alert.silenced_by)}
            if alert.suppressed
            else None
        ),
    }


def status_json(
    *,
    config: str,
    started_at: float,
    last_reload_at: float,
    last_reload_successful: bool,
    last_reload_problems: Sequence[Problem],
    last_success_at: float | None,
    rules: RuleSet,
    warnings: Sequence[Problem],
) -> dict[str, Any]:
    """/api/v1/status: what runs, and what the last (re)load said about it. The last
    reload is the start until a SIGHUP or a changed rule file; `problems` are its errors
    when it failed (the running config and rules stayed); `warnings` are those of the
    running config and rules. Problems are `path:line:col: message` strings."""
    return {
        "config": {"path": config, "started_at": iso_time(started_at)},
        "rules": {
            "files": list(rules.files),
            "groups": len(rules.groups),
            "rules": len(rules.rules),
            "loaded_at": iso_time(last_success_at),
        },
        "last_reload": {
            "at": iso_time(last_reload_at),
            "successful": last_reload_successful,
            "problems": [_problem_text(p) for p in last_reload_problems],
        },
        "warnings": [_problem_text(p) for p in warnings],
    }


def _problem_text(problem: Problem) -> str:
    return f"{problem.location}: {problem.message}"


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


# -- responses ------------------------------------------------------------------------


def _accepts_gzip(request: web.Request) -> bool:
    """Whether Accept-Encoding admits gzip (`gzip`, `*`, without `q=0`)."""
    header = request.headers.get("Accept-Encoding", "")
    for item in header.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        match = re.search(r"q\s*=\s*([0-9.]+)", params)
        try:
            if match is None or float(match[1]) > 0:
                return True
        except ValueError:
            continue
    return False


def _gzip(body: bytes) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # level 1: ~650 MB/s, ~14x smaller
    return compressor.compress(body) + compressor.flush()


async def _respond(
    request: web.Request, body: bytes, content_type: str, status: int = 200
) -> web.Response:
    headers = {"Content-Type": content_type, "Cache-Control": "no-store"}
    if len(body) >= GZIP_MIN_BYTES:
        headers["Vary"] = "Accept-Encoding"
        if _accepts_gzip(request):
            if len(body) >= _GZIP_IN_THREAD_BYTES:
                body = await asyncio.get_running_loop().run_in_executor(None, _gzip, body)
            else:
                body = _gzip(body)
            headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, status=status, headers=headers)


async def _json(request: web.Request, data: Any, status: int = 200) -> web.Response:
    text = json.dumps(data, default=_json_default, ensure_ascii=False, separators=(",", ":"))
    return await _respond(request, text.encode(), "application/json; charset=utf-8", status)


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def _source(request: web.Request) -> ApiSource:
    return request.app[_SOURCE_KEY]


def _matches(item: Mapping[str, Any], filters: Mapping[str, str]) -> bool:
    return all(item.get(name) == wanted for name, wanted in filters.items())


def _filters(request: web.Request, names: tuple[str, ...]) -> dict[str, str]:
    return {name: request.query[name] for name in names if name in request.query}


# -- handlers -------------------------------------------------------------------------


async def _metrics(request: web.Request) -> web.Response:
    return await _respond(request, _source(request).metrics_text(), METRICS_CONTENT_TYPE)


async def _healthz(request: web.Request) -> web.Response:
    problems = _source(request).health_problems()
    if not problems:
        return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})
    lines = "".join(f"{name}: {reason}\n" for name, reason in sorted(problems.items()))
    return web.Response(
        text="unhealthy\n" + lines, status=503, headers={"Cache-Control": "no-store"}
    )


async def _livez(request: web.Request) -> web.Response:
    if _source(request).alive():
        return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})
    return web.Response(text="not alive\n", status=503, headers={"Cache-Control": "no-store"})


async def _readyz(request: web.Request) -> web.Response:
    checks = {name: bool(ok) for name, ok in _source(request).readiness().items()}
    failed = [name for name, ok in checks.items() if not ok]
    body = {"ready": not failed, "checks": checks, "failed": failed}
    return await _json(request, body, 503 if failed else 200)


async def _alerts(request: web.Request) -> web.Response:
    filters = _filters(request, ("venue", "account", "state"))
    if "state" in filters and filters["state"] not in _ALERT_STATES:
        return _bad_request(f"state must be firing or pending, not {filters['state']!r}")
    alerts = _source(request).alerts()
    if filters:
        alerts = [alert for alert in alerts if _matches(alert, filters)]
    return await _json(request, {"alerts": alerts})


async def _accounts(request: web.Request) -> web.Response:
    filters = _filters(request, ("venue", "account"))
    accounts = _source(request).accounts()
    if filters:
        accounts = [account for account in accounts if _matches(account, filters)]
    return await _json(request, {"accounts": accounts})


async def _status(request: web.Request) -> web.Response:
    return await _json(request, _source(request).status())


def _history_query(request: web.Request) -> Query | str:
    """The query of a /api/v1/history request, or why it is refused."""
    params = request.query
    since = params.get("since")
    if since is not None:
        try:
            since = parse_since(since)
        except ValueError as exc:
            return f"since: {exc}"
    kind = params.get("kind")
    if kind is not None and kind not in _HISTORY_KINDS:
        return f"kind must be one of {', '.join(sorted(_HISTORY_KINDS))}, not {kind!r}"
    numbers: dict[str, int] = {}
    for name, default, low, high in (
        ("after", 0, 0, None),
        ("limit", HISTORY_PAGE, 1, MAX_PAGE),
    ):
        text = params.get(name)
        try:
            number = default if text is None else int(text)
        except ValueError:
            return f"{name} must be a whole number, not {text!r}"
        if number < low or (high is not None and number > high):
            bound = f"from {low} to {high:,}" if high is not None else f"at least {low}"
            return f"{name} must be {bound}, not {number}"
        numbers[name] = number
    return Query(
        since=since,
        venue=params.get("venue"),
        account=params.get("account"),
        kind=kind,
        after=numbers["after"],
        limit=numbers["limit"],
    )


def _read_history(path: Path, query: Query) -> dict[str, Any]:
    """A page of the journal, `limit` records and whether more follow (`next_after`)."""
    limit = query.limit or HISTORY_PAGE
    db = open_journal(path)
    try:
        records = read_page(db, dataclasses.replace(query, limit=limit + 1))
    finally:
        db.close()
    more = len(records) > limit
    records = records[:limit]
    return {
        "records": [record.to_json() for record in records],
        "next_after": records[-1].seq if more else None,
    }


async def _history(request: web.Request) -> web.Response:
    query = _history_query(request)
    if isinstance(query, str):
        return _bad_request(query)
    try:
        page = await asyncio.to_thread(_read_history, request.app[_HISTORY_KEY], query)
    except HistoryError as exc:
        return web.json_response({"error": str(exc)}, status=500)
    return await _json(request, page)


_INDEX: Final = (
    b"riskmon\n\n/metrics            Prometheus metrics\n"
    b"/healthz            503 with the reasons while riskmon cannot alert\n"
    b"/livez              liveness: the event loop turns\n"
    b"/readyz             readiness (JSON)\n"
    b"/api/v1/alerts      pending and firing alerts (?venue= &account= &state=)\n"
    b"/api/v1/accounts    accounts, staleness and latest snapshot (?venue= &account=)\n"
    b"/api/v1/status      config and rules in force, last reload, warnings\n"
    b"/api/v1/history     the journal of events, silences and reloads (?since= &venue=\n"
    b"                    &account= &kind= &after= &limit=)\n"
)


async def _index(request: web.Request) -> web.Response:
    return web.Response(body=_INDEX, content_type="text/plain", charset="utf-8")


def create_app(
    source: ApiSource, auth: ApiAuth | None = None, *, history: Path | None = None
) -> web.Application:
    """The aiohttp application of every endpoint, answering from `source`; `auth`
    guards every route, those added to the app later too (`monitor.api_auth`); with
    `history` (the database holding the journal), /api/v1/history too."""
    app = web.Application(middlewares=[] if auth is None else [auth_middleware(auth)])
    app[_SOURCE_KEY] = source
    if history is not None:
        app[_HISTORY_KEY] = history
        app.router.add_get("/api/v1/history", _history)
    app.router.add_get("/", _index)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/livez", _livez)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/api/v1/alerts", _alerts)
    app.router.add_get("/api/v1/accounts", _accounts)
    app.router.add_get("/api/v1/status", _status)
    return app


# -- serving --------------------------------------------------------------------------


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) -> (host, port); an empty host is 127.0.0.1.

    ValueError (`schema.Invalid`) for anything else: the config's own check.
    """
    try:
        address = schema.listen_address(listen)
    except schema.Invalid as exc:
        raise schema.Invalid(f"listen: {exc}") from None
    return address.host, address.port


@dataclass(slots=True)
class AsyncHttpServer:
    """A running server: where it listens, and how to stop it."""

    host: str
    port: int
    _runner: web.AppRunner
    tls: bool = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening and end open connections (waiting at most ~1 s)."""
        await self._runner.cleanup()


async def start_http(
    app: web.Application, listen: str = DEFAULT_LISTEN, ssl_context: ssl.SSLContext | None = None
) -> AsyncHttpServer:
    """Serve `app` on the running loop at `listen` ("HOST:PORT"; port 0: a free port);
    HTTPS with `ssl_context`."""
    host, port = parse_listen(listen)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    return AsyncHttpServer(host, bound, runner, tls=ssl_context is not None)
