"""Alertmanager's HTTP API v2, the part on-call tools speak: silences, alerts, status.

So that `amtool --alertmanager.url=http://riskmon:9817 silence add|query|expire` and
`alert query` work against riskmon (SPEC "Silences"). Routes of the daemon's own app
(`add_routes`); the daemon implements `AlertmanagerSource`:

- `GET /api/v2/silences[?filter=MATCHER...]`: `[gettableSilence]`;
- `POST /api/v2/silences`: a `postableSilence` (with `id`: update that silence);
  200 `{"silenceID": "..."}`, 400 with the reason as text (as Alertmanager answers),
  503 when the state database refuses to save it (a full disk);
- `GET /api/v2/silence/{id}`: the `gettableSilence`, 404 when unknown;
- `DELETE /api/v2/silence/{id}`: expires it; 200, 404 when unknown;
- `GET /api/v2/alerts[?active=&silenced=&inhibited=&unprocessed=&filter=...]`: the
  firing alerts as `[gettableAlert]`, `status.state` `active` or `suppressed` with
  `silencedBy` and `inhibitedBy` (pending alerts are not Alertmanager alerts yet);
- `GET /api/v2/status`: enough of `alertmanagerStatus` for amtool.
"""

from __future__ import annotations

import json
from typing import Any, Final, Protocol

from aiohttp import web

from monitor import __version__, schema
from monitor.engine.lifecycle import Alert
from monitor.engine.suppress import alert_labels
from monitor.publish.events import rfc3339
from monitor.silences import SilenceError, SilenceNotSaved

__all__ = ["AlertmanagerSource", "add_routes", "alertmanager_alert", "alertmanager_status"]

#: How far ahead a firing alert's `endsAt` lies, as Prometheus sets it (4 x its 1 min
#: resend interval): Alertmanager's own reading of "still firing".
FIRING_ENDS_AFTER: Final = 240.0
RECEIVER: Final = "riskmon"  # the one receiver riskmon's alerts go to: its MQTT events


def alertmanager_alert(alert: Alert, now: float) -> dict[str, Any]:
    """A firing alert as a `gettableAlert`."""
    updated = alert.last_evaluated_at or alert.fired_at or now
    return {
        "labels": alert_labels(alert),
        "annotations": dict(alert.annotations),
        "startsAt": rfc3339(alert.active_at if alert.active_at is not None else now),
        "endsAt": rfc3339(now + FIRING_ENDS_AFTER),
        "updatedAt": rfc3339(updated),
        "fingerprint": alert.fingerprint,
        "receivers": [{"name": RECEIVER}],
        "status": {
            "state": "suppressed" if alert.suppressed else "active",
            "silencedBy": list(alert.silenced_by),
            "inhibitedBy": list(alert.inhibited_by),
        },
    }


def alertmanager_status(instance: str, started_at: float) -> dict[str, Any]:
    """An `alertmanagerStatus`: riskmon is one instance, no cluster."""
    return {
        "cluster": {"name": instance, "status": "disabled", "peers": []},
        "versionInfo": {
            "version": __version__,
            "branch": "",
            "revision": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "riskmon (Python)",
        },
        "config": {"original": ""},
        "uptime": rfc3339(started_at),
    }


class AlertmanagerSource(Protocol):
    def silence_list(self) -> list[dict[str, Any]]:
        """Every silence as a `gettableSilence`."""
        ...

    def silence_get(self, silence_id: str) -> dict[str, Any] | None: ...

    def silence_add(self, data: Any) -> str:
        """Create (or update) a silence; its id. SilenceError when it is refused."""
        ...

    def silence_expire(self, silence_id: str) -> bool:
        """Expire a silence; False when there is none. SilenceError if already expired."""
        ...

    def v2_alerts(self) -> list[dict[str, Any]]:
        """The firing alerts as `gettableAlert`s."""
        ...

    def v2_status(self) -> dict[str, Any]: ...


_SOURCE = web.AppKey["AlertmanagerSource"]("riskmon_alertmanager_source")


def add_routes(app: web.Application, source: AlertmanagerSource) -> None:
    app[_SOURCE] = source
    app.router.add_get("/api/v2/silences", _silences)
    app.router.add_post("/api/v2/silences", _post_silence)
    app.router.add_get("/api/v2/silence/{id}", _silence)
    app.router.add_delete("/api/v2/silence/{id}", _delete_silence)
    app.router.add_get("/api/v2/alerts", _alerts)
    app.router.add_get("/api/v2/status", _status)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data, ensure_ascii=False).encode("utf-8"),
        status=status,
        content_type="application/json",
    )


def _refused(message: str, status: int = 400) -> web.Response:
    # Alertmanager answers errors as a JSON string, which amtool prints.
    return _json(message, status)


def _filters(request: web.Request) -> list[schema.Matcher]:
    """The `filter` parameters: matchers such as `alertname="X"` (braces allowed)."""
    found: list[schema.Matcher] = []
    for raw in request.query.getall("filter", []):
        text = raw.strip()
        if text.startswith("{") and text.endswith("}"):
            text = text[1:-1]
        for part in (p for p in text.split(",") if p.strip()):
            try:
                found.append(schema.parse_matcher(part))
            except schema.Invalid as exc:
                raise web.HTTPBadRequest(
                    text=json.dumps(f"bad filter {raw!r}: {exc}"), content_type="application/json"
                ) from None
    return found


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "true").lower()
    if value not in ("true", "false"):
        raise web.HTTPBadRequest(
            text=json.dumps(f"{name} must be true or false"), content_type="application/json"
        )
    return value == "true"


async def _silences(request: web.Request) -> web.Response:
    wanted = _filters(request)
    found = []
    for silence in request.app[_SOURCE].silence_list():
        # as Alertmanager: the filter matches the silence's equality matchers as labels
        labels = {
            m["name"]: m["value"]
            for m in silence["matchers"]
            if m.get("isEqual", True) and not m["isRegex"]
        }
        if all(m.matches(labels) for m in wanted):
            found.append(silence)
    return _json(found)


async def _post_silence(request: web.Request) -> web.Response:
    try:
        data = await request.json()
    except ValueError:
        return _refused("the body is not JSON")
    try:
        silence_id = request.app[_SOURCE].silence_add(data)
    except SilenceError as exc:
        return _refused(str(exc))
    except SilenceNotSaved as exc:
        return _refused(f"the silence could not be saved: {exc}", 503)
    return _json({"silenceID": silence_id})


async def _silence(request: web.Request) -> web.Response:
    found = request.app[_SOURCE].silence_get(request.match_info["id"])
    if found is None:
        return _refused("silence not found", 404)
    return _json(found)


async def _delete_silence(request: web.Request) -> web.Response:
    try:
        if not request.app[_SOURCE].silence_expire(request.match_info["id"]):
            return _refused("silence not found", 404)
    except SilenceError as exc:
        return _refused(str(exc))
    except SilenceNotSaved as exc:
        return _refused(f"the silence could not be saved: {exc}", 503)
    return web.Response(status=200)


async def _alerts(request: web.Request) -> web.Response:
    wanted = _filters(request)
    active, silenced = _flag(request, "active"), _flag(request, "silenced")
    inhibited = _flag(request, "inhibited")
    _flag(request, "unprocessed")  # riskmon has no unprocessed alerts
    found = []
    for alert in request.app[_SOURCE].v2_alerts():
        status = alert["status"]
        if status["state"] == "active" and not active:
            continue
        if status["silencedBy"] and not silenced:
            continue
        if status["inhibitedBy"] and not inhibited:
            continue
        if all(m.matches(alert["labels"]) for m in wanted):
            found.append(alert)
    return _json(found)


async def _status(request: web.Request) -> web.Response:
    return _json(request.app[_SOURCE].v2_status())
