"""Build the validated `Config` from a YAML file, reporting every mistake at once.

Each problem points at the key or value it is about (`path:line:col: message`), unknown
keys come with the closest known one, and no message ever shows a secret: values that
took text from the environment are shown as the `${VAR}` written in the file, and the
secret fields (api_key, password, private_key) are never shown at all.

String scalars may use `${VAR}` (an environment variable; an error if it is unset),
`${VAR:-default}` (the default when VAR is unset or empty) and `$$` (a literal `$`); a
`$` followed by anything else is kept as it is. A value that came from the environment
is text, so where a number, duration or true/false is expected it is read from that
text (`max_concurrency: ${CS_CONCURRENCY}` works).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monitor import schema
from monitor.config.accounts import AccountChecker
from monitor.config.builtin_alerts import check_builtin_alerts
from monitor.config.checking import Section, describe_value
from monitor.config.http_section import check_http
from monitor.config.model import (
    HISTORY_RETENTION,
    AccountConfig,
    AlertmanagerConfig,
    Config,
    DiscoveryConfig,
    HttpConfig,
    MqttConfig,
    ParamValue,
    VenueConfig,
)
from monitor.config.venue_transport import TRANSPORT_KEYS, check_venue_transport
from monitor.durations import format_duration
from monitor.schedule import BudgetArithmetic
from monitor.venues import registry
from monitor.yamlsource import (
    KeyPath,
    Location,
    SourceError,
    YamlDocument,
    parse_yaml,
    read_source,
)

__all__ = ["load_config", "parse_config"]

_TOP_KEYS = (
    "instance",
    "state_dir",
    "http",
    "mqtt",
    "rules",
    "stale_after",
    "venues",
    "record_snapshots",
    "builtin_alerts",
    "history_retention",
    "alertmanagers",
)
_ALERTMANAGER_KEYS = ("url", "bearer_token_file", "timeout", "tls", "resend_interval")
_VENUE_KEYS = (
    "name",
    "kind",
    "base_url",
    "poll_interval",
    "max_poll_interval",
    "timeout",
    "max_concurrency",
    "max_requests_per_second",
    "stale_after",
    "max_response_bytes",
    "accounts",
    *TRANSPORT_KEYS,
)
_DISCOVER_KEYS = ("discover", "interval", "statuses", "labels", "params")

_VENUE_NAME = re.compile(r"[A-Za-z0-9_-]+")
_INSTANCE = re.compile(r"[^\s/+#]+")
# defaults, read from instances: slotted dataclasses keep no defaults on the class
_HTTP = HttpConfig()
_MQTT = MqttConfig()
_DISCOVERY = DiscoveryConfig()


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, check and build the config at `path`; SourceError lists every problem."""
    name = str(path)
    text = read_source(path)
    # absolute() and not resolve(): a Kubernetes ConfigMap is a symlink into a folder
    # that is replaced on every update, so relative paths follow the link's folder.
    source = Path(os.path.normpath(Path(path).absolute()))
    return _build(parse_yaml(text, name), text, source, source.parent, environ)


def parse_config(
    text: str,
    file: str,
    *,
    base_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Check and build a config from YAML text; `file` names it in messages."""
    return _build(parse_yaml(text, file), text, Path(file), base_dir, environ)


def _build(
    doc: YamlDocument,
    text: str,
    source: Path,
    base_dir: Path,
    environ: Mapping[str, str] | None,
) -> Config:
    checker = _ConfigChecker(
        doc, text, Path(base_dir).absolute(), os.environ if environ is None else environ
    )
    config = checker.config(source)
    if checker.problems:
        # sorted by place; once each (a `<<` merged anchor is checked in every venue)
        unique = dict.fromkeys(checker.problems)
        problems = sorted(unique, key=lambda p: (p.location.line, p.location.col))
        raise SourceError(problems)
    return config


class _ConfigChecker(AccountChecker):
    """The daemon's config: its own sections on top of the shared checks."""

    # -- sections ----------------------------------------------------------------------

    def config(self, source: Path) -> Config:
        value = self.value
        if not isinstance(value, dict):
            if value is None:
                self.error((), "the config file is empty; it needs at least a list of venues")
            else:
                self.error(
                    (),
                    f"expected a mapping of settings at the top level, got {describe_value(value)}",
                )
            return Config(source, "", self.base_dir, _HTTP, _MQTT, (), 30.0, (), self.doc)
        top = self.section((), value, "the config", _TOP_KEYS)
        instance = self.field(top, "instance", "", self.instance) or socket.gethostname()
        state_dir = self.field(top, "state_dir", self.base_dir / "state", self.path)
        stale_after = self.field(top, "stale_after", 30.0, self.duration)
        rules: tuple[str, ...] = self.field(top, "rules", (), self.rules)
        record = self.field(top, "record_snapshots", None, self.path)
        retention = self.field(top, "history_retention", HISTORY_RETENTION, self.duration)
        http = self.http(top)
        mqtt = self.mqtt(top)
        builtin_alerts = check_builtin_alerts(self, top, self.labels)
        alertmanagers: tuple[AlertmanagerConfig, ...] = self.field(
            top, "alertmanagers", (), self.alertmanagers
        )
        venues: tuple[VenueConfig, ...] = ()
        if self.require(top, "venues"):
            venues = self.venues(top.at("venues"), top.data["venues"], stale_after)
        return Config(
            source=source,
            instance=instance,
            state_dir=state_dir,
            http=http,
            mqtt=mqtt,
            rules=rules,
            stale_after=stale_after,
            venues=venues,
            document=self.doc,
            record_snapshots=record,
            builtin_alerts=builtin_alerts,
            history_retention=retention,
            alertmanagers=alertmanagers,
        )

    def instance(self, path: KeyPath, value: Any) -> str | None:
        text = self.string(path, value)
        if text is not None and not _INSTANCE.fullmatch(text):
            self.error(
                path,
                f"instance {self.show(path, text)} must not contain spaces or the MQTT "
                "characters / + #",
            )
            return None
        return text

    def rules(self, path: KeyPath, value: Any) -> tuple[str, ...] | None:
        if not isinstance(value, list):
            self.error(
                path,
                'rules: expected a list of file patterns such as ["rules/*.yaml"], '
                f"got {self.show(path, value)}",
            )
            return None
        patterns = [self.path((*path, i), item) for i, item in enumerate(value)]
        return tuple(str(p) for p in patterns if p is not None)

    def http(self, top: Section) -> HttpConfig:
        return check_http(self, top, self.listen)

    def listen(self, path: KeyPath, value: Any) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        try:
            address = schema.listen_address(text, show=lambda v: self.show(path, v))
        except schema.Invalid as exc:
            self.error(path, f"listen: {exc}")
            return None
        return str(address)

    def alertmanagers(self, path: KeyPath, value: Any) -> tuple[AlertmanagerConfig, ...] | None:
        if not isinstance(value, list):
            self.error(
                path,
                "alertmanagers: expected a list of {url: http://alertmanager:9093, ...}, "
                f"got {self.show(path, value)}",
            )
            return None
        result: list[AlertmanagerConfig] = []
        seen: set[str] = set()
        for i, item in enumerate(value):
            where = f"alertmanagers[{i}]"
            s = self.section((*path, i), item, where, _ALERTMANAGER_KEYS)
            before = len(self.problems)
            url = self.field(s, "url", "", self.http_url, required=True)
            token = self.field(
                s,
                "bearer_token_file",
                None,
                lambda p, v: self.secret_file(p, v, "alertmanager bearer_token_file", header=True),
            )
            timeout = self.field(s, "timeout", 10.0, self.duration)
            resend = self.field(s, "resend_interval", 60.0, self.duration)
            tls = self.tls(s, f"{where} tls") if s.has("tls") else None
            if url in seen:
                self.error(
                    s.at("url"), f"alertmanager {self.show(s.at('url'), url)} is listed twice"
                )
            seen.add(url)
            if len(self.problems) == before and url:
                result.append(AlertmanagerConfig(url, token, timeout, tls, resend))
        return tuple(result)

    # -- venues ------------------------------------------------------------------------

    def venues(self, path: KeyPath, value: Any, stale_after: float) -> tuple[VenueConfig, ...]:
        if not isinstance(value, list) or not value:
            got = "an empty list" if value == [] else self.show(path, value)
            self.error(path, f"venues: expected a list of venues (at least one), got {got}")
            return ()
        seen: dict[str, Location] = {}
        result = []
        for i, item in enumerate(value):
            venue = self.venue((*path, i), item, stale_after, seen)
            if venue is not None:
                result.append(venue)
        return tuple(result)

    def venue_name(self, path: KeyPath, value: Any, seen: dict[str, Location]) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        if not _VENUE_NAME.fullmatch(text):
            self.error(
                path,
                f"venue name {self.show(path, text)} may only contain letters, digits, _ and -",
            )
            return None
        if text in seen:
            self.error(path, f"duplicate venue name {text!r} (first at line {seen[text].line})")
            return None
        seen[text] = self.doc.at(path)
        return text

    def venue_kind(self, path: KeyPath, value: Any) -> str | None:
        text = self.string(path, value)
        if text is None:
            return None
        kinds = registry.kind_names()
        if text not in kinds:
            hint = schema.did_you_mean(text, kinds)
            self.error(
                path,
                f"unknown venue kind {self.show(path, text)}{hint} "
                f"(known kinds: {', '.join(kinds)})",
            )
            return None
        return text

    def venue(
        self, path: KeyPath, value: Any, default_stale: float, seen: dict[str, Location]
    ) -> VenueConfig | None:
        where = f"venues[{path[-1]}]"
        if not isinstance(value, dict):
            self.error(
                path,
                f"expected a venue (a mapping with name, kind, ...), got {self.show(path, value)}",
            )
            return None
        # name and kind first: messages about the rest name the venue and know its kind
        name_value = value.get("name")
        if isinstance(name_value, str) and name_value and (*path, "name") not in self.from_env:
            where = f"venue {value['name']!r}"
        kind = None
        if (*path, "kind") not in self.failed and "kind" in value:
            kind = self.venue_kind((*path, "kind"), value["kind"])
        known: tuple[str, ...] = _VENUE_KEYS
        foreign: dict[str, str] = {}
        if kind is None:
            known = (*known, *(k for each in registry.all_kinds() for k in each.settings_keys))
        else:
            this = registry.get(kind)
            known = (*known, *this.settings_keys)
            for other in registry.all_kinds():
                if other.name != kind:
                    for key in other.settings_keys:
                        if key not in this.settings_keys:
                            foreign.setdefault(
                                key, f"{key} is for {other.name} venues; {this.settings_hint}"
                            )
        s = self.section(path, value, where, known, foreign=foreign)
        name = self.field(s, "name", "", lambda p, v: self.venue_name(p, v, seen), required=True)
        if "kind" not in s.data:
            self.require(s, "kind")
        base_url = self.field(s, "base_url", "", self.http_url, required=True)
        before = len(self.problems)
        poll_interval = self.field(s, "poll_interval", 2.0, self.duration)
        stale_after = self.field(s, "stale_after", default_stale, self.duration)
        if stale_after <= poll_interval and len(self.problems) == before:
            at = s.at("stale_after") if s.has("stale_after") else s.at("poll_interval")
            self.error(
                at,
                f"stale_after ({format_duration(stale_after)}) must be longer than "
                f"poll_interval ({format_duration(poll_interval)}), or every account turns "
                f"stale between polls; set a longer stale_after in {where}",
            )
        max_poll_interval = self.max_poll_interval(s, poll_interval, stale_after, before)
        timeout = self.field(s, "timeout", 5.0, self.duration)
        max_concurrency = self.field(
            s, "max_concurrency", 16, lambda p, v: self.integer(p, v, minimum=1)
        )
        max_rps = self.field(s, "max_requests_per_second", 20.0, self.positive_number)
        max_bytes = self.field(
            s, "max_response_bytes", 1 << 20, lambda p, v: self.integer(p, v, minimum=1)
        )
        transport = check_venue_transport(self, s, base_url)
        accounts, discovery = self.accounts(s, kind)
        if len(self.problems) == before:
            self.budget_fits(s, name, len(accounts), max_rps, poll_interval, max_poll_interval)
        settings = registry.get(kind).parse_settings(self, s, name) if kind else None
        return VenueConfig(
            name=name,
            kind=kind or "",
            base_url=base_url,
            poll_interval=poll_interval,
            timeout=timeout,
            max_concurrency=max_concurrency,
            max_requests_per_second=max_rps,
            stale_after=stale_after,
            accounts=accounts,
            discovery=discovery,
            max_response_bytes=max_bytes,
            settings=settings,
            transport=transport,
            max_poll_interval=max_poll_interval,
        )

    def max_poll_interval(
        self, s: Section, poll_interval: float, stale_after: float, before: int
    ) -> float:
        """`max_poll_interval`: from `poll_interval` to under `stale_after`; by default
        `stale_after / 2`, so an account may miss a poll without turning stale."""
        default = max(poll_interval, stale_after / 2)
        value = self.field(s, "max_poll_interval", default, self.duration)
        if not s.has("max_poll_interval") or len(self.problems) != before:
            return value
        if value < poll_interval:
            self.error(
                s.at("max_poll_interval"),
                f"max_poll_interval ({format_duration(value)}) is shorter than poll_interval "
                f"({format_duration(poll_interval)}); it is the slowest an account may go",
            )
        elif value >= stale_after:
            self.error(
                s.at("max_poll_interval"),
                f"max_poll_interval ({format_duration(value)}) must be shorter than "
                f"stale_after ({format_duration(stale_after)}), or accounts polled that "
                "slowly turn stale",
            )
        return value

    def budget_fits(
        self,
        s: Section,
        name: str,
        accounts: int,
        max_rps: float,
        poll_interval: float,
        max_poll_interval: float,
    ) -> None:
        """An error when even `max_poll_interval` cannot be met for the configured
        accounts under `max_requests_per_second`."""
        numbers = BudgetArithmetic(name, accounts, False, max_rps, poll_interval, max_poll_interval)
        if numbers.fits:
            return
        at = (
            s.at("max_requests_per_second")
            if s.has("max_requests_per_second")
            else s.at("accounts")
        )
        self.error(
            at,
            f"{accounts} accounts at {max_rps:g} requests/s can be polled only every "
            f"{numbers.cycle:.3g}s, slower than max_poll_interval "
            f"({format_duration(max_poll_interval)}); at most {numbers.capacity} accounts "
            "fit: raise max_requests_per_second or max_poll_interval, or split the accounts",
        )

    # -- accounts ----------------------------------------------------------------------

    def accounts(
        self, venue: Section, kind: str | None
    ) -> tuple[tuple[AccountConfig, ...], DiscoveryConfig | None]:
        if not venue.has("accounts"):
            self.error(
                venue.path,
                f"missing accounts in {venue.where}: list them (- id: ...) or add - discover: true",
            )
            return (), None
        path = venue.at("accounts")
        value = venue.data["accounts"]
        if not isinstance(value, list):
            self.error(
                path,
                "accounts: expected a list of accounts (- id: ... or - discover: true), "
                f"got {self.show(path, value)}",
            )
            return (), None
        if not value:
            self.error(
                path,
                f"{venue.where} has no accounts: list some (- id: ...) or add - discover: true",
            )
            return (), None
        accounts: list[AccountConfig] = []
        ids: dict[str, Location] = {}
        discovery: DiscoveryConfig | None = None
        discovery_at: Location | None = None
        for i, item in enumerate(value):
            item_path = (*path, i)
            if not isinstance(item, dict):
                self.error(
                    item_path,
                    'expected an account such as {id: "19816"} or {discover: true}, '
                    f"got {self.show(item_path, item)}",
                )
                continue
            if "discover" in item and "id" in item:
                self.error(
                    (*item_path, "discover"),
                    "an accounts entry has either id or discover, not both",
                    key=True,
                )
                continue
            if "discover" in item:
                found = self.discovery(item_path, item, venue, kind)
                if discovery_at is not None:
                    self.error(
                        (*item_path, "discover"),
                        f"only one discover entry per venue (first at line {discovery_at.line})",
                        key=True,
                    )
                else:
                    discovery = found
                    discovery_at = self.doc.key_at((*item_path, "discover"))
                continue
            account = self.account(item_path, item, venue.where, kind)
            if not account.id:  # missing or invalid, and reported
                continue
            id_path = (*item_path, "id")
            if account.id in ids:
                self.error(
                    id_path,
                    f"duplicate account id {self.show(id_path, account.id)} in {venue.where} "
                    f"(first at line {ids[account.id].line})",
                )
                continue
            ids[account.id] = self.doc.at(id_path)
            accounts.append(account)
        return tuple(accounts), discovery

    def discovery(
        self, path: KeyPath, item: dict[str, Any], venue: Section, kind: str | None
    ) -> DiscoveryConfig | None:
        foreign = {}
        known: tuple[str, ...] = _DISCOVER_KEYS
        if kind is not None and not registry.get(kind).discovery_statuses:
            known = tuple(k for k in known if k != "statuses")
            foreign["statuses"] = (
                registry.get(kind).statuses_hint
                or f"statuses is not a setting of {kind} discovery: it has no account status"
            )
        s = self.section(path, item, f"the discover entry of {venue.where}", known, foreign=foreign)
        before = len(self.problems)
        discover = self.field(s, "discover", False, self.boolean)
        if discover is not True and len(self.problems) == before:
            self.error(
                s.at("discover"),
                "discover must be true (remove the entry to turn discovery off)",
            )
        interval = self.field(s, "interval", _DISCOVERY.interval, self.duration)
        statuses = self.field(s, "statuses", _DISCOVERY.statuses, self.statuses)
        labels: Mapping[str, str] = self.field(s, "labels", {}, self.labels)
        params: Mapping[str, ParamValue] = self.field(s, "params", {}, self.params)
        if len(self.problems) > before:
            return None
        return DiscoveryConfig(interval=interval, statuses=statuses, labels=labels, params=params)

    def statuses(self, path: KeyPath, value: Any) -> tuple[str, ...] | None:
        if not isinstance(value, list) or not value:
            self.error(
                path,
                "statuses: expected a list of account statuses such as [ACTIVE, INACTIVE], "
                f"got {self.show(path, value)}",
            )
            return None
        result = [self.string((*path, i), item) for i, item in enumerate(value)]
        return tuple(s.upper() for s in result if s is not None)
