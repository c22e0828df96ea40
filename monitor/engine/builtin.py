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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache, lru_cache

from monitor.engine.expr import compile_expression
from monitor.engine.model import Rule, RuleGroup, RuleSet, Severity
from monitor.engine.templates import compile_template
from monitor.snapshot import Snapshot
from monitor.yamlsource import Location

GROUP = "riskmon"
VENUE_WIDE = "*"  # the `account` of venue-wide alerts
RISKMON = "riskmon"  # the `venue` (and venue kind) of the alerts about riskmon itself
EVENTS_UNDELIVERABLE = "EventsUndeliverable"
UNDELIVERABLE_SETTLE = 15.0  # seconds EventsUndeliverable keeps firing without dead letters
_WHERE = Location("<built-in rules>", 1, 1)


@dataclass(frozen=True, slots=True)
class AccountHealth:
    """What the poller knows about one account, as the built-in rules need it."""

    venue: str
    venue_kind: str
    account: str
    data_age: float  # seconds since the last good snapshot (or since monitoring began)
    stale_after: float
    consecutive_failures: int
    last_error: str | None = None
    auth_failed: bool = False
    labels: tuple[tuple[str, str], ...] = ()


def _rule(
    alert: str,
    expr: str,
    severity: Severity,
    summary: str,
    description: str,
    *,
    keep_firing_for: float = 0.0,
) -> Rule:
    return Rule(
        alert=alert,
        expr=compile_expression(expr, where=_WHERE),
        group=GROUP,
        file=_WHERE.file,
        location=_WHERE,
        severity=severity,
        on_missing="keep",
        keep_firing_for=keep_firing_for,
        annotations={
            "summary": compile_template(summary, where=_WHERE),
            "description": compile_template(description, where=_WHERE),
            "runbook_url": compile_template(
                f"https://runbooks.example.com/riskmon/{alert}", where=_WHERE
            ),
        },
    )


def _either(firing: str, resolved: str) -> str:
    """A template that reads `firing` while the alert is pending or firing and
    `resolved` in its resolved event, which renders with the values that resolved it."""
    return f"{{% if resolved %}}{resolved}{{% else %}}{firing}{{% endif %}}"


@cache
def builtin_rules() -> RuleSet:
    rules = (
        _rule(
            "AccountDataStale",
            "account != '*' and data_age_seconds > stale_after_seconds",
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
        ),
        _rule(
            "VenueDown",
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
        _rule(
            "VenueAuthFailed",
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
        _rule(
            EVENTS_UNDELIVERABLE,
            "dead_letters > 0",
            "critical",
            _either(
                "riskmon: {{ dead_letters }} alert event(s) refused by the MQTT broker, "
                "not delivered",
                "riskmon: no alert event waits as a dead letter any more "
                "({{ dead_letters }} now, {{ firing_values.dead_letters }} when it fired)",
            ),
            _either(
                "The broker refused these events again and again (an ACL, most likely; "
                "riskmon's log names each topic and reason), so riskmon set them aside as dead "
                "letters in its outbox (state_dir/riskmon.db) and delivers the others. Fix the "
                "broker, then send riskmon SIGHUP (or restart it): dead letters are queued "
                "again then.",
                "The outbox holds no dead letters any more: the broker took the events it "
                "had refused.",
            ),
            # Re-queued dead letters (start-up, SIGHUP) are 0 for the few seconds the
            # broker takes to refuse them again: no resolve-and-fire for that.
            keep_firing_for=UNDELIVERABLE_SETTLE,
        ),
    )
    group = RuleGroup(name=GROUP, file=_WHERE.file, location=_WHERE, rules=rules)
    return RuleSet(groups=(group,), files=())


def health_snapshots(
    accounts: Iterable[AccountHealth],
    now: float,
    *,
    skip: Callable[[AccountHealth], bool] | None = None,
) -> list[Snapshot]:
    """One health snapshot per account and one per venue (account `*`).

    Accounts for which `skip` is true get no snapshot of their own (they count in their
    venue's all the same): the daemon skips those that `could_be_stale` says cannot be
    and that hold no alert, since evaluating them cannot change anything.
    """
    snapshots: list[Snapshot] = []
    venues: dict[tuple[str, str], list[AccountHealth]] = {}
    for health in accounts:
        venues.setdefault((health.venue, health.venue_kind), []).append(health)
        if skip is not None and skip(health):
            continue
        fields: dict[str, object] = {
            "data_age_seconds": Decimal(f"{health.data_age:.1f}"),
            "stale_after_seconds": _seconds(health.stale_after),
            "consecutive_failures": Decimal(health.consecutive_failures),
            "last_error": health.last_error or "none",
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
