"""What `riskmon demo` prints: the legend, the accounts table and alert events in words.

Pure functions of the daemon's account rows (`/api/v1/accounts`' shape), its alerts
(`/api/v1/alerts`'), the rules and the MQTT event payloads, so they are tested without
a daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from monitor.engine.evaluate import merged_params
from monitor.engine.model import Rule

SEVERITY_MARK: Final = {"critical": "!!", "error": "! ", "warning": "~ ", "info": "  "}
#: How close to its floor an account's value is "near" it: a fifth of the floor.
NEAR_SHARE: Final = Decimal("0.2")
WAITING: Final = "waiting for first poll"
INDENT: Final = " " * 12


def legend(stale_after: str) -> list[str]:
    """How to read the console, for someone who has never seen riskmon."""
    near = int(NEAR_SHARE * 100)
    return [
        "How to read this:",
        "  !! critical   ! error   ~ warning   (an alert event's severity)",
        "  FIRING    an alert's condition held for as long as its rule asks (`for`);",
        "            under it: why (its summary), the rule, the values it saw",
        "  RESOLVED  the condition cleared; under it: the values now, and those it",
        "            fired with",
        "  accounts  each account's watched value, its floor (the rule's threshold or",
        "            the account's own in riskmon.yaml), the distance to it, a state:",
        f"            ok, near (within {near}% of the floor), BELOW (under it),",
        f"            STALE (no good data for {stale_after}) or {WAITING};",
        "            and the account's alerts, pending (waiting out `for`) or firing",
    ]


@dataclass(frozen=True, slots=True)
class Floor:
    """A field an account must stay above: a rule's `X < params.X_floor`."""

    field: str
    param: str
    value: Decimal


def floors(rules: Iterable[Rule], account_params: Mapping[str, Any]) -> list[Floor]:
    """The floors the rules put under one account: each param `X_floor` of a rule that
    reads field `X`, with the account's own value of it or the rule's default."""
    found: dict[str, Floor] = {}
    for rule in rules:
        for name in sorted(rule.params.keys() | account_params.keys()):
            watched = name.removesuffix("_floor")
            if watched == name or watched not in rule.expr.fields or name in found:
                continue
            if f"params.{name}" not in rule.expr.fields:
                continue
            value = _decimal(merged_params(rule, account_params).get(name))
            if value is not None:
                found[name] = Floor(watched, name, value)
    return list(found.values())


@dataclass(frozen=True, slots=True)
class AccountLine:
    """One row of the accounts table: the cells and what is worth reprinting for."""

    cells: tuple[str, ...]  # HEADER's, then the account's alerts
    state: str

    @property
    def alerts(self) -> str:
        return self.cells[len(HEADER)]


HEADER: Final = ("account", "watches", "value", "floor", "distance", "state")


def account_lines(
    accounts: Sequence[Mapping[str, Any]],
    rules_for: Callable[[str, str], Iterable[Rule]],
    alerts: Sequence[Mapping[str, Any]],
) -> list[AccountLine]:
    """The table's rows: one per account and floor (one when it has none).

    `rules_for(venue, venue_kind)` gives the rules that apply to a venue's accounts.
    """
    lines: list[AccountLine] = []
    for row in accounts:
        venue, account = str(row.get("venue")), str(row.get("account"))
        names = _alert_names(alerts, venue, account)
        snapshot = row.get("snapshot")
        fields: Mapping[str, Any] = (snapshot or {}).get("fields") or {}
        kind = row.get("venue_kind")
        params = row.get("params") or {}
        account_floors = floors(rules_for(venue, str(kind)), params) if kind else []
        where = f"{venue}/{account}"
        if snapshot is None:
            failing = row.get("up") is False
            state = "poll failing" if failing else WAITING
            lines.append(AccountLine((where, "", "", "", "", state, names), state))
            continue
        stale = bool(row.get("stale"))
        if not account_floors:
            state = "STALE" if stale else "ok"
            lines.append(AccountLine((where, "", "", "", "", state, names), state))
        for floor in account_floors:
            value = _decimal(fields.get(floor.field))
            if value is None:
                state = "STALE" if stale else "no value"
                cells = (where, floor.field, "missing", _number(floor.value), "", state, names)
                lines.append(AccountLine(cells, state))
                continue
            distance = value - floor.value
            state = "STALE" if stale else _state(distance, floor.value)
            cells = (
                where,
                floor.field,
                _number(value),
                _number(floor.value),
                _distance(distance, floor.value),
                state,
                names,
            )
            lines.append(AccountLine(cells, state))
    return lines


def table(title: str, lines: Sequence[AccountLine]) -> list[str]:
    """The accounts table as text, its columns as wide as their widest cell; an
    account's alerts on a line of their own under it."""
    rows = [HEADER, *(line.cells[: len(HEADER)] for line in lines)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    right = {2, 3, 4}  # numbers
    out = [title]
    for row, alerts in zip(rows, ["", *(line.alerts for line in lines)], strict=True):
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.append(("  " + "  ".join(cells)).rstrip())
        if alerts:
            out.append(f"      alerts: {alerts}")
    return out


def _alert_names(alerts: Sequence[Mapping[str, Any]], venue: str, account: str) -> str:
    names = []
    for alert in alerts:
        if alert.get("venue") == venue and alert.get("account") == account:
            state = alert.get("state")
            names.append(f"{alert.get('alertname')} ({state})")
    return ", ".join(sorted(names))


def _state(distance: Decimal, floor: Decimal) -> str:
    if distance < 0:
        return "BELOW"
    if distance < abs(floor) * NEAR_SHARE:
        return "near"
    return "ok"


def _distance(distance: Decimal, floor: Decimal) -> str:
    text = f"{distance:+,.2f}"
    if floor:
        share = distance / abs(floor) * 100
        text += f" ({share:+.1f}%)" if abs(share) < 100 else f" ({share:+,.0f}%)"
    return text


def _number(value: Decimal) -> str:
    return f"{value:,.2f}"


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        return None
    return result if result.is_finite() else None


# -- events ---------------------------------------------------------------------------------


def event_lines(
    event: Mapping[str, Any],
    when: str,
    rule: Rule | None,
    account_params: Mapping[str, Any],
    fired_with: Mapping[str, Any] | None = None,
) -> list[str]:
    """One alert event in words: what happened, and why it fired or how it resolved.

    `rule` is the rule that raised it (None when unknown); `fired_with` the values it
    fired with when the event does not carry them (`firing_values`) itself.
    """
    status = str(event.get("status", ""))
    mark = SEVERITY_MARK.get(str(event.get("severity")), "  ")
    where = f"{event.get('venue')}/{event.get('account')}"
    head = f"{when} {mark} {status.upper():<8} {event.get('alertname')}  {where}"
    values = _texts(event.get("values"))
    params = _params(rule, account_params)
    annotations = event.get("annotations") or {}
    if status == "firing":
        lines = [head]
        summary = annotations.get("summary")
        if summary:
            lines.append(f"{INDENT}why:    {summary}")
        if rule is not None:
            held = f", held for {_seconds(rule.for_)}" if rule.for_ else ""
            lines.append(f"{INDENT}rule:   {rule.expr.source}{held}")
        shown = {**values, **params}
        if shown:
            lines.append(f"{INDENT}values: {_pairs(shown)}")
        return lines
    took = _between(event.get("starts_at"), event.get("ends_at"))
    lines = [head + (f"  after {took}" if took else "")]
    reason = event.get("reason")
    if reason:
        lines.append(f"{INDENT}how:    {reason}")
    then = _texts(event.get("firing_values")) or _texts(fired_with)
    if values:
        now_text = _pairs(values)
        if then and then != values:
            now_text += f"  (fired with {_pairs(then)})"
        lines.append(f"{INDENT}now:    {now_text}")
    if rule is not None:
        if rule.clear is not None:
            cleared = f"clears when {rule.clear.source}"
        else:
            cleared = f"no longer holds: {rule.expr.source}"
        if params:
            cleared += f"  ({_pairs(params)})"
        lines.append(f"{INDENT}rule:   {cleared}")
    return lines


def _params(rule: Rule | None, account_params: Mapping[str, Any]) -> dict[str, str]:
    """The params a rule's conditions read, as this account has them."""
    if rule is None:
        return {}
    names = set(rule.expr.fields) | (set(rule.clear.fields) if rule.clear else set())
    merged = merged_params(rule, account_params)
    out = {}
    for name in sorted(n for n in names if n.startswith("params.")):
        value = merged.get(name.removeprefix("params."))
        if value is not None:
            out[name] = str(value)
    return out


def _texts(values: Any) -> dict[str, str]:
    if not isinstance(values, Mapping):
        return {}
    return {str(k): str(v) for k, v in values.items()}


def _pairs(values: Mapping[str, str]) -> str:
    return ", ".join(f"{name} {value}" for name, value in values.items())


def _seconds(seconds: float) -> str:
    return f"{seconds:g}s"


def _between(start: Any, end: Any) -> str | None:
    """`end - start` of two RFC 3339 times, in whole seconds; None when unknown."""
    try:
        began = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        ended = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return None
    return f"{round((ended - began).total_seconds())}s"
