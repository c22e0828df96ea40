"""`riskmon test`: unit tests for rule files, in the spirit of `promtool test rules`.

```yaml
rule_files: [../capital.yaml]          # relative to this file
tests:
  - name: floor breach pages after 30s
    venue_kind: clearstreet
    account: {venue: cs, id: "19816", params: {buying_power_floor: 25000}, labels: {}}
                                       # id, labels, params: checked as in riskmon.yaml
    interval: 10s                      # time between samples (default 1m)
    fields: {equity: 100000}           # constant fields in every sample
    series:                            # one value per interval, promtool notation:
      buying_power: "30000 28000 24000x6"   # `vxN`: v, N more times; `a+bxN`: a, a+b ... a+N*b
      margin_details.day_trade_count: "_ _ 3"  # `_`: missing; `_xN`: missing N+1 times
    expect:
      - at: 20s
        firing: []                     # exactly these alertnames fire
      - at: 50s
        firing: [BuyingPowerBelowFloor]
        pending: []                    # optional: exactly these are pending
        inhibited: []                  # optional: exactly these firing ones are inhibited
        alerts:                        # optional: labels (a subset) and annotations
          - alertname: BuyingPowerBelowFloor
            labels: {severity: critical}
            annotations: {summary: "19816 buying power 24000 below 25000"}
```
Rules are evaluated at every sample time (0, interval, 2*interval, ...); an
expectation `at` T sees the state after the last sample at or before T.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

from monitor import schema
from monitor.config.accounts import AccountChecker
from monitor.config.model import AccountConfig
from monitor.engine.evaluate import Evaluator
from monitor.engine.lifecycle import Alert, AlertPhase
from monitor.engine.model import RuleSet
from monitor.engine.rulefile import load_rules
from monitor.engine.suppress import NOT_SUPPRESSED, suppressions
from monitor.snapshot import FieldSchema, Snapshot, flatten
from monitor.yamlsource import KeyPath, Problem, SourceError, YamlDocument, parse_yaml, read_source

_MISSING = object()
_TERM = re.compile(
    r"(?P<start>_|true|false|[+-]?\d+(?:\.\d+)?)"
    r"(?:(?P<sign>[+-])(?P<step>\d+(?:\.\d+)?))?"
    r"(?:x(?P<times>\d+))?"
)
_ANY = FieldSchema(types={})
_FILE_KEYS = {"rule_files", "tests"}
_TEST_KEYS = {"name", "venue_kind", "account", "interval", "fields", "series", "expect"}
_EXPECT_KEYS = {"at", "firing", "pending", "inhibited", "alerts"}
_ALERT_KEYS = {"alertname", "labels", "annotations", "state"}


def parse_series(text: str) -> list[Any]:
    """Values of a series in promtool's notation; ValueError naming the bad term."""
    values: list[Any] = []
    for term in str(text).split():
        match = _TERM.fullmatch(term)
        if match is None:
            raise ValueError(
                f"bad series term {term!r}: use numbers, true, false, _ and the forms vxN and a+bxN"
            )
        start, step, times = match["start"], match["step"], match["times"]
        if start in ("_", "true", "false") and step:
            raise ValueError(f"bad series term {term!r}: only numbers take +step")
        count = int(times) + 1 if times is not None else 1
        if count > 100_000:
            raise ValueError(f"series term {term!r} repeats too often (at most 100000)")
        if start == "_":
            values.extend([_MISSING] * count)
        elif start in ("true", "false"):
            values.extend([start == "true"] * count)
        else:
            first = Decimal(start)
            delta = Decimal(step or 0) * (-1 if match["sign"] == "-" else 1)
            values.extend(first + delta * i for i in range(count))
    return values


@dataclass(slots=True)
class AlertExpectation:
    alertname: str
    state: str = "firing"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Expectation:
    at: float
    firing: tuple[str, ...] | None
    pending: tuple[str, ...] | None
    alerts: tuple[AlertExpectation, ...]
    where: str
    inhibited: tuple[str, ...] | None = None


@dataclass(slots=True)
class RuleTest:
    name: str
    venue_kind: str
    venue: str
    account: str
    params: Mapping[str, Any]
    labels: Mapping[str, str]
    interval: float
    constants: Mapping[str, Any]
    series: Mapping[str, list[Any]]
    expect: list[Expectation]


@dataclass(slots=True)
class TestFile:
    path: Path
    rules: RuleSet
    tests: list[RuleTest]


def load_test_file(path: Path, kinds: Sequence[str] = ()) -> TestFile:
    """`kinds`: the known venue kinds, named when a test lacks its `venue_kind`."""
    text = read_source(path)
    doc = parse_yaml(text, str(path))
    # accounts are read by the config's own checker: a param means what it means there
    accounts = AccountChecker(doc, text, path.parent.absolute(), {}, expand_env=False)
    problems: list[Problem] = []
    root = doc.value
    if not isinstance(root, dict):
        raise SourceError(
            [doc.problem((), "a rule test file is a mapping with rule_files and tests")]
        )
    _unknown(doc, (), root, _FILE_KEYS, problems)
    files = root.get("rule_files")
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        problems.append(doc.problem(("rule_files",), "rule_files must be a list of paths"))
        files = []
    rules = RuleSet()
    try:
        rules, _warnings = load_rules([str(path.parent / f) for f in files])
    except SourceError as exc:
        problems.extend(exc.problems)
    tests = []
    raw_tests = root.get("tests")
    if not isinstance(raw_tests, list) or not raw_tests:
        problems.append(doc.problem(("tests",), "tests must be a non-empty list"))
        raw_tests = []
    for index, raw in enumerate(raw_tests):
        test = _parse_test(doc, accounts, ("tests", index), raw, problems, kinds)
        if test is not None:
            tests.append(test)
            if rules.rules and not rules.rules_for(test.venue, test.venue_kind):
                problems.append(_matches_no_group(doc, ("tests", index), test, rules))
    if problems:
        raise SourceError(problems)
    return TestFile(path, rules, tests)


def _matches_no_group(doc: YamlDocument, at: KeyPath, test: RuleTest, rules: RuleSet) -> Problem:
    """A test whose account no rule applies to would pass while testing nothing."""
    selected = sorted({venue for rule in rules.rules for venue in rule.venues})
    hint = schema.did_you_mean(test.venue_kind, selected)
    venue = f" (venue {test.venue!r})" if test.venue != test.venue_kind else ""
    return doc.problem(
        (*at, "venue_kind"),
        f"venue_kind {test.venue_kind!r}{venue} matches no group of the rule files (their "
        f"groups are for venues: {', '.join(selected)}){hint}",
    )


def _unknown(
    doc: YamlDocument,
    at: KeyPath,
    value: Mapping[str, Any],
    known: set[str],
    problems: list[Problem],
) -> None:
    for key in value:
        if key not in known:
            hint = ", ".join(sorted(known))
            problems.append(
                doc.problem((*at, key), f"unknown key {key!r} (known: {hint})", key=True)
            )


def _duration(doc: YamlDocument, at: KeyPath, value: Any, problems: list[Problem]) -> float:
    try:
        return schema.duration(value, allow_zero=True)
    except schema.Invalid as exc:
        problems.append(doc.problem(at, f"{at[-1]}: {exc}"))
        return 0.0


def _names(
    doc: YamlDocument, at: KeyPath, value: Any, problems: list[Problem]
) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(doc.problem(at, "expected a list of alert names"))
        return None
    return tuple(sorted(value))


def _scalar(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            return value
    return value


def _account(
    accounts: AccountChecker, at: KeyPath, raw: Any, test: str, venue_kind: str
) -> tuple[AccountConfig, str]:
    """A test's account (`venue` beside the config's id, labels and params) and venue;
    without `account:`, account "test" of a venue named like the kind."""
    if raw is None:
        return AccountConfig(id="test"), venue_kind
    if not isinstance(raw, dict):
        accounts.error(at, "account: expected a mapping {venue, id, labels, params}")
        return AccountConfig(id="test"), venue_kind
    # the account-id format of a known kind applies; an unknown kind checks none
    account = accounts.account(at, raw, f"test {test!r}", venue_kind, extra_keys=("venue",))
    venue = venue_kind
    if "venue" in raw:
        venue = accounts.string((*at, "venue"), raw["venue"]) or venue_kind
    return account, venue


def _parse_test(
    doc: YamlDocument,
    accounts: AccountChecker,
    at: KeyPath,
    raw: Any,
    problems: list[Problem],
    kinds: Sequence[str],
) -> RuleTest | None:
    if not isinstance(raw, dict):
        problems.append(doc.problem(at, "a test is a mapping"))
        return None
    before = len(problems)
    _unknown(doc, at, raw, _TEST_KEYS, problems)
    name = str(raw.get("name") or f"test {at[-1]}")
    venue_kind = raw.get("venue_kind")
    if not isinstance(venue_kind, str):
        known = f" ({', '.join(kinds)})" if kinds else ""
        problems.append(doc.problem(at, f"venue_kind is required{known}"))
        venue_kind = ""
    account, venue = _account(accounts, (*at, "account"), raw.get("account"), name, venue_kind)
    problems.extend(accounts.problems)
    accounts.problems.clear()
    interval = _duration(doc, (*at, "interval"), raw.get("interval", "1m"), problems)
    if interval <= 0:
        problems.append(doc.problem((*at, "interval"), "interval must be positive"))
    series: dict[str, list[Any]] = {}
    for path, text in (raw.get("series") or {}).items():
        try:
            series[str(path)] = parse_series(str(text))
        except ValueError as exc:
            problems.append(doc.problem((*at, "series", path), str(exc)))
    constants = {str(k): _scalar(v) for k, v in (raw.get("fields") or {}).items()}
    expectations = []
    for i, item in enumerate(raw.get("expect") or []):
        where = (*at, "expect", i)
        if not isinstance(item, dict) or "at" not in item:
            problems.append(doc.problem(where, "an expectation needs `at`"))
            continue
        _unknown(doc, where, item, _EXPECT_KEYS, problems)
        alerts = []
        for j, alert in enumerate(item.get("alerts") or []):
            if not isinstance(alert, dict) or "alertname" not in alert:
                problems.append(doc.problem((*where, "alerts", j), "an alert needs alertname"))
                continue
            _unknown(doc, (*where, "alerts", j), alert, _ALERT_KEYS, problems)
            alerts.append(
                AlertExpectation(
                    str(alert["alertname"]),
                    str(alert.get("state", "firing")),
                    {str(k): str(v) for k, v in (alert.get("labels") or {}).items()},
                    {str(k): str(v) for k, v in (alert.get("annotations") or {}).items()},
                )
            )
        expectations.append(
            Expectation(
                _duration(doc, (*where, "at"), item["at"], problems),
                _names(doc, (*where, "firing"), item.get("firing"), problems),
                _names(doc, (*where, "pending"), item.get("pending"), problems),
                tuple(alerts),
                str(doc.at(where)),
                _names(doc, (*where, "inhibited"), item.get("inhibited"), problems),
            )
        )
    if len(problems) > before:
        return None
    return RuleTest(
        name=name,
        venue_kind=venue_kind,
        venue=venue,
        account=account.id,
        params=account.params,
        labels=account.labels,
        interval=interval,
        constants=constants,
        series=series,
        expect=sorted(expectations, key=lambda e: e.at),
    )


def _snapshot(test: RuleTest, index: int, now: float) -> Snapshot:
    nested: dict[str, Any] = {}
    values = dict(test.constants)
    for path, series in test.series.items():
        if index < len(series):
            values[path] = series[index]
        else:
            values.pop(path, None)  # a series that has ended is missing
    for path, value in values.items():
        if value is _MISSING:
            continue
        node = nested
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[leaf] = value
    return Snapshot(
        venue=test.venue,
        venue_kind=test.venue_kind,
        account=test.account,
        fields=flatten(nested, _ANY),
        taken_at=now,
        currency="USD",
        labels=test.labels,
        params=test.params,
    )


def run_test(test: RuleTest, rules: RuleSet) -> list[str]:
    """The failures of one test, as readable lines; empty when it passes."""
    evaluator = Evaluator(rules)
    samples = max((len(s) for s in test.series.values()), default=1)
    last_at = max((e.at for e in test.expect), default=0.0)
    samples = max(samples, int(last_at // test.interval) + 1)
    failures: list[str] = []
    pending = list(test.expect)
    for index in range(samples):
        now = index * test.interval
        while pending and pending[0].at < now:
            failures.extend(_check(pending.pop(0), evaluator, rules))
        evaluator.evaluate(_snapshot(test, index, now), now)
    for expectation in pending:
        failures.extend(_check(expectation, evaluator, rules))
    return failures


def _fmt(names: Sequence[str]) -> str:
    return "[" + ", ".join(names) + "]"


def _check(expect: Expectation, evaluator: Evaluator, rules: RuleSet) -> list[str]:
    active = evaluator.book.active()
    firing = tuple(sorted(a.alertname for a in active if a.phase is AlertPhase.FIRING))
    pending = tuple(sorted(a.alertname for a in active if a.phase is AlertPhase.PENDING))
    at = f"at {expect.at:g}s ({expect.where})"
    lines = []
    if expect.inhibited is not None:
        found = suppressions(active, rules.inhibit_rules, (), expect.at)
        inhibited = tuple(
            sorted(a.alertname for a in active if found.get(a.fingerprint, NOT_SUPPRESSED))
        )
        if inhibited != expect.inhibited:
            lines.append(
                f"{at}: inhibited\n      expected {_fmt(expect.inhibited)}\n"
                f"      got      {_fmt(inhibited)}"
            )
    if expect.firing is not None and firing != expect.firing:
        lines.append(
            f"{at}: firing\n      expected {_fmt(expect.firing)}\n      got      {_fmt(firing)}"
        )
    if expect.pending is not None and pending != expect.pending:
        lines.append(
            f"{at}: pending\n      expected {_fmt(expect.pending)}\n      got      {_fmt(pending)}"
        )
    for want in expect.alerts:
        lines.extend(_check_alert(at, want, active))
    return lines


def _check_alert(at: str, want: AlertExpectation, active: list[Alert]) -> list[str]:
    matches = [a for a in active if a.alertname == want.alertname and a.phase.value == want.state]
    if not matches:
        return [f"{at}: expected {want.alertname} {want.state}, it is not"]
    alert = matches[0]
    labels = {**alert.labels, "severity": alert.severity}
    lines = []
    for key, value in want.labels.items():
        if labels.get(key) != value:
            lines.append(
                f"{at}: {want.alertname} label {key}\n      expected {value!r}\n"
                f"      got      {labels.get(key)!r}"
            )
    for key, value in want.annotations.items():
        if alert.annotations.get(key) != value:
            lines.append(
                f"{at}: {want.alertname} annotation {key}\n      expected {value!r}\n"
                f"      got      {alert.annotations.get(key)!r}"
            )
    return lines


def run_test_files(paths: Sequence[str], out: TextIO, kinds: Sequence[str] = ()) -> int:
    """Run every test of every file; print PASS/FAIL with diffs; 0 when all pass."""
    passed = failed = 0
    for name in paths:
        try:
            loaded = load_test_file(Path(name), kinds)
        except SourceError as exc:
            for problem in exc.problems:
                out.write(f"{problem}\n")
            failed += 1
            continue
        for test in loaded.tests:
            failures = run_test(test, loaded.rules)
            if failures:
                failed += 1
                out.write(f"FAIL {name}: {test.name}\n")
                for line in failures:
                    out.write(f"  {line}\n")
            else:
                passed += 1
                out.write(f"PASS {name}: {test.name}\n")
    out.write(f"{passed} passed, {failed} failed\n")
    return 0 if failed == 0 and passed > 0 else 1
