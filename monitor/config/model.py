"""The validated configuration, as plain frozen dataclasses the rest of riskmon reads.

`monitor.config.loader` builds these from a YAML file; nothing else parses config.
Durations are seconds (float); relative paths are already resolved against the config
file's folder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.config.secret import Secret
from monitor.schema import ParamValue as ParamValue  # re-exported: the config holds them
from monitor.yamlsource import YamlDocument

_PMX_ACCOUNT = re.compile(r"firms/[^/\s]+/accounts/[^/\s]+")


def account_id_problem(kind: str | None, account_id: str) -> str | None:
    """Why `account_id` cannot be an account of a `kind` venue, or None when it can:
    one rule for configured and discovered accounts alike."""
    if kind == "clearstreet" and not (account_id.isascii() and account_id.isdigit()):
        return "Clear Street account ids are numbers such as 19816"
    if kind == "polymarket" and not _PMX_ACCOUNT.fullmatch(account_id):
        return "Polymarket account ids look like firms/<FIRM>/accounts/<NAME>"
    if not account_id.strip():
        return "an account id is not blank"
    return None


@dataclass(frozen=True, slots=True)
class AccountConfig:
    id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, ParamValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """`- discover: true` in a venue's accounts: every account the credentials can see."""

    interval: float = 300.0
    statuses: tuple[str, ...] = ("ACTIVE",)  # Clear Street account statuses to monitor
    labels: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, ParamValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PolymarketAuthConfig:
    token_url: str
    client_id: str
    private_key: Secret  # PEM, RSA-2048
    participant_id: str
    audience: str | None = None  # defaults to the venue's base_url


@dataclass(frozen=True, slots=True)
class VenueConfig:
    name: str
    kind: str  # "clearstreet" | "polymarket"
    base_url: str
    poll_interval: float = 2.0
    timeout: float = 5.0
    max_concurrency: int = 16
    max_requests_per_second: float = 20.0
    stale_after: float = 30.0  # the global default when the venue sets none
    accounts: tuple[AccountConfig, ...] = ()
    discovery: DiscoveryConfig | None = None
    api_key: Secret | None = None  # clearstreet
    auth: PolymarketAuthConfig | None = None  # polymarket
    currency: str = "USD"  # polymarket
    top_margin_contributors_limit: int | None = None  # clearstreet
    max_response_bytes: int = 1 << 20
    # The slowest any account may be polled when the budget is short (stale_after / 2).
    max_poll_interval: float = 15.0


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class MqttConfig:
    url: str = "mqtt://127.0.0.1:1883"  # mqtt://, mqtts://, or "embedded"
    topic_prefix: str = "riskmon"
    username: str | None = None
    password: Secret | None = None
    tls: TlsConfig | None = None
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class HttpConfig:
    listen: str = "127.0.0.1:9817"


#: The built-in alerts `builtin_alerts` may tune (monitor/engine/builtin.py).
BUILTIN_ALERTS: tuple[str, ...] = (
    "VenueDown",
    "AccountDataStale",
    "VenueAuthFailed",
    "EventsUndeliverable",
)
#: Every alert's runbook link until `builtin_alerts.runbook_url` names the real one:
#: the built-ins' `runbook_url` and `{{ runbook_url }}` in rule annotations.
DEFAULT_RUNBOOK_URL = "https://runbooks.example.com/riskmon/{{ alertname }}"


@dataclass(frozen=True, slots=True)
class BuiltinAlertSettings:
    """One built-in alert's `builtin_alerts` entry; None keeps the built-in default."""

    for_: float | None = None  # seconds
    severity: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)  # merged over the account's


@dataclass(frozen=True, slots=True)
class BuiltinAlertsConfig:
    """`builtin_alerts`: the runbook URL template of every alert, and per built-in
    alert (by alertname) its `for`, severity and labels."""

    runbook_url: str = DEFAULT_RUNBOOK_URL  # a template: `{{ alertname }}` and the alert's context
    alerts: Mapping[str, BuiltinAlertSettings] = field(default_factory=dict)

    def of(self, alertname: str) -> BuiltinAlertSettings:
        return self.alerts.get(alertname) or _NO_SETTINGS


_NO_SETTINGS = BuiltinAlertSettings()


@dataclass(frozen=True, slots=True)
class Config:
    source: Path  # the config file
    instance: str
    state_dir: Path
    http: HttpConfig
    mqtt: MqttConfig
    rules: tuple[str, ...]  # glob patterns, absolute
    stale_after: float
    venues: tuple[VenueConfig, ...]
    document: YamlDocument | None = field(default=None, compare=False, repr=False)
    record_snapshots: Path | None = None  # JSON lines of every snapshot, for `riskmon replay`
    builtin_alerts: BuiltinAlertsConfig = field(default_factory=BuiltinAlertsConfig)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def venue(self, name: str) -> VenueConfig:
        for venue in self.venues:
            if venue.name == name:
                return venue
        raise KeyError(name)
