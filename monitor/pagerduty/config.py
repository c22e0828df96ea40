"""The bridge's own YAML config (`riskmon pagerduty -c pagerduty.yaml`), validated.

It reads like the daemon's config and is checked by the same machinery
(`monitor.config.checking`): every problem as `path:line:col: message`, unknown keys with
a "did you mean", `${VAR}` and `${VAR:-default}` in text values, Prometheus durations,
paths relative to the file. A routing key comes from a file (`routing_key_file`,
re-read when it changes) or an environment variable (`routing_key_env`), never from
the file itself, and no message ever shows one. The format is in
`monitor/pagerduty/__init__.py` and `examples/pagerduty.yaml`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from monitor.config.checking import Checker, Section
from monitor.config.model import MqttConfig
from monitor.config.secret import Secret
from monitor.infra.backoff import Backoff
from monitor.schema import ENV_NAME, LABEL_NAME
from monitor.yamlsource import KeyPath, Location, SourceError, parse_yaml, read_source

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_EVENTS_URL",
    "SEVERITIES",
    "Backoff",
    "Match",
    "PagerDutyConfig",
    "RateLimit",
    "Route",
    "load_pagerduty_config",
    "parse_pagerduty_config",
]

DEFAULT_EVENTS_URL: Final = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_CLIENT_ID: Final = "riskmon-pagerduty"
SEVERITIES: Final = ("critical", "error", "warning", "info")

_TOP_KEYS: Final = (
    "mqtt",
    "events_url",
    "state_dir",
    "routes",
    "rate_limit",
    "backoff",
    "timeout",
    "session_expiry",
    "dedup_retention",
)
_ROUTE_KEYS: Final = ("name", "match", "routing_key_file", "routing_key_env")
_MATCH_KEYS: Final = ("severity", "labels")
_RATE_KEYS: Final = ("events_per_minute", "burst")
_BACKOFF_KEYS: Final = ("initial", "max")
_ROUTE_NAME: Final = re.compile(r"[A-Za-z0-9_-]+")
_NO_LITERAL_KEY: Final = {
    "routing_key": "routing_key: a routing key is not written in the config; use "
    "routing_key_file (re-read when it changes) or routing_key_env (an environment variable)",
}
_MAX_SESSION_EXPIRY: Final = 0xFFFFFFFE  # seconds; MQTT 5's 0xFFFFFFFF means "never"


@dataclass(frozen=True, slots=True)
class Match:
    """What a route takes: every condition given must hold (an absent one holds).

    `severities` is the set of severities taken (None: any); `labels` maps a label
    name to the values taken (the event must carry the label with one of them)."""

    severities: frozenset[str] | None = None
    labels: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def matches(self, severity: str, labels: Mapping[str, str]) -> bool:
        if self.severities is not None and severity not in self.severities:
            return False
        return all(labels.get(name) in values for name, values in self.labels.items())


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of `routes`. `key_id` names where the key comes from (`file PATH` or
    `env VAR`): routes with the same `key_id` share one queue and one rate limit, as
    PagerDuty limits per integration key."""

    name: str
    match: Match | None  # None: every event (a catch-all, the default route)
    routing_key: Secret
    key_id: str

    def matches(self, severity: str, labels: Mapping[str, str]) -> bool:
        return self.match is None or self.match.matches(severity, labels)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket per routing key: `burst` requests at once, refilled at
    `events_per_minute`. PagerDuty allows 120 events per minute per integration key;
    the defaults (100 per minute, bursts of 20) never send more than 120 in any 60 s
    (burst + 60 s of refill), retries included."""

    events_per_minute: float = 100.0
    burst: int = 20

    @property
    def per_second(self) -> float:
        return self.events_per_minute / 60.0


#: Retries of 429, 5xx and network errors: exponential from 1 s, doubling, capped at
#: 2 minutes, with jitter; a longer Retry-After wins (up to 5 minutes).
DEFAULT_BACKOFF: Final = Backoff(initial=1.0, max=120.0)


@dataclass(frozen=True, slots=True)
class PagerDutyConfig:
    source: Path
    mqtt: MqttConfig
    state_dir: Path
    routes: tuple[Route, ...]
    events_url: str = DEFAULT_EVENTS_URL
    rate_limit: RateLimit = RateLimit()
    backoff: Backoff = DEFAULT_BACKOFF
    timeout: float = 10.0  # per request to the Events API
    session_expiry: float = 7 * 86400.0  # how long the broker keeps our queue offline
    dedup_retention: float = 7 * 86400.0  # how long a seen event_id is remembered

    def route_for(self, severity: str, labels: Mapping[str, str]) -> Route | None:
        """The first route that takes the event, or None."""
        for route in self.routes:
            if route.matches(severity, labels):
                return route
        return None


def load_pagerduty_config(
    path: str | Path, *, environ: Mapping[str, str] | None = None
) -> PagerDutyConfig:
    """Read, check and build the bridge config at `path`; SourceError lists every problem."""
    name = str(path)
    text = read_source(path)
    source = Path(os.path.normpath(Path(path).absolute()))
    return _parse(text, name, source, source.parent, environ)


def parse_pagerduty_config(
    text: str,
    file: str,
    *,
    base_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> PagerDutyConfig:
    """Check and build a bridge config from YAML text; `file` names it in messages."""
    return _parse(text, file, Path(file), base_dir, environ)


def _parse(
    text: str, file: str, source: Path, base_dir: Path, environ: Mapping[str, str] | None
) -> PagerDutyConfig:
    doc = parse_yaml(text, file)
    env = os.environ if environ is None else environ
    checker = Checker(doc, text, Path(base_dir).absolute(), env)
    config = _build(checker, source)
    if checker.problems:
        unique = dict.fromkeys(checker.problems)
        raise SourceError(sorted(unique, key=lambda p: (p.location.line, p.location.col)))
    return config


# -- building ------------------------------------------------------------------------------


def _build(c: Checker, source: Path) -> PagerDutyConfig:
    value = c.value
    mqtt = MqttConfig(client_id=DEFAULT_CLIENT_ID)
    if not isinstance(value, dict):
        what = "the config file is empty" if value is None else "expected a mapping of settings"
        c.error((), f"{what}; it needs at least mqtt and routes")
        return PagerDutyConfig(source, mqtt, c.base_dir / "state", ())
    top = c.section((), value, "the pagerduty config", _TOP_KEYS, foreign=_NO_LITERAL_KEY)
    mqtt = c.mqtt(top)
    if mqtt.url == "embedded":
        url = (*top.at("mqtt"), "url")
        c.error(url, "mqtt url: the bridge needs a broker's mqtt:// or mqtts:// url")
    if mqtt.client_id is None:
        mqtt = dataclasses.replace(mqtt, client_id=DEFAULT_CLIENT_ID)
    events_url = c.field(top, "events_url", DEFAULT_EVENTS_URL, c.exact_url)
    state_dir = c.field(top, "state_dir", c.base_dir / "state", c.path)
    timeout = c.field(top, "timeout", 10.0, c.duration)
    session_expiry = c.field(top, "session_expiry", 7 * 86400.0, _session_expiry(c))
    retention = c.field(top, "dedup_retention", 7 * 86400.0, c.duration)
    rate_limit = _rate_limit(c, top)
    backoff = _backoff(c, top)
    routes: tuple[Route, ...] = ()
    if c.require(top, "routes"):
        routes = _routes(c, top.at("routes"), top.data["routes"])
    return PagerDutyConfig(
        source=source,
        mqtt=mqtt,
        state_dir=state_dir,
        routes=routes,
        events_url=events_url,
        rate_limit=rate_limit,
        backoff=backoff,
        timeout=timeout,
        session_expiry=session_expiry,
        dedup_retention=retention,
    )


def _session_expiry(c: Checker) -> Any:
    def check(path: KeyPath, value: Any) -> float | None:
        seconds = c.duration(path, value)
        if seconds is not None and seconds > _MAX_SESSION_EXPIRY:
            c.error(path, "session_expiry is too long for MQTT (at most about 136 years)")
            return None
        return seconds

    return check


def _rate_limit(c: Checker, top: Section) -> RateLimit:
    default = RateLimit()
    s = c.section(top.at("rate_limit"), top.data.get("rate_limit"), "rate_limit", _RATE_KEYS)
    per_minute = c.field(s, "events_per_minute", default.events_per_minute, c.positive_number)
    burst = c.field(s, "burst", default.burst, lambda p, v: c.integer(p, v, minimum=1))
    return RateLimit(events_per_minute=per_minute, burst=burst)


def _backoff(c: Checker, top: Section) -> Backoff:
    default = DEFAULT_BACKOFF
    s = c.section(top.at("backoff"), top.data.get("backoff"), "backoff", _BACKOFF_KEYS)
    initial = c.field(s, "initial", default.initial, c.duration)
    longest = c.field(s, "max", default.max, c.duration)
    if longest < initial:
        c.error(s.at("max"), "backoff max must not be shorter than initial", key=True)
    return Backoff(initial=initial, max=max(initial, longest))


def _routes(c: Checker, path: KeyPath, value: Any) -> tuple[Route, ...]:
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else c.show(path, value)
        c.error(path, f"routes: expected a list of routes (at least one), got {got}")
        return ()
    routes: list[Route] = []
    names: dict[str, Location] = {}
    catch_all: Location | None = None
    for i, item in enumerate(value):
        item_path = (*path, i)
        if catch_all is not None:
            c.error(
                item_path,
                f"this route is never used: the route without match at line {catch_all.line} "
                "takes every event; put the catch-all route last",
            )
        route = _route(c, item_path, item, names)
        if route is None:
            continue
        if route.match is None and catch_all is None:
            catch_all = c.doc.at(item_path)
        routes.append(route)
    return tuple(routes)


def _route(c: Checker, path: KeyPath, value: Any, names: dict[str, Location]) -> Route | None:
    index = path[-1]
    if not isinstance(value, dict):
        c.error(
            path,
            "expected a route (a mapping with match and routing_key_file or routing_key_env), "
            f"got {c.show(path, value)}",
        )
        return None
    where = f"routes[{index}]"
    s = c.section(path, value, where, _ROUTE_KEYS, foreign=_NO_LITERAL_KEY)
    before = len(c.problems)
    name = c.field(s, "name", f"routes[{index}]", lambda p, v: _route_name(c, p, v, names))
    if s.has("name") and name != where:
        where = f"route {name!r}"
    match = None
    if s.has("match"):
        match = _match(c, s.at("match"), s.data["match"], where)
    key: Secret | None = None
    key_id = ""
    if s.has("routing_key_file") and s.has("routing_key_env"):
        c.error(
            s.at("routing_key_env"),
            "give routing_key_file or routing_key_env, not both",
            key=True,
        )
    elif s.has("routing_key_file"):
        key = c.field(
            s,
            "routing_key_file",
            None,
            lambda p, v: c.secret_file(p, v, f"{where} routing_key_file"),
        )
        if key is not None:
            key_id = f"file {key.path}"
    elif s.has("routing_key_env"):
        found = c.field(s, "routing_key_env", None, lambda p, v: _env_key(c, p, v, where))
        if found is not None:
            key, key_id = found
    elif "routing_key" not in value:  # (that one has its own message)
        c.error(path, f"missing routing_key_file (or routing_key_env) in {where}")
    if key is None or len(c.problems) > before:
        return None
    return Route(name=name, match=match, routing_key=key, key_id=key_id)


def _route_name(c: Checker, path: KeyPath, value: Any, names: dict[str, Location]) -> str | None:
    text = c.string(path, value)
    if text is None:
        return None
    if not _ROUTE_NAME.fullmatch(text):
        c.error(path, f"route name {c.show(path, text)} may only contain letters, digits, _ and -")
        return None
    if text in names:
        c.error(path, f"duplicate route name {text!r} (first at line {names[text].line})")
        return None
    names[text] = c.doc.at(path)
    return text


def _env_key(c: Checker, path: KeyPath, value: Any, where: str) -> tuple[Secret, str] | None:
    name = c.string(path, value)
    if name is None:
        return None
    if not ENV_NAME.fullmatch(name):
        c.error(
            path,
            f"routing_key_env: expected the name of an environment variable such as "
            f"PD_ROUTING_KEY, got {c.show(path, name)}",
        )
        return None
    found = c.environ.get(name, "").strip()
    if not found:
        c.error(path, f"environment variable {name} (the routing key of {where}) is not set")
        return None
    return Secret.literal(f"{where} routing_key_env {name}", found), f"env {name}"


def _match(c: Checker, path: KeyPath, value: Any, where: str) -> Match | None:
    s = c.section(path, value, f"match of {where}", _MATCH_KEYS)
    if not s.data:
        c.error(path, f"match of {where} is empty: give severity or labels, or drop match")
        return None
    severities = c.field(s, "severity", None, lambda p, v: _severities(c, p, v))
    labels: dict[str, frozenset[str]] = c.field(s, "labels", {}, lambda p, v: _labels(c, p, v))
    return Match(severities=severities, labels=labels)


def _texts(c: Checker, path: KeyPath, value: Any) -> list[tuple[KeyPath, str]] | None:
    """One text or a non-empty list of texts, each with its place."""
    items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
    if not items:
        c.error(path, "expected one value or a non-empty list of values, got an empty list")
        return None
    result: list[tuple[KeyPath, str]] = []
    for i, item in items:
        item_path = path if i is None else (*path, i)
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        text = c.string(item_path, item)
        if text is not None:
            result.append((item_path, text))
    return result


def _severities(c: Checker, path: KeyPath, value: Any) -> frozenset[str] | None:
    items = _texts(c, path, value)
    if items is None:
        return None
    result: set[str] = set()
    for item_path, text in items:
        if text not in SEVERITIES:
            c.error(
                item_path,
                f"unknown severity {c.show(item_path, text)} (known: {', '.join(SEVERITIES)})",
            )
            continue
        result.add(text)
    return frozenset(result)


def _labels(c: Checker, path: KeyPath, value: Any) -> dict[str, frozenset[str]] | None:
    if not isinstance(value, dict) or not value:
        c.error(
            path,
            "labels: expected a mapping of name: value (or name: [values]) such as "
            f"{{team: risk}}, got {c.show(path, value)}",
        )
        return None
    result: dict[str, frozenset[str]] = {}
    for name, item in value.items():
        item_path = (*path, name)
        if not LABEL_NAME.fullmatch(name):
            c.error(item_path, f"invalid label name {name!r}", key=True)
            continue
        if item_path in c.failed:
            continue
        items = _texts(c, item_path, item)
        if items:
            result[name] = frozenset(text for _, text in items)
    return result
