"""The validated configuration, as plain frozen dataclasses the rest of riskmon reads.

`monitor.config.loader` builds these from a YAML file; nothing else parses config.
Durations are seconds (float); relative paths are already resolved against the config
file's folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from monitor.config.secret import Secret
from monitor.schema import ParamValue as ParamValue  # re-exported: the config holds them
from monitor.yamlsource import YamlDocument


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
    kind: str  # a registered venue kind (monitor.venues.registry)
    base_url: str
    poll_interval: float = 2.0
    timeout: float = 5.0
    max_concurrency: int = 16
    max_requests_per_second: float = 20.0
    stale_after: float = 30.0  # the global default when the venue sets none
    accounts: tuple[AccountConfig, ...] = ()
    discovery: DiscoveryConfig | None = None
    max_response_bytes: int = 1 << 20
    #: the kind's own settings, as its `VenueKind.parse_settings` builds them
    #: (e.g. monitor.venues.clearstreet.ClearStreetSettings)
    settings: Any = None
    transport: VenueTransport = field(default_factory=lambda: VenueTransport())
    # The slowest any account may be polled when the budget is short (stale_after / 2).
    max_poll_interval: float = 15.0


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


HttpClientName = Literal["aiohttp", "httpx"]


@dataclass(frozen=True, slots=True)
class VenueTransport:
    """How a venue's requests travel, whatever its kind: `http_client`, `proxy_url`,
    `tls` and `allow_insecure_http` in its config."""

    http_client: HttpClientName = "aiohttp"
    proxy_url: str | None = None  # None: HTTPS_PROXY / HTTP_PROXY / NO_PROXY of the environment
    tls: TlsConfig | None = None  # ca_file, cert_file, key_file (no `insecure` for venues)
    allow_insecure_http: bool = False


@dataclass(frozen=True, slots=True)
class MqttConfig:
    url: str = "mqtt://127.0.0.1:1883"  # mqtt://, mqtts://, or "embedded"
    topic_prefix: str = "riskmon"
    username: str | None = None
    password: Secret | None = None
    tls: TlsConfig | None = None
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class HttpTlsConfig:
    """`http.tls`: serve HTTPS; with `client_ca_file`, only to clients whose certificate
    that CA signed."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class AlertmanagerConfig:
    """One `alertmanagers` entry: riskmon posts its alerts to `{url}/api/v2/alerts`."""

    url: str  # http(s), without a trailing slash
    bearer_token: Secret | None = None
    timeout: float = 10.0
    tls: TlsConfig | None = None
    resend_interval: float = 60.0  # the alerts still firing are sent again this often


@dataclass(frozen=True, slots=True)
class HttpConfig:
    listen: str = "127.0.0.1:9817"
    tls: HttpTlsConfig | None = None
    bearer_token: Secret | None = None  # `bearer_token_file`: re-read when it changes


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
HISTORY_RETENTION = 90 * 86400.0  # seconds: history_retention's default, 90d


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
    history_retention: float = HISTORY_RETENTION  # seconds the journal keeps a record
    alertmanagers: tuple[AlertmanagerConfig, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def venue(self, name: str) -> VenueConfig:
        for venue in self.venues:
            if venue.name == name:
                return venue
        raise KeyError(name)
