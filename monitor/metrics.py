"""Prometheus metrics, written straight into the text exposition format (0.0.4).

Why not prometheus-client's Gauges: with 10,000 accounts the daemon holds about 260,000
series. Stock Gauges spend ~9 us per series per scrape (2.3 s a scrape) and over 1 KB
per series; here a scrape of them takes ~45 ms and ~2 KB per account
(`.venv/bin/python -m bench.scrape`). The output is checked against prometheus-client's
own parser in tests/test_metrics.py.

How:

- each account has one list: a cached value text (`b"90000.00"`) per account-level
  family, or None when its snapshot lacks that field, and its two label texts
  (`venue="cs",account="19816",currency="USD"`, and without currency), escaped and
  encoded once;
- `update_account` compares each value with the one it rendered last (read again from
  the previous snapshot's fields, kept by reference) and formats only those that
  changed (a Decimal as its own exact text: no float round trip to pay for);
- `riskmon_account_param` lines are shared by the accounts that use the rules' default
  params, and get their account's labels at render time;
- `riskmon_account_info` is written as `riskmon_account_info{desk="..",` (the account's
  own labels, one text shared by the accounts whose labels are alike) followed by the
  account's `venue="..",account=".."} ` and `1`: label order does not matter in the
  format, so no line is kept per account;
- `render` writes each family contiguously (the format requires it): `name{`, labels,
  value, newline for every account that has the value, chained from `map(itemgetter)`
  over the accounts' lists into one `bytes.join`: no Python-level loop per series.
  (Caching whole lines would render twice as fast and hold 70% more memory; the memory
  budget, 10 KB per account with the snapshot, is the tighter one.)

Not thread-safe: call everything from the daemon's event loop thread.

Families (all names carry the `riskmon_` prefix; values in base units: seconds, the
account's currency):

| family | type | labels |
| --- | --- | --- |
| `riskmon_account_<field>` (`ACCOUNT_FIELD_METRICS`) | gauge | venue, account, currency |
| `riskmon_account_up` (last poll succeeded: 1, failed: 0) | gauge | venue, account |
| `riskmon_last_success_timestamp_seconds` | gauge | venue, account |
| `riskmon_account_param` (rule params in effect) | gauge | venue, account, param |
| `riskmon_account_info` (always 1) | gauge | venue, account, the account's labels |
| `riskmon_alert_active` (1 per pending/firing alert) | gauge | alertname, venue, account, |
| | | severity, state (pending, firing, suppressed: firing but inhibited or silenced) |
| `riskmon_poll_duration_seconds` | histogram | venue |
| `riskmon_polls_total` | counter | venue, outcome |
| `riskmon_venue_up`, `riskmon_venue_accounts` | gauge | venue |
| `riskmon_venue_request_budget` (requests/s allowed now) | gauge | venue |
| `riskmon_account_poll_interval_seconds` (the interval planned now) | gauge | venue, account |
| `riskmon_venue_throttled_total` (429/503 with Retry-After that paused it) | counter | venue |
| `riskmon_rule_evaluation_failures_total` | counter | alertname |
| `riskmon_template_failures_total` (renders that failed or went past a bound) | counter | |
| `riskmon_config_last_reload_successful` | gauge | |
| `riskmon_config_last_reload_success_timestamp_seconds` | gauge | |
| `riskmon_config_warnings` (of the running config and rules: `riskmon check`'s) | gauge | |
| `riskmon_mqtt_connected`, `riskmon_outbox_pending` | gauge | |
| `riskmon_events_published_total` | counter | |
| `riskmon_asyncio_tasks` (tasks alive on the event loop, when last set) | gauge | |
| `riskmon_event_delivery_seconds` (venue answer to PUBACK) | histogram | |
| dead letters, refused publishes, failed outbox writes (`monitor/outbox_metrics.py`) | | |
| delivery to each Alertmanager (`monitor/alertmanager/metrics.py`) | | alertmanager |
| `riskmon_build_info` (always 1) | gauge | version, python |
| `riskmon_start_time_seconds` | gauge | |
| `riskmon_internal_errors_total` (crashes of riskmon's own tasks) | counter | task |
| `riskmon_event_loop_lag_seconds` (how late the last tick ran) | gauge | |
| `riskmon_healthy` (0 while /healthz fails) | gauge | |
| `riskmon_health_problem` (1 for each component /healthz names) | gauge | component |
| `riskmon_memory_limit_bytes` (the container's, absent when unlimited) | gauge | |
| `process_*`, `python_info` (prometheus-client's, `monitor/process_metrics.py`) | | |

Data age is not exported as a gauge that changes every second: it is
`time() - riskmon_last_success_timestamp_seconds` in PromQL, the Prometheus convention.
The currency label is left out when the venue does not name a currency. A family with no
series is left out entirely (no HELP/TYPE either). `riskmon_polls_total` outcomes are
`ok`, the `VenueError.outcome` values (`auth_failed`, `rate_limited`, `unavailable`,
`connection_error`, `rejected`, `not_found`, `bad_response`, `timeout`, `error`), and
`skipped_overrun` / `skipped_auth_backoff` / `skipped_budget` (no turn under riskmon's
own request budget before the poll's deadline) for turns not polled.
`riskmon_rule_evaluation_failures_total` is labelled by `alertname` (bounded by the rule
files) so that on-call sees which rule fails; `inc_rule_evaluation_failures(name, 0)`
creates a rule's series at 0, so that `increase()` sees its first failure.
`riskmon_account_param` carries the numeric rule params an account's rules read (its own
`params` over the rules' defaults: `buying_power_floor`, `excess_capital_floor` ...), so
that a dashboard draws each account's floors next to its values; `param` is bounded by
the rule files and the config.
`riskmon_account_info{venue, account, <labels>...} 1` carries each monitored account's
`labels` from riskmon.yaml (its own, or its discovery entry's), the Prometheus
info-metric convention: `riskmon_account_buying_power * on(venue, account)
group_left(desk) riskmon_account_info` puts `desk` on another series. Every account that
has been polled has one, labels or not (so such a join keeps accounts without labels),
and it leaves with the account. Accounts may have different label sets. The config
refuses the label names riskmon sets itself (`venue`, `account`, `currency`,
`alertname`, `severity`, `__*`); names that would still collide with `venue` or
`account` here are left out, so the series stays valid.
"""

from __future__ import annotations

import math
import platform
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import chain, compress, repeat
from operator import itemgetter
from typing import Any, Final

from monitor import __version__
from monitor.engine.lifecycle import Alert, AlertPhase
from monitor.engine.templates import template_failures
from monitor.process_metrics import ProcessMetrics, memory_limit
from monitor.snapshot import Snapshot
from monitor.venues import registry

__all__ = [
    "ACCOUNT_FIELD_METRICS",
    "CONTENT_TYPE",
    "EVENT_DELIVERY_BUCKETS",
    "POLL_DURATION_BUCKETS",
    "Metrics",
    "escape_label_value",
    "format_value",
]

#: The Content-Type of `Metrics.render()`'s output.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: Snapshot field path -> (metric name, HELP text). One gauge per entry, labelled venue,
#: account, currency, emitted for an account only while its snapshot has the field with a
#: numeric (or boolean: 1/0) value. The normalized fields come first; the venue fields
#: after them are the ones a desk graphs. A venue field that is the source of a
#: normalized one (Clear Street's `margin_details.maintenance_margin_excess` is
#: `margin_excess`, Polymarket's `excess_capital` too) has no metric of its own: one
#: metric per quantity. The venue fields' gauges are the venue modules' (`VenueKind.gauges`).
NORMALIZED_FIELD_METRICS: Final[tuple[tuple[str, str, str], ...]] = (
    # the normalized set (SPEC "Snapshot fields")
    ("buying_power", "riskmon_account_buying_power", "Buying power (normalized field)."),
    ("equity", "riskmon_account_equity", "Account equity (normalized field)."),
    (
        "margin_excess",
        "riskmon_account_margin_excess",
        "Margin excess: maintenance margin excess, or Polymarket excess capital "
        "(normalized field).",
    ),
    (
        "margin_requirement",
        "riskmon_account_margin_requirement",
        "Margin requirement: maintenance margin requirement (normalized field).",
    ),
    (
        "pattern_day_trader",
        "riskmon_account_pattern_day_trader",
        "1 when the account is flagged pattern day trader, else 0 (normalized field).",
    ),
    (
        "day_trade_count",
        "riskmon_account_day_trade_count",
        "Day trades in the rolling window (normalized field).",
    ),
    ("daily_pnl", "riskmon_account_daily_pnl", "Profit and loss today (normalized field)."),
)


def _venue_gauges() -> tuple[tuple[str, str, str], ...]:
    """Each registered venue kind's own gauges (`VenueKind.gauges`), once per field path.
    Read when this module is imported: a kind registered later (not through
    RISKMON_VENUE_PLUGINS) exports only the normalized fields."""
    seen: dict[str, tuple[str, str, str]] = {}
    for kind in registry.all_kinds():
        for gauge in kind.gauges:
            seen.setdefault(gauge.path, (gauge.path, gauge.metric, gauge.help))
    return tuple(seen.values())


ACCOUNT_FIELD_METRICS: Final[tuple[tuple[str, str, str], ...]] = (
    *NORMALIZED_FIELD_METRICS,
    *_venue_gauges(),
)

#: Buckets of `riskmon_poll_duration_seconds`: 1 ms .. 10 s.
POLL_DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: Buckets of `riskmon_event_delivery_seconds`: 1 ms .. 5 min, fine below 10 ms (the
#: target for the daemon's own part of an alert's way out).
EVENT_DELIVERY_BUCKETS: Final[tuple[float, ...]] = (
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
    10.0,
    60.0,
    300.0,
)

_PATHS: Final = tuple(path for path, _, _ in ACCOUNT_FIELD_METRICS)
_N_FIELDS: Final = len(_PATHS)
# An account's entries: one value text per account family, then its two label texts.
_UP: Final = _N_FIELDS  # entries[_UP]: riskmon_account_up
_LAST_SUCCESS: Final = _N_FIELDS + 1  # entries[_LAST_SUCCESS]
_N_FAMILIES: Final = _N_FIELDS + 2
_LABELS: Final = _N_FAMILIES  # entries[_LABELS]: b'venue="..",account="..",currency=".."} '
_LABELS_SHORT: Final = _N_FAMILIES + 1  # entries[_LABELS_SHORT]: without currency
_INFO: Final = _N_FAMILIES + 2  # entries[_INFO]: b'riskmon_account_info{desk="..",' or None
_N_ENTRIES: Final = _N_FAMILIES + 3
_UNSET: Final = object()  # no value rendered yet (None means "the snapshot lacks it")
_NEVER_RENDERED: Final[list[object]] = [_UNSET] * _N_FIELDS  # read only
_ACTIVE_PHASES: Final = (AlertPhase.PENDING, AlertPhase.FIRING)

AccountKey = tuple[str, str]  # (venue, account)
_Add = Callable[[bytes], None]
AlertKey = tuple[str, str, str, str, str]  # (alertname, venue, account, severity, state)


def escape_label_value(value: str) -> str:
    """A label value as the text format writes it: `\\`, `"` and newline escaped."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


#: Label values longer than this (a venue's currency, a discovered account id) are cut
#: and end in LABEL_CUT_MARKER: one account must not make every scrape megabytes long.
MAX_LABEL_CHARS = 128
LABEL_CUT_MARKER = "...(cut)"


def _bounded(value: str) -> str:
    if len(value) <= MAX_LABEL_CHARS:
        return value
    return value[: MAX_LABEL_CHARS - len(LABEL_CUT_MARKER)] + LABEL_CUT_MARKER


def _labels(**labels: str | None) -> bytes:
    """`name="value",...` (escaped, UTF-8, each value at most MAX_LABEL_CHARS); labels
    whose value is None are left out."""
    return ",".join(
        f'{name}="{escape_label_value(_bounded(value))}"'
        for name, value in labels.items()
        if value is not None
    ).encode(errors="replace")


def _float_text(number: float) -> bytes:
    if number != number:
        return b"NaN"
    if number in (math.inf, -math.inf):
        return b"+Inf" if number > 0 else b"-Inf"
    return repr(number).encode()


def format_value(value: object) -> bytes | None:
    """A sample value as Prometheus reads it, or None when `value` is not numeric.

    A Decimal is written as its own exact decimal text (`90000.00`, `1.5E+7`), which
    Prometheus parses to the same float64 as `float(value)`; one whose exponent is out
    of float64's range goes through `float`. Booleans are 1/0; NaN and infinities are
    written `NaN`, `+Inf`, `-Inf`.
    """
    if type(value) is Decimal:
        if value.is_finite() and -300 < value.adjusted() < 300:
            return str(value).encode()
        return _float_text(float(value))
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, Decimal):  # a subclass
        return format_value(Decimal(value))
    return None


def _header(name: str, kind: str, help_text: str) -> bytes:
    return f"# HELP {name} {_escape_help(help_text)}\n# TYPE {name} {kind}\n".encode()


@dataclass(frozen=True, slots=True)
class _Family:
    name: str
    header: bytes
    open: bytes  # b"name{"


def _family(name: str, kind: str, help_text: str) -> _Family:
    return _Family(name, _header(name, kind, help_text), f"{name}{{".encode())


_ACCOUNT_FAMILIES: Final[tuple[_Family, ...]] = (
    *(_family(name, "gauge", help_text) for _, name, help_text in ACCOUNT_FIELD_METRICS),
    _family("riskmon_account_up", "gauge", "1 when the account's last poll succeeded, else 0."),
    _family(
        "riskmon_last_success_timestamp_seconds",
        "gauge",
        "When the account's last good snapshot arrived, in seconds since the epoch.",
    ),
)
_BUCKET_LABELS: Final = (*(_float_text(b) for b in POLL_DURATION_BUCKETS), b"+Inf")
_DELIVERY_LABELS: Final = (*(_float_text(b) for b in EVENT_DELIVERY_BUCKETS), b"+Inf")
_GETTERS: Final = tuple(itemgetter(i) for i in range(_N_FAMILIES))
_LABEL_GETTERS: Final = (
    *(itemgetter(_LABELS) for _ in range(_N_FIELDS)),
    itemgetter(_LABELS_SHORT),
    itemgetter(_LABELS_SHORT),
)
_INFO_GETTER: Final = itemgetter(_INFO)
_SHORT_GETTER: Final = itemgetter(_LABELS_SHORT)
_ALERT_ACTIVE: Final = _family(
    "riskmon_alert_active",
    "gauge",
    "1 for each pending or firing alert; state says which (suppressed: firing, but inhibited"
    " or silenced).",
)
_ACCOUNT_PARAM: Final = _family(
    "riskmon_account_param",
    "gauge",
    "A numeric rule param in effect for the account (its params over the rules' defaults).",
)
_NO_PARAMS: Final[Mapping[str, Any]] = {}
_ACCOUNT_INFO: Final = _family(
    "riskmon_account_info",
    "gauge",
    "Always 1; the labels are the account's labels from the config, to join onto its other "
    "series: * on(venue, account) group_left(desk) riskmon_account_info.",
)
#: Label names of riskmon_account_info that its own labels take.
_INFO_OWN_LABELS: Final = frozenset({"venue", "account"})
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_INFO_CACHE_LIMIT: Final = 4096  # distinct label sets kept for sharing (a cache)
_TEMPLATE_FAILURES_HEADER: Final = _header(
    "riskmon_template_failures_total",
    "counter",
    "Label and annotation renders that failed or went past a bound of steps, time or size; "
    "they rendered <template error: ...> and the event was published.",
)


class _Account:
    __slots__ = (
        "currency",
        "entries",
        "fields",
        "info_from",
        "params",
        "params_defaults",
        "params_overrides",
        "up",
    )

    def __init__(self, venue: str, account: str, currency: str | None) -> None:
        self.currency = currency
        # riskmon_account_param: the mappings it was rendered from, and the ends of its
        # lines (`,param="..."} value\n`), shared by the accounts that use the defaults
        self.params_defaults: Mapping[str, Any] | None = None
        self.params_overrides: Mapping[str, Any] | None = None  # not a pair: 56 B an account
        self.params: tuple[bytes, ...] = ()
        # riskmon_account_info: the labels mapping entries[_INFO] was rendered from
        self.info_from: Mapping[str, str] | None = None
        # the fields of the snapshot the entries were rendered from (the poller holds
        # that snapshot too: no copy), to see which values changed at the next one
        self.fields: Mapping[str, object] | None = None
        self.entries: list[bytes | None] = [None] * _N_ENTRIES
        self.entries[_LABELS] = _labels(venue=venue, account=account, currency=currency) + b"} "
        self.entries[_LABELS_SHORT] = _labels(venue=venue, account=account) + b"} "
        self.up: bool | None = None


@dataclass(slots=True)
class _Venue:
    labels: bytes  # venue="..."
    up: bool | None = None
    accounts: int | None = None
    request_budget: float | None = None
    throttled: int | None = None
    buckets: list[int] = field(default_factory=lambda: [0] * (len(POLL_DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    duration_count: int = 0
    polls: dict[str, int] = field(default_factory=dict)  # outcome -> count


class Metrics:
    """The daemon's metrics registry; `render()` is the body of `/metrics`."""

    def __init__(
        self, *, start_time: float | None = None, process: ProcessMetrics | None = None
    ) -> None:
        now = time.time() if start_time is None else start_time
        self._process = ProcessMetrics(memory_limit()) if process is None else process
        self._internal_errors: dict[str, int] = {}  # task -> crashes
        self._loop_lag = 0.0
        self._health_problems: tuple[str, ...] = ()  # the components /healthz names
        self._accounts: dict[AccountKey, _Account] = {}
        self._entries: dict[AccountKey, list[bytes | None]] = {}  # the same lists, for render
        self._alerts: dict[AlertKey, bytes] = {}
        self._venues: dict[str, _Venue] = {}
        self._poll_intervals: dict[str, Mapping[str, float]] = {}  # venue -> the poller's
        self._rule_failures: dict[str, int] = {}
        # id(defaults) -> (defaults, the ends of their riskmon_account_param lines)
        self._default_params: dict[int, tuple[Mapping[str, Any], tuple[bytes, ...]]] = {}
        # riskmon_account_info heads, one object per distinct label set
        self._info_heads: dict[bytes, bytes] = {}
        self._start_time = now
        self._reload_successful = True  # a daemon has metrics only once its config loaded
        self._reload_success_at = now
        self._config_warnings = 0
        self._mqtt_connected = False
        self._outbox_pending = 0
        self._asyncio_tasks: int | None = None
        self._events_published = 0
        self._delivery_buckets = [0] * (len(EVENT_DELIVERY_BUCKETS) + 1)
        self._delivery_sum = 0.0
        self._build_info = (
            b"riskmon_build_info{"
            + _labels(version=__version__, python=platform.python_version())
            + b"} 1\n"
        )

    # -- accounts -------------------------------------------------------------------

    def _account(self, venue: str, account: str, currency: str | None) -> _Account:
        key = (venue, account)
        record = self._accounts.get(key)
        if record is None:
            record = self._accounts[key] = _Account(venue, account, currency)
            self._entries[key] = record.entries
        return record

    def update_account(self, snapshot: Snapshot) -> None:
        """A poll succeeded: the account's gauges take the snapshot's values, up is 1.

        The snapshot's fields are kept (not copied) to compare the next one with: like
        every Snapshot, they must not change once made."""
        key = (snapshot.venue, snapshot.account)
        record = self._accounts.get(key)
        if record is None or record.currency != snapshot.currency:
            old_record = record
            record = self._accounts[key] = _Account(
                snapshot.venue, snapshot.account, snapshot.currency
            )
            self._entries[key] = record.entries
            if old_record is not None:  # params and info have no currency label: they stay
                record.params_defaults = old_record.params_defaults
                record.params_overrides = old_record.params_overrides
                record.params = old_record.params
                record.info_from = old_record.info_from
                record.entries[_INFO] = old_record.entries[_INFO]
        previous = record.fields
        entries = record.entries
        if snapshot.fields is not previous:  # the same answer again shares its fields
            new = list(map(snapshot.fields.get, _PATHS))
            old = _NEVER_RENDERED if previous is None else list(map(previous.get, _PATHS))
            record.fields = snapshot.fields
            if new != old:  # equal numbers have the same float64: keep their text
                for i, value in enumerate(new):
                    if value != old[i]:
                        entries[i] = None if value is None else format_value(value)
        if record.up is not True:
            record.up = True
            entries[_UP] = b"1"
        entries[_LAST_SUCCESS] = _float_text(snapshot.taken_at)

    def set_account_params(
        self,
        venue: str,
        account: str,
        defaults: Mapping[str, Any],
        overrides: Mapping[str, Any] = _NO_PARAMS,
    ) -> None:
        """`riskmon_account_param{param}`: the account's rule params, `overrides` (its
        own `params`) over `defaults` (the rules'); only numeric values are exported.

        Rendered again only when `defaults` or `overrides` is another object than last
        time: pass the same mappings while they do not change (the config's and the rule
        set's), and a poll costs two identity checks. Call after `update_account`.
        """
        record = self._account(venue, account, None)
        if record.params_defaults is defaults and record.params_overrides is overrides:
            return
        record.params_defaults, record.params_overrides = defaults, overrides
        if overrides:
            record.params = _param_ends(defaults, overrides)
            return
        # Most accounts use the rules' defaults: one rendering for all of them, 1.3 KB
        # an account otherwise (bench/memory.py).
        shared = self._default_params.get(id(defaults))
        if shared is None or shared[0] is not defaults:
            if len(self._default_params) >= 64:  # mappings of rule sets reloaded away
                self._default_params.clear()
            shared = self._default_params[id(defaults)] = (defaults, _param_ends(defaults))
        record.params = shared[1]

    def set_account_info(self, venue: str, account: str, labels: Mapping[str, str]) -> None:
        """`riskmon_account_info{venue, account, <labels>...} 1`: the account's labels
        from the config (an empty mapping: the series with venue and account only).

        Rendered again only when `labels` is another object than last time: pass the
        account's config mapping (the snapshot's `labels` is that one), and a poll costs
        one identity check.
        """
        record = self._account(venue, account, None)
        if record.info_from is labels:
            return
        record.info_from = labels
        record.entries[_INFO] = self._info_head(labels)

    def _info_head(self, labels: Mapping[str, str]) -> bytes:
        """`riskmon_account_info{name="value",` for `labels` (names sorted; a name that
        is not a label name, or is venue or account, left out), shared between equal
        label sets."""
        own = {
            name: labels[name]
            for name in sorted(labels)
            if name not in _INFO_OWN_LABELS
            and not name.startswith("__")
            and _LABEL_NAME.fullmatch(name)
        }
        if not own:
            return _ACCOUNT_INFO.open
        head = _ACCOUNT_INFO.open + _labels(**own) + b","
        heads = self._info_heads
        if len(heads) >= _INFO_CACHE_LIMIT:  # label sets reloaded away
            heads.clear()
        return heads.setdefault(head, head)

    def account_failed(self, venue: str, account: str, outcome: str | None = None) -> None:
        """A poll failed: `riskmon_account_up` 0; the last good values stay exported
        (as the API keeps the last good snapshot), and their age is
        `time() - riskmon_last_success_timestamp_seconds`.

        `outcome` (the `VenueError.outcome`) is not a label here, so that an account
        whose failure changes kind does not churn series: it is counted per venue by
        `observe_poll`, and shown per account by /api/v1/accounts.
        """
        del outcome
        record = self._account(venue, account, None)
        if record.up is not False:
            record.up = False
            record.entries[_UP] = b"0"

    def remove_account(self, venue: str, account: str) -> None:
        """The account left the config or discovery: its series leave every family."""
        key = (venue, account)
        self._accounts.pop(key, None)
        self._entries.pop(key, None)
        if any(k[1] == venue and k[2] == account for k in self._alerts):
            self._alerts = {
                k: v for k, v in self._alerts.items() if not (k[1] == venue and k[2] == account)
            }

    def accounts(self) -> list[AccountKey]:
        """The (venue, account) pairs that have series."""
        return list(self._accounts)

    # -- venues ---------------------------------------------------------------------

    def _venue(self, venue: str) -> _Venue:
        record = self._venues.get(venue)
        if record is None:
            record = self._venues[venue] = _Venue(_labels(venue=venue))
        return record

    def observe_poll(self, venue: str, outcome: str, seconds: float) -> None:
        """A poll ran: count it in `riskmon_polls_total{venue, outcome}` and time it in
        `riskmon_poll_duration_seconds{venue}`. `outcome`: `ok` or a `VenueError.outcome`.
        """
        record = self._venue(venue)
        record.polls[outcome] = record.polls.get(outcome, 0) + 1
        record.buckets[bisect_left(POLL_DURATION_BUCKETS, seconds)] += 1
        record.duration_sum += seconds
        record.duration_count += 1

    def count_poll(self, venue: str, outcome: str) -> None:
        """A turn that did not poll (`skipped_overrun`, `skipped_auth_backoff`,
        `skipped_budget`): counted in `riskmon_polls_total`, not timed."""
        record = self._venue(venue)
        record.polls[outcome] = record.polls.get(outcome, 0) + 1

    def set_venue(self, venue: str, up: bool, accounts: int) -> None:
        """`riskmon_venue_up` (some account of the venue answers) and
        `riskmon_venue_accounts` (accounts monitored)."""
        record = self._venue(venue)
        record.up = up
        record.accounts = accounts

    def set_venue_budget(self, venue: str, requests_per_second: float, throttled: int) -> None:
        """`riskmon_venue_request_budget` (the rate allowed now: lower after the venue
        throttled, 0 during its pause) and `riskmon_venue_throttled_total`."""
        record = self._venue(venue)
        record.request_budget = requests_per_second
        record.throttled = throttled

    def set_poll_intervals(self, venue: str, intervals: Mapping[str, float]) -> None:
        """`riskmon_account_poll_interval_seconds`: the poller's own mapping of account
        to the interval planned for it, read at each render (no copy is kept)."""
        self._poll_intervals[venue] = intervals

    def remove_venue(self, venue: str) -> None:
        """The venue left the config: its series and its accounts' series go."""
        self._venues.pop(venue, None)
        self._poll_intervals.pop(venue, None)
        for key in [k for k in self._accounts if k[0] == venue]:
            self.remove_account(*key)

    # -- alerts and rules -----------------------------------------------------------

    def set_alerts(self, alerts: Iterable[Alert]) -> None:
        """Replace the `riskmon_alert_active` set with the pending and firing `alerts`.

        Inactive alerts are skipped; label texts are reused, so an unchanged set costs
        one tuple per alert.
        """
        old = self._alerts
        new: dict[AlertKey, bytes] = {}  # key -> b'alertname="..",...} 1\n'
        for alert in alerts:
            phase = alert.phase
            if phase not in _ACTIVE_PHASES:
                continue
            # a suppressed firing alert is state "suppressed" (Alertmanager's word), not a
            # `suppressed` label: `riskmon_alert_active{state="firing"}` stays what pages
            state = "suppressed" if phase is AlertPhase.FIRING and alert.suppressed else phase.value
            key = (alert.alertname, alert.venue, alert.account, alert.severity, state)
            if key in new:
                continue
            text = old.get(key)
            if text is None:
                text = (
                    _labels(
                        alertname=key[0],
                        venue=key[1],
                        account=key[2],
                        severity=key[3],
                        state=key[4],
                    )
                    + b"} 1\n"
                )
            new[key] = text
        if new.keys() != old.keys():
            self._alerts = new

    def inc_rule_evaluation_failures(self, alertname: str, n: int = 1) -> None:
        """A rule's expression failed `n` times; `n=0` creates its series at 0."""
        self._rule_failures[alertname] = self._rule_failures.get(alertname, 0) + n

    # -- the process ----------------------------------------------------------------

    def set_reload(self, successful: bool, at: float) -> None:
        """A config/rules reload ended; `at` (epoch seconds) counts only when it worked."""
        self._reload_successful = successful
        if successful:
            self._reload_success_at = at

    def set_config_warnings(self, count: int) -> None:
        """How many warnings the running config and rules have (`riskmon check`'s)."""
        self._config_warnings = count

    def set_mqtt(self, connected: bool) -> None:
        self._mqtt_connected = connected

    def set_outbox_pending(self, n: int) -> None:
        self._outbox_pending = n

    def set_asyncio_tasks(self, n: int) -> None:
        """`riskmon_asyncio_tasks`: a count that only grows means tasks are leaking
        (`python -m bench.soak` watches it)."""
        self._asyncio_tasks = n

    def inc_events_published(self, n: int = 1) -> None:
        self._events_published += n

    def set_events_published(self, total: int) -> None:
        """`riskmon_events_published_total` from a publisher that keeps the count."""
        self._events_published = total

    def observe_event_delivery(self, seconds: float) -> None:
        """An alert event a venue answer caused was PUBACKed `seconds` after that answer
        arrived: `riskmon_event_delivery_seconds` (the daemon's part of detection
        latency: parsing, rules, outbox, MQTT; not the wait for the poll)."""
        self._delivery_buckets[bisect_left(EVENT_DELIVERY_BUCKETS, seconds)] += 1
        self._delivery_sum += seconds

    def inc_internal_errors(self, task: str, n: int = 1) -> None:
        """riskmon's own task `task` crashed `n` times; `n=0` creates its series at 0.
        `task` must be bounded (a task's name, not an account's)."""
        self._internal_errors[task] = self._internal_errors.get(task, 0) + n

    def set_loop_lag(self, seconds: float) -> None:
        self._loop_lag = seconds

    def set_health_problems(self, problems: Iterable[str]) -> None:
        """The components that keep riskmon from alerting now (/healthz's)."""
        self._health_problems = tuple(sorted(problems))

    # -- exposition -----------------------------------------------------------------

    def render(self) -> bytes:
        """The whole exposition, text format 0.0.4 (`CONTENT_TYPE`)."""
        parts: list[bytes] = []
        add = parts.append
        entries = self._entries.values()
        newline = repeat(b"\n")
        for family, value_of, labels_of in zip(
            _ACCOUNT_FAMILIES, _GETTERS, _LABEL_GETTERS, strict=True
        ):
            # name{ labels} value\n for the accounts that have a value, all in C
            values = filter(None, map(value_of, entries))
            labels = compress(map(labels_of, entries), map(value_of, entries))
            body = b"".join(chain.from_iterable(zip(repeat(family.open), labels, values, newline)))
            if body:
                add(family.header)
                add(body)
        # riskmon_account_info{<labels>, then venue="..",account=".."} 1\n
        heads = map(_INFO_GETTER, entries)
        labels = compress(map(_SHORT_GETTER, entries), map(_INFO_GETTER, entries))
        body = b"".join(chain.from_iterable(zip(filter(None, heads), labels, repeat(b"1\n"))))
        if body:
            add(_ACCOUNT_INFO.header)
            add(body)
        params = b"".join(
            _param_lines(record) for record in self._accounts.values() if record.params
        )
        if params:
            add(_ACCOUNT_PARAM.header)
            add(params)
        if self._alerts:
            add(_ALERT_ACTIVE.header)
            add(
                b"".join(
                    chain.from_iterable(zip(repeat(_ALERT_ACTIVE.open), self._alerts.values()))
                )
            )
        self._render_venues(add)
        if self._rule_failures:
            add(
                _header(
                    "riskmon_rule_evaluation_failures_total",
                    "counter",
                    "Rule evaluations that failed (division by zero, type errors); "
                    "the result counted as missing.",
                )
            )
            for alertname, count in self._rule_failures.items():
                add(
                    b"riskmon_rule_evaluation_failures_total{"
                    + _labels(alertname=alertname)
                    + b"} %d\n" % count
                )
        add(_TEMPLATE_FAILURES_HEADER)
        add(b"riskmon_template_failures_total %d\n" % template_failures())
        self._render_process(add)
        return b"".join(parts)

    def _render_venues(self, add: _Add) -> None:
        venues = self._venues
        if not venues:
            return
        name = "riskmon_poll_duration_seconds"
        add(_header(name, "histogram", "How long polls of one account took."))
        for record in venues.values():
            cumulative = 0
            for bound, count in zip(_BUCKET_LABELS, record.buckets, strict=True):
                cumulative += count
                add(
                    b'%s_bucket{%s,le="%s"} %d\n'
                    % (name.encode(), record.labels, bound, cumulative)
                )
            add(
                b"%s_sum{%s} %s\n"
                % (name.encode(), record.labels, _float_text(record.duration_sum))
            )
            add(b"%s_count{%s} %d\n" % (name.encode(), record.labels, record.duration_count))
        if any(record.polls for record in venues.values()):
            add(_header("riskmon_polls_total", "counter", "Poll turns by outcome."))
            for record in venues.values():
                for outcome, count in record.polls.items():
                    add(
                        b"riskmon_polls_total{%s,%s} %d\n"
                        % (record.labels, _labels(outcome=outcome), count)
                    )
        _gauges(
            add,
            "riskmon_venue_up",
            "1 when some account of the venue answers, 0 when all fail.",
            ((r.labels, r.up) for r in venues.values()),
        )
        _gauges(
            add,
            "riskmon_venue_accounts",
            "Accounts of the venue monitored by this instance.",
            ((r.labels, r.accounts) for r in venues.values()),
        )
        budgets = [
            b"riskmon_venue_request_budget{%s} %s\n" % (r.labels, _float_text(r.request_budget))
            for r in venues.values()
            if r.request_budget is not None
        ]
        if budgets:
            add(
                _header(
                    "riskmon_venue_request_budget",
                    "gauge",
                    "Requests per second riskmon allows itself to the venue now (lower after "
                    "it throttled, 0 during its Retry-After pause).",
                )
            )
            add(b"".join(budgets))
        self._render_poll_intervals(add)
        if any(r.throttled is not None for r in venues.values()):
            add(
                _header(
                    "riskmon_venue_throttled_total",
                    "counter",
                    "429/503 answers with Retry-After that paused every request to the venue.",
                )
            )
            for record in venues.values():
                if record.throttled is not None:
                    add(
                        b"riskmon_venue_throttled_total{%s} %d\n"
                        % (record.labels, record.throttled)
                    )

    def _short_labels(self, venue: str, account: str) -> bytes:
        """`venue="..",account=".."} `: the account's own, made when it was first seen,
        else (not polled yet) made now."""
        entries = self._entries.get((venue, account))
        labels = None if entries is None else entries[_LABELS_SHORT]
        return labels if labels is not None else _labels(venue=venue, account=account) + b"} "

    def _render_poll_intervals(self, add: _Add) -> None:
        lines = [
            b"riskmon_account_poll_interval_seconds{"
            + self._short_labels(venue, account)
            + _float_text(seconds)
            + b"\n"
            for venue, intervals in self._poll_intervals.items()
            for account, seconds in intervals.items()
        ]
        if lines:
            add(
                _header(
                    "riskmon_account_poll_interval_seconds",
                    "gauge",
                    "The interval the account is polled at now, under the venue's budget.",
                )
            )
            add(b"".join(lines))

    def _render_process(self, add: _Add) -> None:
        add(
            _header(
                "riskmon_config_last_reload_successful",
                "gauge",
                "1 when the last config and rules (re)load worked, else 0.",
            )
        )
        add(b"riskmon_config_last_reload_successful %d\n" % self._reload_successful)
        add(
            _header(
                "riskmon_config_last_reload_success_timestamp_seconds",
                "gauge",
                "When the config and rules last loaded successfully, in seconds since the epoch.",
            )
        )
        add(
            b"riskmon_config_last_reload_success_timestamp_seconds %s\n"
            % _float_text(self._reload_success_at)
        )
        add(
            _header(
                "riskmon_config_warnings",
                "gauge",
                "Warnings of the running config and rules, as riskmon check prints them "
                "(listed by /api/v1/status).",
            )
        )
        add(b"riskmon_config_warnings %d\n" % self._config_warnings)
        add(_header("riskmon_mqtt_connected", "gauge", "1 while connected to the MQTT broker."))
        add(b"riskmon_mqtt_connected %d\n" % self._mqtt_connected)
        add(
            _header("riskmon_outbox_pending", "gauge", "Events in the outbox not yet acknowledged.")
        )
        add(b"riskmon_outbox_pending %d\n" % self._outbox_pending)
        add(
            _header(
                "riskmon_events_published_total",
                "counter",
                "Alert events published to MQTT and acknowledged by the broker.",
            )
        )
        add(b"riskmon_events_published_total %d\n" % self._events_published)
        if self._asyncio_tasks is not None:
            add(_header("riskmon_asyncio_tasks", "gauge", "Tasks alive on the event loop."))
            add(b"riskmon_asyncio_tasks %d\n" % self._asyncio_tasks)
        self._render_delivery(add)
        add(_header("riskmon_build_info", "gauge", "Always 1; the labels name the build."))
        add(self._build_info)
        add(
            _header(
                "riskmon_start_time_seconds",
                "gauge",
                "When the process started, in seconds since the epoch.",
            )
        )
        add(b"riskmon_start_time_seconds %s\n" % _float_text(self._start_time))
        self._render_health(add)
        add(self._process.render())

    def _render_health(self, add: _Add) -> None:
        if self._internal_errors:
            add(
                _header(
                    "riskmon_internal_errors_total",
                    "counter",
                    "Crashes of riskmon's own tasks (logged with their traceback).",
                )
            )
            for task, count in self._internal_errors.items():
                add(b"riskmon_internal_errors_total{%s} %d\n" % (_labels(task=task), count))
        add(
            _header(
                "riskmon_event_loop_lag_seconds",
                "gauge",
                "How late the event loop ran the last periodic tick.",
            )
        )
        add(b"riskmon_event_loop_lag_seconds %s\n" % _float_text(self._loop_lag))
        add(
            _header(
                "riskmon_healthy",
                "gauge",
                "1 while riskmon can alert, 0 while /healthz fails (riskmon_health_problem: why).",
            )
        )
        add(b"riskmon_healthy %d\n" % (not self._health_problems))
        if self._health_problems:
            add(
                _header(
                    "riskmon_health_problem",
                    "gauge",
                    "1 for each component that keeps riskmon from alerting (/healthz names it).",
                )
            )
            for component in self._health_problems:
                add(b"riskmon_health_problem{%s} 1\n" % _labels(component=component))
        limit = self._process.memory_limit
        if limit is not None:
            add(
                _header(
                    "riskmon_memory_limit_bytes",
                    "gauge",
                    "The memory limit of riskmon's container (cgroup); absent when unlimited.",
                )
            )
            add(b"riskmon_memory_limit_bytes %d\n" % limit)

    def _render_delivery(self, add: _Add) -> None:
        name = b"riskmon_event_delivery_seconds"
        add(
            _header(
                name.decode(),
                "histogram",
                "From the venue answer that caused an alert event to the broker's PUBACK "
                "of it (events no answer caused, such as staleness, are not timed).",
            )
        )
        cumulative = 0
        for bound, count in zip(_DELIVERY_LABELS, self._delivery_buckets, strict=True):
            cumulative += count
            add(b'%s_bucket{le="%s"} %d\n' % (name, bound, cumulative))
        add(b"%s_sum %s\n" % (name, _float_text(self._delivery_sum)))
        add(b"%s_count %d\n" % (name, cumulative))


def _param_ends(
    defaults: Mapping[str, Any], overrides: Mapping[str, Any] = _NO_PARAMS
) -> tuple[bytes, ...]:
    """The ends of an account's `riskmon_account_param` lines: `,param="name"} value\n`
    for each numeric param, `overrides` over `defaults`, by name."""
    merged = {**defaults, **overrides}
    ends = []
    for name in sorted(merged):
        value = format_value(merged[name])
        if value is not None:
            ends.append(b"," + _labels(param=name) + b"} " + value + b"\n")
    return tuple(ends)


def _param_lines(record: _Account) -> bytes:
    """An account's `riskmon_account_param` lines."""
    labels = record.entries[_LABELS_SHORT]  # b'venue="..",account=".."} '
    assert labels is not None
    head = _ACCOUNT_PARAM.open + labels[:-2]
    return head.join((b"", *record.params))  # head + end1 + head + end2 ...


def _gauges(
    add: _Add, name: str, help_text: str, series: Iterable[tuple[bytes, bool | int | None]]
) -> None:
    lines = [
        b"%s{%s} %d\n" % (name.encode(), labels, int(value))
        for labels, value in series
        if value is not None
    ]
    if lines:
        add(_header(name, "gauge", help_text))
        add(b"".join(lines))
