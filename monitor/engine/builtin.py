"""The built-in data-quality alerts, evaluated through the same pipeline as any rule.

The daemon turns the poller's account states into small *health snapshots* (one per
account, one per venue with account `*`) and evaluates these rules over them with an
Evaluator that shares the AlertBook of the user's rules:

| alert | on | fires when |
| --- | --- | --- |
| AccountDataStale | each account | no good poll for `stale_after` (or since monitoring began) |
| VenueDown | each venue (`*`) | every account of the venue is failing |
| VenueAuthFailed | each venue (`*`) | the venue refused the credentials (401/403) |
| EventsUndeliverable | riskmon (venue `riskmon`, account `*`) | events wait as dead letters |

`builtin_alerts` in the config sets each one's `for`, severity and labels
(`builtin_rules(settings)`). While VenueDown or VenueAuthFailed of a venue is pending,
its accounts' AccountDataStale is held back (`evaluate_health`, `StaleHold`): a
venue-wide outage must not page once per account while VenueDown waits out its `for`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final, NamedTuple

from monitor.config.model import BuiltinAlertsConfig
from monitor.engine.evaluate import Evaluator
from monitor.engine.expr import compile_expression
from monitor.engine.lifecycle import AlertEvent, AlertPhase
from monitor.engine.model import SEVERITIES, Rule, RuleGroup, RuleSet, Severity, Template
from monitor.engine.templates import compile_template
from monitor.snapshot import Snapshot
from monitor.yamlsource import Location

GROUP = "riskmon"
VENUE_WIDE = "*"  # the `account` of venue-wide alerts
RISKMON = "riskmon"  # the `venue` (and venue kind) of the alerts about riskmon itself
EVENTS_UNDELIVERABLE = "EventsUndeliverable"
UNDELIVERABLE_SETTLE = 15.0  # seconds EventsUndeliverable keeps firing without dead letters
_WHERE = Location("<built-in rules>", 1, 1)


class AccountHealth(NamedTuple):
    """What the poller knows about one account, as the built-in rules need it.

    A NamedTuple: the daemon makes one per account every second, and a frozen
    dataclass took twice as long to make (1.8 ms per 1,000 on a slow machine, holding
    the event loop)."""

    venue: str
    venue_kind: str
    account: str
    data_age: float  # seconds since the last good snapshot (or since monitoring began)
    stale_after: float
    consecutive_failures: int
    last_error: str | None = None
    auth_failed: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    polls: int = 0  # poll outcomes so far (answers and failures)


ACCOUNT_DATA_STALE: Final = "AccountDataStale"
VENUE_DOWN: Final = "VenueDown"
VENUE_AUTH_FAILED: Final = "VenueAuthFailed"
#: The default `for` of each built-in alert, in seconds.
DEFAULT_FOR: Final[Mapping[str, float]] = {
    ACCOUNT_DATA_STALE: 0.0,  # stale_after is its wait already
    VENUE_DOWN: 30.0,  # one 429 or a 10 s 503 is no outage
    VENUE_AUTH_FAILED: 0.0,  # a refusal is no glitch, and riskmon backs off 30 s anyway
    EVENTS_UNDELIVERABLE: 0.0,  # five refusals with back-off made the dead letters
}
#: Every built-in alert's name (inhibit rules may name them).
BUILTIN_ALERTNAMES: Final = frozenset(DEFAULT_FOR)
#: The venue-wide alerts that, while pending, hold back AccountDataStale of their venue.
_HOLDING_BACK: Final = (VENUE_DOWN, VENUE_AUTH_FAILED)
_RUNBOOK_URL: Final = "{{ runbook_url }}"  # the config's builtin_alerts.runbook_url


@dataclass(frozen=True, slots=True)
class _Builtin:
    alert: str
    expr: str
    severity: Severity
    summary: str
    description: str
    clear: str | None = None
    keep_firing_for: float = 0.0


def _either(firing: str, resolved: str) -> str:
    """A template that reads `firing` while the alert is pending or firing and
    `resolved` in its resolved event, which renders with the values that resolved it."""
    return f"{{% if resolved %}}{resolved}{{% else %}}{firing}{{% endif %}}"


_BUILTINS: Final = (
    _Builtin(
        ACCOUNT_DATA_STALE,
        # held back while its venue's VenueDown/VenueAuthFailed is pending (StaleHold);
        # once firing, only fresh data resolves it (`clear`), not being held back
        "account != '*' and data_age_seconds > stale_after_seconds and not held_back",
        "error",
        _either(
            "{{ venue }}/{{ account }}: no good data for {{ data_age_seconds }}s",
            "{{ venue }}/{{ account }}: data fresh again, last good poll "
            "{{ data_age_seconds }}s ago (stale at {{ firing_values.data_age_seconds }}s)",
        ),
        _either(
            "riskmon has had no successful poll of this account for longer than "
            "stale_after ({{ stale_after_seconds }}s), so its rules are blind. "
            "Last error: {{ last_error }}",
            "Polls of this account succeed again (stale_after {{ stale_after_seconds }}s); "
            "its rules see current data.",
        ),
        clear="data_age_seconds <= stale_after_seconds",
    ),
    _Builtin(
        VENUE_DOWN,
        "account == '*' and accounts > 0 and failing_accounts == accounts",
        "critical",
        _either(
            "{{ venue }}: every account is failing ({{ failing_accounts }} of {{ accounts }})",
            "{{ venue }}: polls succeed again ({{ failing_accounts }} of {{ accounts }} "
            "accounts failing)",
        ),
        _either(
            "No poll of any account of this venue succeeds. Check the venue's status page "
            "and riskmon's network path. Last error: {{ last_error }}",
            "Some polls of this venue succeed again.",
        ),
    ),
    _Builtin(
        VENUE_AUTH_FAILED,
        "account == '*' and auth_failed_accounts > 0",
        "critical",
        _either(
            "{{ venue }}: credentials refused for {{ auth_failed_accounts }} account(s)",
            "{{ venue }}: credentials accepted again (refused for "
            "{{ auth_failed_accounts }} account(s))",
        ),
        _either(
            "The venue answered 401/403: the API key or client credentials are wrong, "
            "expired or lack permission. riskmon backs off instead of retrying hot; fix "
            "the secret (files are re-read when they change). Last error: {{ last_error }}",
            "The venue no longer refuses riskmon's credentials.",
        ),
    ),
    _Builtin(
        EVENTS_UNDELIVERABLE,
        "dead_letters > 0",
        "critical",
        _either(
            "riskmon: {{ dead_letters }} alert event(s) refused by the MQTT broker, not delivered",
            "riskmon: no alert event waits as a dead letter any more "
            "({{ dead_letters }} now, {{ firing_values.dead_letters }} when it fired)",
        ),
        _either(
            "The broker refused these events again and again (an ACL, most likely; "
            "riskmon's log names each topic and reason), so riskmon set them aside as dead "
            "letters in its outbox (state_dir/riskmon.db) and delivers the others. Fix the "
            "broker, then send riskmon SIGHUP (or restart it): dead letters are queued "
            "again then.",
            "The outbox holds no dead letters any more: the broker took the events it had refused.",
        ),
        # Re-queued dead letters (start-up, SIGHUP) are 0 for the few seconds the
        # broker takes to refuse them again: no resolve-and-fire for that.
        keep_firing_for=UNDELIVERABLE_SETTLE,
    ),
)


class _Text:
    """A constant label value (the `Template` protocol without Jinja)."""

    __slots__ = ("source",)
    fields: frozenset[str] = frozenset()

    def __init__(self, source: str) -> None:
        self.source = source

    def render(self, context: Mapping[str, Any]) -> str:
        return self.source


def _severity(text: str | None, default: Severity) -> Severity:
    for severity in SEVERITIES:  # the config checked it is one of them
        if severity == text:
            return severity
    return default


def _rule(builtin: _Builtin, settings: BuiltinAlertsConfig) -> Rule:
    tuned = settings.of(builtin.alert)
    labels: dict[str, Template] = {name: _Text(value) for name, value in tuned.labels.items()}
    return Rule(
        alert=builtin.alert,
        expr=compile_expression(builtin.expr, where=_WHERE),
        clear=None if builtin.clear is None else compile_expression(builtin.clear, where=_WHERE),
        group=GROUP,
        file=_WHERE.file,
        location=_WHERE,
        for_=DEFAULT_FOR[builtin.alert] if tuned.for_ is None else tuned.for_,
        severity=_severity(tuned.severity, builtin.severity),
        on_missing="keep",
        keep_firing_for=builtin.keep_firing_for,
        labels=labels,
        annotations={
            "summary": compile_template(builtin.summary, where=_WHERE),
            "description": compile_template(builtin.description, where=_WHERE),
            "runbook_url": compile_template(_RUNBOOK_URL, where=_WHERE),
        },
    )


def builtin_rules(settings: BuiltinAlertsConfig | None = None) -> RuleSet:
    """The built-in rules as the config's `builtin_alerts` tunes them (None: defaults)."""
    tuned = settings if settings is not None else BuiltinAlertsConfig()
    rules = tuple(_rule(builtin, tuned) for builtin in _BUILTINS)
    group = RuleGroup(name=GROUP, file=_WHERE.file, location=_WHERE, rules=rules)
    return RuleSet(groups=(group,), files=())


class StaleHold:
    """Which accounts' AccountDataStale is held back: those of a venue whose VenueDown
    or VenueAuthFailed is pending, and, when it went back to inactive instead of
    firing, each of them until its next poll has answered or failed.

    The second part is for the end of an outage shorter than VenueDown's `for`: the
    first account that answers again ends VenueDown's condition, while the others are
    still stale until their turn comes (within a poll interval); they must not page
    for that moment. When the venue's alert fires, the outage is confirmed and the
    hold ends at once.
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        #: (venue, account) -> the account's poll count when its venue's alert stopped
        #: being pending (None while it is)
        self._held: dict[tuple[str, str], int | None] = {}

    def held(
        self, accounts: Iterable[AccountHealth], pending: Set[str], firing: Set[str]
    ) -> set[tuple[str, str]]:
        """The (venue, account) pairs held back now; `pending`, `firing`: the venues
        whose VenueDown or VenueAuthFailed is pending, or firing (and none pending)."""
        if not pending and not self._held:
            return set()
        before = self._held
        now_held: dict[tuple[str, str], int | None] = {}
        for health in accounts:
            key = (health.venue, health.account)
            if health.venue in pending:
                now_held[key] = None
            elif key in before and health.venue not in firing:
                since = before[key]
                if since is None:
                    now_held[key] = health.polls
                elif health.polls == since:
                    now_held[key] = since
        self._held = now_held
        return set(now_held)


def evaluate_health(
    evaluator: Evaluator,
    accounts: Sequence[AccountHealth],
    now: float,
    *,
    hold: StaleHold,
    skip: Callable[[AccountHealth], bool] | None = None,
) -> list[AlertEvent]:
    """The built-in rules over the accounts' health: the venues' snapshots first, so
    that the accounts' say whether their AccountDataStale is held back (`held_back`)
    by their venue's VenueDown or VenueAuthFailed pending in this very evaluation."""
    events: list[AlertEvent] = []
    for snapshot in venue_snapshots(accounts, now):
        events.extend(evaluator.evaluate(snapshot, now))
    book = evaluator.book
    pending: set[str] = set()
    firing: set[str] = set()
    for venue in {health.venue for health in accounts}:
        for alert in _HOLDING_BACK:
            found = book.get(f"{GROUP}/{alert}", venue, VENUE_WIDE)
            if found is not None:
                (pending if found.phase is AlertPhase.PENDING else firing).add(venue)
    held = hold.held(accounts, pending, firing - pending)
    for snapshot in account_snapshots(accounts, now, held=held, skip=skip):
        events.extend(evaluator.evaluate(snapshot, now))
    return events


def health_snapshots(
    accounts: Iterable[AccountHealth],
    now: float,
    *,
    skip: Callable[[AccountHealth], bool] | None = None,
) -> list[Snapshot]:
    """One health snapshot per account and one per venue (account `*`), no venue
    alert pending (`evaluate_health` is what the daemon runs)."""
    accounts = list(accounts)
    return account_snapshots(accounts, now, skip=skip) + venue_snapshots(accounts, now)


def account_snapshots(
    accounts: Iterable[AccountHealth],
    now: float,
    *,
    held: Set[tuple[str, str]] = frozenset(),
    skip: Callable[[AccountHealth], bool] | None = None,
) -> list[Snapshot]:
    """One health snapshot per account; `held`: the (venue, account) pairs whose
    AccountDataStale is held back (`StaleHold`).

    Accounts for which `skip` is true get no snapshot (they count in their venue's all
    the same): the daemon skips those that `could_be_stale` says cannot be and that
    hold no alert, since evaluating them cannot change anything.
    """
    snapshots: list[Snapshot] = []
    for health in accounts:
        if skip is not None and skip(health):
            continue
        fields: dict[str, object] = {
            "data_age_seconds": Decimal(f"{health.data_age:.1f}"),
            "stale_after_seconds": _seconds(health.stale_after),
            "consecutive_failures": Decimal(health.consecutive_failures),
            "last_error": health.last_error or "none",
            "held_back": (health.venue, health.account) in held,
        }
        snapshots.append(
            Snapshot(
                venue=health.venue,
                venue_kind=health.venue_kind,
                account=health.account,
                fields=fields,
                taken_at=now,
                labels=dict(health.labels),
            )
        )
    return snapshots


def venue_snapshots(accounts: Iterable[AccountHealth], now: float) -> list[Snapshot]:
    """One health snapshot per venue (account `*`)."""
    venues: dict[tuple[str, str], list[AccountHealth]] = {}
    for health in accounts:
        venues.setdefault((health.venue, health.venue_kind), []).append(health)
    snapshots: list[Snapshot] = []
    for (venue, venue_kind), members in venues.items():
        failing = [h for h in members if h.consecutive_failures > 0]
        errors = [h.last_error for h in failing if h.last_error]
        snapshots.append(
            Snapshot(
                venue=venue,
                venue_kind=venue_kind,
                account=VENUE_WIDE,
                taken_at=now,
                fields={
                    "accounts": Decimal(len(members)),
                    "failing_accounts": Decimal(len(failing)),
                    "auth_failed_accounts": Decimal(sum(1 for h in members if h.auth_failed)),
                    "last_error": errors[-1] if errors else "none",
                },
            )
        )
    return snapshots


def riskmon_snapshot(dead_letters: int, now: float, *, instance: str = "") -> Snapshot:
    """The health snapshot of riskmon itself, for EventsUndeliverable; labelled with
    the `instance`, so that the shards' alerts (and PagerDuty incidents) stay apart."""
    return Snapshot(
        venue=RISKMON,
        venue_kind=RISKMON,
        account=VENUE_WIDE,
        taken_at=now,
        fields={"dead_letters": Decimal(dead_letters)},
        labels={"instance": instance} if instance else {},
    )


def could_be_stale(health: AccountHealth) -> bool:
    """False when AccountDataStale's condition is surely false for the account: its data
    is more than 0.1 s younger than `stale_after`, as the rule reads both (the age to
    0.1 s, `stale_after` as `:g` text)."""
    return health.data_age >= float(_seconds(health.stale_after)) - 0.1


@lru_cache(maxsize=64)
def _seconds(seconds: float) -> Decimal:
    """`stale_after_seconds` as the health snapshots carry it."""
    return Decimal(f"{seconds:g}")
