"""The alert lifecycle, table-driven in the spirit of Prometheus' alerting tests.

Each case is a rule (`for`, `keep_firing_for`, whether it has a `clear`, `on_missing`)
and rows of (time, condition, clear) with the phase expected after that evaluation and
the event expected from it. Every row also checks that the annotations were rendered
exactly when the alert changed phase (and not when a pending alert lapsed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from monitor.engine.builtin import AccountHealth, builtin_rules, health_snapshots
from monitor.engine.evaluate import Evaluator
from monitor.engine.expr import MISSING, EvalError, compile_expression
from monitor.engine.lifecycle import (
    REASON_ACCOUNT_GONE,
    REASON_RULE_REMOVED,
    Alert,
    AlertBook,
    AlertEvent,
    AlertPhase,
    Observation,
    fingerprint,
    format_value,
    step,
)
from monitor.engine.model import OnMissing, Rule, RuleGroup, RuleSet, Severity
from monitor.engine.templates import compile_template
from monitor.snapshot import Snapshot
from monitor.yamlsource import Location

T, F, M = True, False, MISSING
E = EvalError("division by zero")
INACTIVE, PENDING, FIRING = AlertPhase.INACTIVE, AlertPhase.PENDING, AlertPhase.FIRING
VENUE, KIND, ACCOUNT = "cs-prod", "clearstreet", "19816"


def make_rule(
    *,
    for_: float = 0.0,
    keep_firing_for: float = 0.0,
    clear: bool = False,
    on_missing: OnMissing = "keep",
    severity: Severity = "critical",
    alert: str = "BuyingPowerBelowFloor",
    group: str = "capital",
    expr: str = "buying_power < params.floor",
) -> Rule:
    return Rule(
        alert=alert,
        expr=compile_expression(expr),
        group=group,
        file="rules/capital.yaml",
        location=Location("rules/capital.yaml", 5, 9),
        clear=compile_expression("buying_power >= params.floor * 1.05") if clear else None,
        for_=for_,
        keep_firing_for=keep_firing_for,
        severity=severity,
        on_missing=on_missing,
    )


class Renderer:
    """A render function that counts its calls and keeps what it was told."""

    def __init__(self) -> None:
        self.calls = 0
        self.told: list[tuple[bool, dict[str, str]]] = []

    def __call__(self, resolved: bool, firing_values: Mapping[str, str]) -> dict[str, str]:
        self.calls += 1
        self.told.append((resolved, dict(firing_values)))
        return {"summary": f"{'resolved' if resolved else 'render'} {self.calls}"}


def observation(
    condition: Any, clear: Any = None, render: Renderer | None = None, value: str = "24000.00"
) -> Observation:
    return Observation(
        condition=condition,
        clear=clear,
        values={"buying_power": Decimal(value)},
        render=render if render is not None else Renderer(),
    )


# (time, condition, clear, expected phase, expected event status or None)
Row = tuple[float, Any, Any, AlertPhase, str | None]


@dataclass(frozen=True)
class Case:
    name: str
    rows: list[Row]
    for_: float = 0.0
    keep_firing_for: float = 0.0
    clear: bool = False
    on_missing: OnMissing = "keep"
    #: Extra checks of the alert after a row: time -> {attribute: value}.
    state: Mapping[float, Mapping[str, Any]] = field(default_factory=dict)


CASES = [
    # ------------------------------------------------------------------ for / pending
    Case(
        "for 0 fires in the first true step and resolves in the first false one",
        [
            (0, T, None, FIRING, "firing"),
            (10, T, None, FIRING, None),
            (20, F, None, INACTIVE, "resolved"),
            (30, F, None, INACTIVE, None),
            (40, T, None, FIRING, "firing"),
        ],
        state={0: {"active_at": 0, "fired_at": 0}, 40: {"active_at": 40, "fired_at": 40}},
    ),
    Case(
        "for 30s: pending, then firing exactly at 30s",
        [
            (0, T, None, PENDING, None),
            (10, T, None, PENDING, None),
            (29.999, T, None, PENDING, None),
            (30, T, None, FIRING, "firing"),
            (40, T, None, FIRING, None),
            (50, F, None, INACTIVE, "resolved"),
        ],
        for_=30,
        state={
            10: {"active_at": 0, "fired_at": None},
            30: {"active_at": 0, "fired_at": 30},
            40: {"active_at": 0, "fired_at": 30, "last_evaluated_at": 40},
        },
    ),
    Case(
        "for 30s with 20s steps fires at the first step at or past 30s",
        [
            (0, T, None, PENDING, None),
            (20, T, None, PENDING, None),
            (40, T, None, FIRING, "firing"),
        ],
        for_=30,
    ),
    Case(
        "a pending alert whose condition turns false goes back to inactive silently",
        [
            (0, T, None, PENDING, None),
            (20, F, None, INACTIVE, None),
            (30, T, None, PENDING, None),  # the timer starts again
            (50, T, None, PENDING, None),
            (60, T, None, FIRING, "firing"),
        ],
        for_=30,
        state={30: {"active_at": 30}, 60: {"active_at": 30, "fired_at": 60}},
    ),
    # ------------------------------------------------------------------ keep_firing_for
    Case(
        "keep_firing_for holds the alert, and resets when the condition returns",
        [
            (0, T, None, FIRING, "firing"),
            (10, F, None, FIRING, None),
            (40, F, None, FIRING, None),
            (50, T, None, FIRING, None),  # back: the hold starts over
            (60, F, None, FIRING, None),
            (119, F, None, FIRING, None),
            (120, F, None, INACTIVE, "resolved"),
        ],
        keep_firing_for=60,
        state={
            10: {"keep_firing_since": 10},
            40: {"keep_firing_since": 10},
            50: {"keep_firing_since": None},
            60: {"keep_firing_since": 60},
            120: {"keep_firing_since": None, "resolved_at": 120},
        },
    ),
    # ------------------------------------------------------------------ clear (hysteresis)
    Case(
        "with a clear condition a false expr alone keeps firing: the hysteresis band",
        [
            (0, F, T, INACTIVE, None),  # clear is ignored while not firing
            (10, T, F, FIRING, "firing"),
            (20, F, F, FIRING, None),  # in the band
            (30, T, F, FIRING, None),
            (40, F, F, FIRING, None),
            (50, F, T, INACTIVE, "resolved"),
        ],
        clear=True,
        state={20: {"keep_firing_since": None}},
    ),
    Case(
        "with a clear condition, a true clear resolves even if the expr still holds",
        [(0, T, F, FIRING, "firing"), (10, T, T, INACTIVE, "resolved")],
        clear=True,
    ),
    Case(
        "clear with keep_firing_for: the clear must hold that long, the band resets it",
        [
            (0, T, F, FIRING, "firing"),
            (10, F, T, FIRING, None),
            (20, F, F, FIRING, None),  # back in the band: reset
            (30, F, T, FIRING, None),
            (59, F, T, FIRING, None),
            (60, F, T, INACTIVE, "resolved"),
        ],
        clear=True,
        keep_firing_for=30,
        state={10: {"keep_firing_since": 10}, 20: {"keep_firing_since": None}},
    ),
    # ------------------------------------------------------------------ on_missing: keep
    Case(
        "keep: a missing condition starts nothing",
        [(0, M, None, INACTIVE, None), (10, E, None, INACTIVE, None)],
        for_=30,
    ),
    Case(
        "keep: a pending alert stays pending, without progress and without losing its timer",
        [
            (0, T, None, PENDING, None),
            (10, M, None, PENDING, None),
            (40, M, None, PENDING, None),  # past `for`, but missing: no progress
            (50, T, None, FIRING, "firing"),  # the timer was kept: 50 - 0 >= 30
        ],
        for_=30,
        state={40: {"active_at": 0}, 50: {"active_at": 0, "fired_at": 50}},
    ),
    Case(
        "keep: a firing alert stays firing, its keep_firing_since untouched",
        [
            (0, T, None, FIRING, "firing"),
            (10, F, None, FIRING, None),
            (20, M, None, FIRING, None),
            (30, E, None, FIRING, None),
            (40, F, None, INACTIVE, "resolved"),  # 40 - 10 >= 30
        ],
        keep_firing_for=30,
        state={20: {"keep_firing_since": 10}, 30: {"keep_firing_since": 10}},
    ),
    Case(
        "keep: a missing clear keeps a firing alert as it is",
        [
            (0, T, F, FIRING, "firing"),
            (10, F, M, FIRING, None),
            (20, F, E, FIRING, None),
            (30, F, T, INACTIVE, "resolved"),
        ],
        clear=True,
    ),
    Case(
        "keep: while firing with a clear, only the clear decides, not a missing expr",
        [(0, T, F, FIRING, "firing"), (10, M, F, FIRING, None), (20, M, T, INACTIVE, "resolved")],
        clear=True,
    ),
    # ------------------------------------------------------------------ on_missing: resolve
    Case(
        "resolve: missing starts nothing and ends a pending alert silently",
        [
            (0, M, None, INACTIVE, None),
            (10, T, None, PENDING, None),
            (20, M, None, INACTIVE, None),
        ],
        for_=30,
        on_missing="resolve",
    ),
    Case(
        "resolve: missing resolves a firing alert, after keep_firing_for",
        [
            (0, T, None, FIRING, "firing"),
            (10, M, None, FIRING, None),
            (20, E, None, INACTIVE, "resolved"),
        ],
        keep_firing_for=10,
        on_missing="resolve",
    ),
    Case(
        "resolve: a missing clear counts as a true clear",
        [(0, T, F, FIRING, "firing"), (10, F, F, FIRING, None), (20, F, M, INACTIVE, "resolved")],
        clear=True,
        on_missing="resolve",
    ),
    # ------------------------------------------------------------------ on_missing: fire
    Case(
        "fire: missing starts the alert and counts toward `for`",
        [
            (0, M, None, PENDING, None),
            (10, F, None, INACTIVE, None),
            (20, E, None, PENDING, None),
            (50, M, None, FIRING, "firing"),
            (60, F, None, INACTIVE, "resolved"),
        ],
        for_=30,
        on_missing="fire",
    ),
    Case(
        "fire: missing while firing is not cleared and resets keep_firing_since",
        [
            (0, T, None, FIRING, "firing"),
            (10, F, None, FIRING, None),
            (20, M, None, FIRING, None),
            (30, F, None, FIRING, None),
            (44, F, None, FIRING, None),
            (45, F, None, INACTIVE, "resolved"),
        ],
        keep_firing_for=15,
        on_missing="fire",
        state={10: {"keep_firing_since": 10}, 20: {"keep_firing_since": None}},
    ),
    Case(
        "fire: a missing clear keeps a firing alert firing",
        [(0, T, F, FIRING, "firing"), (10, F, M, FIRING, None), (20, F, T, INACTIVE, "resolved")],
        clear=True,
        on_missing="fire",
    ),
    # ------------------------------------------------------------------ what is missing
    Case(
        "an EvalError or a non-boolean counts as missing, never as true or false",
        [
            (0, Decimal(1), None, INACTIVE, None),
            (10, "yes", None, INACTIVE, None),
            (20, None, None, INACTIVE, None),
            (30, T, None, FIRING, "firing"),
            (40, 0, None, FIRING, None),
            (50, E, None, FIRING, None),
            (60, F, None, INACTIVE, "resolved"),
        ],
    ),
]


def _phase(book: AlertBook) -> AlertPhase:
    alert = book.get("capital/BuyingPowerBelowFloor", VENUE, ACCOUNT)
    return INACTIVE if alert is None else alert.phase


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_lifecycle_table(case: Case) -> None:
    rule = make_rule(
        for_=case.for_,
        keep_firing_for=case.keep_firing_for,
        clear=case.clear,
        on_missing=case.on_missing,
    )
    book = AlertBook()
    lone = Alert(
        rule_key=rule.key,
        alertname=rule.alert,
        severity=rule.severity,
        venue=VENUE,
        venue_kind=KIND,
        account=ACCOUNT,
        labels={},
        fingerprint="f" * 32,
    )
    for at, condition, clear, want_phase, want_event in case.rows:
        before = _phase(book)
        render = Renderer()
        obs = observation(condition, clear, render)
        event = book.observe(
            rule, venue=VENUE, venue_kind=KIND, account=ACCOUNT, labels={}, obs=obs, now=at
        )
        where = f"at {at}: condition {condition!r}, clear {clear!r}"
        assert _phase(book) is want_phase, where
        assert (event.status if event else None) == want_event, where
        changed = want_phase is not before and want_phase is not INACTIVE
        # rendered on every transition but a pending alert lapsing, a resolve included
        assert render.calls == (1 if changed or want_event is not None else 0), where
        alert = book.get(rule.key, VENUE, ACCOUNT)
        if event is not None:
            assert event.at == at
            assert event.ends_at == (None if event.status == "firing" else at)
            resolved = event.status == "resolved"
            word = "resolved" if resolved else "render"
            assert event.annotations == {"summary": f"{word} 1"}
            assert render.told == [(resolved, {"buying_power": "24000.00"})]
            assert event.values == {"buying_power": "24000.00"}
            assert event.firing_values == {"buying_power": "24000.00"}
            assert event.reason is None
            if alert is not None:
                assert event.starts_at == alert.active_at

        # `step` on a standalone Alert agrees with the book; it stays around when inactive
        lone_event = step(lone, rule, observation(condition, clear), at)
        assert lone.phase is want_phase, where
        assert (lone_event is None) == (event is None), where
        if event is not None:
            assert lone_event is not None
            assert (lone_event.status, lone_event.starts_at) == (event.status, event.starts_at)
        if alert is not None:
            assert alert.to_dict() == lone.to_dict() | {"fingerprint": alert.fingerprint}
        for name, value in case.state.get(at, {}).items():
            assert getattr(lone, name) == value, f"{where}: {name}"


def test_resolved_event_carries_start_and_end() -> None:
    rule = make_rule(for_=30, keep_firing_for=10)
    book = AlertBook()
    for at, cond in ((100, T), (130, T), (140, F)):
        book.observe(
            rule,
            venue=VENUE,
            venue_kind=KIND,
            account=ACCOUNT,
            labels={"desk": "equities"},
            obs=observation(cond),
            now=at,
        )
    event = book.observe(
        rule,
        venue=VENUE,
        venue_kind=KIND,
        account=ACCOUNT,
        labels={"desk": "equities"},
        obs=observation(F, value="26500.5"),
        now=150,
    )
    assert event is not None
    assert event.status == "resolved"
    assert (event.starts_at, event.ends_at, event.at) == (100, 150, 150)
    assert event.values == {"buying_power": "26500.5"}
    assert event.labels == {"desk": "equities"}
    assert event.severity == "critical"
    assert event.rule_key == "capital/BuyingPowerBelowFloor"
    assert (event.venue, event.venue_kind, event.account) == (VENUE, KIND, ACCOUNT)
    assert event.fingerprint == fingerprint(
        "BuyingPowerBelowFloor", VENUE, ACCOUNT, {"desk": "equities", "severity": "critical"}
    )
    assert AlertEvent.from_dict(json.loads(json.dumps(event.to_dict()))) == event


# ---------------------------------------------------------------------- render calls


def test_render_is_called_only_on_transitions() -> None:
    rule = make_rule(for_=20)
    book = AlertBook()
    render = Renderer()
    conditions = [T, T, T, T, T, T, F, F, T, F, T, T, T]  # 10 s apart
    events = []
    for i, cond in enumerate(conditions):
        obs = Observation(condition=cond, values={}, render=render)
        event = book.observe(
            rule, venue=VENUE, venue_kind=KIND, account=ACCOUNT, labels={}, obs=obs, now=i * 10
        )
        if event is not None:
            events.append((i * 10, event.status, dict(event.annotations)))
    # pending at 0, firing at 20, resolved at 60 (rendered again, as resolved),
    # pending at 80 (lapses silently at 90), pending at 100, firing at 120
    assert render.calls == 6
    assert events == [
        (20, "firing", {"summary": "render 2"}),
        (60, "resolved", {"summary": "resolved 3"}),
        (120, "firing", {"summary": "render 6"}),
    ]


def test_values_are_kept_each_step_and_annotations_only_at_transitions() -> None:
    rule = make_rule()
    book = AlertBook()
    kwargs: dict[str, Any] = {"venue": VENUE, "venue_kind": KIND, "account": ACCOUNT, "labels": {}}
    book.observe(rule, obs=observation(T, value="24000.00"), now=0, **kwargs)
    book.observe(rule, obs=observation(T, value="23000.10"), now=10, **kwargs)
    alert = book.get(rule.key, VENUE, ACCOUNT)
    assert alert is not None
    assert alert.values == {"buying_power": "23000.10"}
    assert alert.annotations == {"summary": "render 1"}  # from the firing transition
    assert alert.last_evaluated_at == 10


def test_format_value() -> None:
    assert format_value(Decimal("24000.00")) == "24000.00"
    assert format_value(Decimal("-0.5")) == "-0.5"
    assert format_value(True) == "true"
    assert format_value(False) == "false"
    assert format_value(None) == "null"
    assert format_value(0.1) == "0.1"
    assert format_value(3) == "3"
    assert format_value("USD") == "USD"
    alert = Alert("r", "A", "info", "v", "k", "a", {}, "f", raw_values={"x": MISSING, "y": 1})
    assert alert.values == {"y": "1"}


# ---------------------------------------------------------------------- restarts


def _run(book: AlertBook, rule: Rule, rows: list[tuple[float, Any]]) -> list[AlertEvent]:
    events = []
    for at, cond in rows:
        event = book.observe(
            rule,
            venue=VENUE,
            venue_kind=KIND,
            account=ACCOUNT,
            labels={"desk": "eq"},
            obs=observation(cond),
            now=at,
        )
        if event is not None:
            events.append(event)
    return events


def _restart(book: AlertBook) -> AlertBook:
    return AlertBook.from_json(json.loads(json.dumps(book.to_json())))


def test_alert_to_dict_from_dict_round_trip_mid_firing() -> None:
    rule = make_rule(for_=30, keep_firing_for=60)
    book = AlertBook()
    _run(book, rule, [(0, T), (30, T), (40, F)])
    alert = book.get(rule.key, VENUE, ACCOUNT)
    assert alert is not None
    assert alert.phase is FIRING
    data = json.loads(json.dumps(alert.to_dict()))
    assert data["phase"] == "firing"
    assert data["values"] == {"buying_power": "24000.00"}
    restored = Alert.from_dict(data)
    assert restored.to_dict() == alert.to_dict()
    assert (restored.active_at, restored.fired_at, restored.keep_firing_since) == (0, 30, 40)


def test_restart_does_not_reannounce_a_firing_alert() -> None:
    rule = make_rule(for_=30)
    book = AlertBook()
    assert [e.status for e in _run(book, rule, [(0, T), (30, T)])] == ["firing"]
    restored = _restart(book)
    assert _run(restored, rule, [(300, T), (310, T)]) == []
    alert = restored.get(rule.key, VENUE, ACCOUNT)
    assert alert is not None
    assert (alert.phase, alert.active_at, alert.fired_at) == (FIRING, 0, 30)
    (event,) = _run(restored, rule, [(320, F)])
    assert (event.status, event.starts_at, event.ends_at) == ("resolved", 0, 320)
    assert event.fingerprint == book.firing()[0].fingerprint


def test_restart_resolves_at_first_evaluation_if_cleared_while_down() -> None:
    rule = make_rule()
    book = AlertBook()
    _run(book, rule, [(0, T)])
    restored = _restart(book)
    (event,) = _run(restored, rule, [(600, F)])
    assert (event.status, event.at, event.starts_at) == ("resolved", 600, 0)
    assert len(restored) == 0


def test_restart_measures_keep_firing_for_from_the_first_evaluation() -> None:
    rule = make_rule(keep_firing_for=60)
    book = AlertBook()
    _run(book, rule, [(0, T), (10, F)])  # keep_firing_since 10 when the daemon stops
    restored = _restart(book)
    alert = restored.get(rule.key, VENUE, ACCOUNT)
    assert alert is not None
    assert alert.keep_firing_since is None
    assert _run(restored, rule, [(600, F), (659, F)]) == []
    (event,) = _run(restored, rule, [(660, F)])
    assert event.status == "resolved"


def test_restart_keeps_a_pending_alerts_timer() -> None:
    rule = make_rule(for_=30)
    book = AlertBook()
    _run(book, rule, [(0, T)])
    restored = _restart(book)
    (event,) = _run(restored, rule, [(40, T)])
    assert (event.status, event.starts_at) == ("firing", 0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"phase": "burning"}, "phase must be inactive, pending or firing"),
        ({"active_at": "yesterday"}, "active_at must be a number or null"),
        ({"active_at": None}, "a firing alert needs active_at"),
        ({"fired_at": None}, "a firing alert needs fired_at"),
        ({"labels": {"a": 1}}, "labels must map strings to strings"),
        ({"venue": None}, "venue must be a string"),
    ],
)
def test_from_json_refuses_malformed_state(change: dict[str, Any], message: str) -> None:
    book = AlertBook()
    _run(book, make_rule(), [(0, T)])
    item = {**book.to_json()[0], **change}
    with pytest.raises(ValueError, match=f"alert state item 0: alert state: {message}"):
        AlertBook.from_json([item])


def test_from_json_refuses_duplicates_and_skips_inactive() -> None:
    book = AlertBook()
    _run(book, make_rule(), [(0, T)])
    item = book.to_json()[0]
    with pytest.raises(ValueError, match="appears twice"):
        AlertBook.from_json([item, item])
    assert len(AlertBook.from_json([{**item, "phase": "inactive"}])) == 0


# ---------------------------------------------------------------------- fingerprints


def test_fingerprint_is_stable() -> None:
    labels = {"desk": "equities", "severity": "critical"}
    fp = fingerprint("BuyingPowerBelowFloor", "cs-prod", "19816", labels)
    assert fp == "d90be8ba32b1ba1c2b55c427bb8e1d00"  # golden: never changes across releases
    assert len(fp) == 32
    assert fp == fingerprint(
        "BuyingPowerBelowFloor", "cs-prod", "19816", dict(reversed(labels.items()))
    )


@pytest.mark.parametrize(
    "other",
    [
        ("BuyingPowerBelowFloor", "cs-prod", "19816", {"desk": "equities", "severity": "warning"}),
        ("BuyingPowerBelowFloor", "cs-prod", "19816", {"desk": "options", "severity": "critical"}),
        ("BuyingPowerBelowFloor", "cs-prod", "19816", {"severity": "critical"}),
        ("BuyingPowerBelowFloor", "cs-prod", "19817", {"desk": "equities", "severity": "critical"}),
        ("BuyingPowerBelowFloor", "cs-uat", "19816", {"desk": "equities", "severity": "critical"}),
        ("MarginExcessNegative", "cs-prod", "19816", {"desk": "equities", "severity": "critical"}),
        # no ambiguity from where one string ends and the next begins
        ("BuyingPowerBelowFloor", "cs-prod1", "9816", {"desk": "equities", "severity": "critical"}),
    ],
)
def test_fingerprint_differs(other: tuple[str, str, str, dict[str, str]]) -> None:
    base = fingerprint(
        "BuyingPowerBelowFloor", "cs-prod", "19816", {"desk": "equities", "severity": "critical"}
    )
    assert fingerprint(*other) != base


def test_book_fingerprint_includes_severity() -> None:
    book = AlertBook()
    for severity in ("critical", "warning"):
        rule = make_rule(severity=severity, group=severity)
        _run(book, rule, [(0, T)])
    critical, warning = book.firing()
    assert critical.fingerprint != warning.fingerprint
    assert critical.fingerprint == fingerprint(
        "BuyingPowerBelowFloor", VENUE, ACCOUNT, {"desk": "eq", "severity": "critical"}
    )
    assert critical.labels == {"desk": "eq"}


# ---------------------------------------------------------------------- AlertBook


def _observe(book: AlertBook, rule: Rule, account: str, cond: Any, now: float) -> Any:
    return book.observe(
        rule,
        venue=VENUE,
        venue_kind=KIND,
        account=account,
        labels={},
        obs=observation(cond),
        now=now,
    )


def test_book_keeps_only_pending_and_firing_alerts() -> None:
    book = AlertBook()
    rules = [make_rule(alert=f"Rule{i}", for_=30 if i % 2 else 0) for i in range(20)]
    for n in range(10_000):
        for rule in rules:
            assert _observe(book, rule, str(n), F, 0) is None
    assert len(book) == 0
    for rule in rules[:4]:
        _observe(book, rule, "1", T, 10)
    assert len(book) == 4
    assert sorted(a.alertname for a in book.firing()) == ["Rule0", "Rule2"]
    assert sorted(a.alertname for a in book.pending()) == ["Rule1", "Rule3"]
    assert len(book.active()) == 4
    for rule in rules[:4]:
        _observe(book, rule, "1", F, 20)
    assert len(book) == 0
    assert book.active() == []


def test_forget_account_resolves_firing_and_drops_pending() -> None:
    book = AlertBook()
    firing, pending = make_rule(alert="Firing"), make_rule(alert="Pending", for_=60)
    for account in ("a", "b"):
        _observe(book, firing, account, T, 0)
        _observe(book, pending, account, T, 0)
    events = book.forget_account(VENUE, "a", 100)
    assert len(events) == 1
    (event,) = events
    assert (event.status, event.alertname, event.account) == ("resolved", "Firing", "a")
    assert (event.reason, event.at, event.ends_at, event.starts_at) == (
        REASON_ACCOUNT_GONE,
        100,
        100,
        0,
    )
    # no evaluation resolved it: no current values, and the text says so
    assert event.values == {}
    assert event.firing_values == {"buying_power": "24000.00"}
    assert event.annotations == {
        "summary": (
            "cs-prod/a Firing ended without a new evaluation: account no longer monitored; "
            "no current values"
        ),
        "description": (
            "riskmon stopped evaluating this alert (account no longer monitored), so whether "
            "its condition still holds is unknown. It fired with buying_power 24000.00."
        ),
    }
    assert sorted((a.alertname, a.account) for a in book.active()) == [
        ("Firing", "b"),
        ("Pending", "b"),
    ]
    assert book.forget_account("other-venue", "b", 100) == []
    assert book.forget_account(VENUE, "a", 100) == []


def test_retain_rules_after_a_reload() -> None:
    book = AlertBook()
    kept = make_rule(alert="Kept", for_=30)
    removed_firing = make_rule(alert="Removed")
    removed_pending = make_rule(alert="RemovedPending", for_=30)
    for rule in (kept, removed_firing, removed_pending):
        _observe(book, rule, "a", T, 0)
    events = book.retain_rules({kept.key, "capital/Other"}, 10)
    assert [(e.alertname, e.status, e.reason) for e in events] == [
        ("Removed", "resolved", REASON_RULE_REMOVED)
    ]
    assert events[0].values == {}
    assert events[0].annotations["summary"] == (
        "cs-prod/a Removed ended without a new evaluation: rule removed; no current values"
    )
    assert [a.alertname for a in book.active()] == ["Kept"]
    # the rule's identity is its key: a new expression and `for` keep its state
    changed = make_rule(alert="Kept", for_=20, expr="buying_power < params.floor * 2")
    event = _observe(book, changed, "a", T, 20)
    assert event is not None
    assert (event.status, event.starts_at) == ("firing", 0)


def test_book_to_json_round_trip() -> None:
    book = AlertBook()
    rules = [make_rule(alert="A"), make_rule(alert="B", for_=30), make_rule(alert="C")]
    for rule in rules:
        _observe(book, rule, "a", T, 0)
    _observe(book, rules[0], "b", T, 5)
    data = json.loads(json.dumps(book.to_json()))
    restored = AlertBook.from_json(data)
    assert restored.to_json() == data
    assert [(a.alertname, a.account, a.phase) for a in restored.active()] == [
        ("A", "a", FIRING),
        ("B", "a", PENDING),
        ("C", "a", FIRING),
        ("A", "b", FIRING),
    ]
    assert restored.get("capital/B", VENUE, "a") is not None
    assert AlertBook.from_json([]).active() == []


def test_holds_any_follows_every_way_alerts_come_and_go() -> None:
    book = AlertBook()
    first, second = make_rule(alert="First"), make_rule(alert="Second", for_=30)
    assert not book.holds_any(VENUE, "a")
    _observe(book, first, "a", T, 0)
    _observe(book, second, "a", T, 0)
    _observe(book, first, "b", T, 0)
    assert book.holds_any(VENUE, "a")
    assert not book.holds_any("other-venue", "a")
    _observe(book, first, "a", F, 10)  # resolved: one alert of the account left
    assert book.holds_any(VENUE, "a")
    _observe(book, second, "a", F, 10)  # pending, back to inactive
    assert not book.holds_any(VENUE, "a")
    restored = AlertBook.from_json(book.to_json())
    assert restored.holds_any(VENUE, "b")
    restored.forget_account(VENUE, "b", 20)
    assert not restored.holds_any(VENUE, "b")
    _observe(book, second, "c", T, 30)
    book.retain_rules({first.key}, 40)
    assert not book.holds_any(VENUE, "c")
    assert book.holds_any(VENUE, "b")


def test_missing_with_fire_creates_an_alert_in_the_book() -> None:
    book = AlertBook()
    rule = make_rule(on_missing="fire")
    event = _observe(book, rule, "a", E, 0)
    assert event is not None
    assert event.status == "firing"
    assert _observe(book, make_rule(alert="Other"), "a", E, 0) is None  # keep: nothing
    assert len(book) == 1


# ------------------------------------------------- resolved events tell the truth (issue 12)


def _template_rule() -> Rule:
    """A rule whose annotations are real templates, as a rule file gives them."""
    where = Location("rules/capital.yaml", 9, 9)
    return Rule(
        alert="BuyingPowerBelowFloor",
        expr=compile_expression("buying_power < params.floor"),
        group="capital",
        file="rules/capital.yaml",
        location=where,
        severity="critical",
        params={"floor": Decimal(30000)},
        annotations={
            "summary": compile_template(
                "buying power {{ buying_power }} "
                "{% if resolved %}back above floor {{ params.floor }}, fired at "
                "{{ firing_values.buying_power }}{% else %}below floor {{ params.floor }}"
                "{% endif %}",
                where=where,
            ),
            "plain": compile_template(
                "buying power {{ buying_power }} below floor {{ params.floor }}", where=where
            ),
        },
    )


def _snapshot(buying_power: str, at: float) -> Snapshot:
    return Snapshot(
        venue=VENUE,
        venue_kind=KIND,
        account=ACCOUNT,
        fields={"buying_power": Decimal(buying_power)},
        taken_at=at,
    )


def test_resolved_event_renders_its_annotations_with_the_values_that_resolved_it() -> None:
    evaluator = Evaluator(RuleSet(groups=(_group(_template_rule()),)))
    (fired,) = evaluator.evaluate(_snapshot("20000.00", 0), 0)
    assert evaluator.evaluate(_snapshot("21000.00", 10), 10) == []  # still firing
    (resolved,) = evaluator.evaluate(_snapshot("44000.00", 20), 20)

    assert fired.status == "firing"
    assert fired.annotations["summary"] == "buying power 20000.00 below floor 30000"
    assert fired.values == fired.firing_values == {"buying_power": "20000.00"}

    assert resolved.status == "resolved"
    assert resolved.annotations == {
        "summary": "buying power 44000.00 back above floor 30000, fired at 20000.00",
        # a template that ignores `resolved` still renders with the current values
        "plain": "buying power 44000.00 below floor 30000",
    }
    assert resolved.values == {"buying_power": "44000.00"}
    assert resolved.firing_values == {"buying_power": "20000.00"}
    assert AlertEvent.from_dict(json.loads(json.dumps(resolved.to_dict()))) == resolved


def test_firing_values_survive_a_restart() -> None:
    rule = _template_rule()
    before = Evaluator(RuleSet(groups=(_group(rule),)))
    before.evaluate(_snapshot("20000.00", 0), 0)
    before.evaluate(_snapshot("21000.00", 10), 10)  # the last values before the stop
    book = _restart(before.book)
    alert = book.get(rule.key, VENUE, ACCOUNT)
    assert alert is not None
    assert alert.firing_values == {"buying_power": "20000.00"}
    after = Evaluator(RuleSet(groups=(_group(rule),)), book)
    (resolved,) = after.evaluate(_snapshot("44000.00", 600), 600)
    assert resolved.firing_values == {"buying_power": "20000.00"}
    assert resolved.annotations["summary"] == (
        "buying power 44000.00 back above floor 30000, fired at 20000.00"
    )


def test_state_saved_before_firing_values_existed_uses_the_last_values() -> None:
    rule = make_rule()
    book = AlertBook()
    _run(book, rule, [(0, T)])
    (saved,) = json.loads(json.dumps(book.to_json()))
    del saved["firing_values"]  # as an older release wrote it
    restored = AlertBook.from_json([saved])
    alert = restored.get(rule.key, VENUE, ACCOUNT)
    assert alert is not None
    assert alert.firing_values == {"buying_power": "24000.00"}
    pending = {**saved, "phase": "pending", "fired_at": None}
    alert = Alert.from_dict(pending)
    assert alert.firing_values == {}


def test_pending_render_is_told_no_firing_values() -> None:
    rule = make_rule(for_=30)
    render = Renderer()
    book = AlertBook()
    for at in (0, 30):
        obs = observation(T, render=render, value=str(20000 + at))
        book.observe(
            rule, venue=VENUE, venue_kind=KIND, account=ACCOUNT, labels={}, obs=obs, now=at
        )
    assert render.told == [(False, {}), (False, {"buying_power": "20030"})]


def _health(data_age: float) -> AccountHealth:
    return AccountHealth(
        venue=VENUE,
        venue_kind=KIND,
        account=ACCOUNT,
        data_age=data_age,
        stale_after=10.0,
        consecutive_failures=0 if data_age < 10 else 3,
        last_error=None if data_age < 10 else "HTTP 503",
    )


def test_builtin_staleness_reads_true_when_it_resolves() -> None:
    evaluator = Evaluator(builtin_rules())
    stale = [e for s in health_snapshots([_health(10.1)], 100) for e in evaluator.evaluate(s, 100)]
    fresh = [e for s in health_snapshots([_health(0.4)], 105) for e in evaluator.evaluate(s, 105)]
    (fired,) = [e for e in stale if e.alertname == "AccountDataStale"]
    (resolved,) = [e for e in fresh if e.alertname == "AccountDataStale"]
    assert fired.annotations["summary"] == f"{VENUE}/{ACCOUNT}: no good data for 10.1s"
    assert "Last error: HTTP 503" in fired.annotations["description"]
    assert resolved.annotations["summary"] == (
        f"{VENUE}/{ACCOUNT}: data fresh again, last good poll 0.4s ago (stale at 10.1s)"
    )
    assert "no good data" not in resolved.annotations["description"]
    assert resolved.values["data_age_seconds"] == "0.4"
    assert resolved.firing_values["data_age_seconds"] == "10.1"
    assert resolved.annotations["runbook_url"] == fired.annotations["runbook_url"]


def _group(*rules: Rule) -> RuleGroup:
    return RuleGroup(
        name="capital", file="rules/capital.yaml", location=rules[0].location, rules=rules
    )
