"""Metrics: the text exposition read back with prometheus-client's own parser."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from monitor import __version__
from monitor import metrics as metrics_module
from monitor.engine.lifecycle import Alert, AlertPhase
from monitor.metrics import (
    ACCOUNT_FIELD_METRICS,
    CONTENT_TYPE,
    EVENT_DELIVERY_BUCKETS,
    POLL_DURATION_BUCKETS,
    Metrics,
    escape_label_value,
    format_value,
)
from monitor.snapshot import Snapshot
from monitor.venues.clearstreet import ClearStreetAdapter
from monitor.venues.polymarket import PolymarketAdapter

DATA = Path(__file__).parent / "data"
FIELD_METRIC = {path: name for path, name, _ in ACCOUNT_FIELD_METRICS}
WEIRD_ACCOUNT = 'a"b\\c\nd ü'


def cs_fields(account: str = "19816") -> dict[str, Any]:
    data = json.loads((DATA / "cs_balances_margin.json").read_text())["data"]
    data.pop("account_id")
    return ClearStreetAdapter.parse_balances(data, account)


def pmx_fields() -> dict[str, Any]:
    return PolymarketAdapter.parse_balance(json.loads((DATA / "pmx_balance.json").read_text()))


def snap(
    account: str = "19816",
    fields: Mapping[str, Any] | None = None,
    *,
    venue: str = "cs-prod",
    kind: str = "clearstreet",
    currency: str | None = "USD",
    taken_at: float = 1_790_000_000.25,
) -> Snapshot:
    return Snapshot(
        venue=venue,
        venue_kind=kind,
        account=account,
        fields=cs_fields() if fields is None else fields,
        taken_at=taken_at,
        currency=currency,
    )


def samples(metrics: Metrics) -> list[Sample]:
    return [
        sample
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    ]


def series(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples named `name`: sorted label items -> value."""
    return {tuple(sorted(s.labels.items())): s.value for s in samples(metrics) if s.name == name}


def account_labels(
    account: str = "19816", venue: str = "cs-prod", currency: str | None = "USD"
) -> tuple[tuple[str, str], ...]:
    labels = {"venue": venue, "account": account}
    if currency is not None:
        labels["currency"] = currency
    return tuple(sorted(labels.items()))


def make_alert(
    alertname: str = "BuyingPowerBelowFloor",
    phase: AlertPhase = AlertPhase.FIRING,
    *,
    account: str = "19816",
    venue: str = "cs-prod",
    severity: str = "critical",
) -> Alert:
    return Alert(
        rule_key=f"capital/{alertname}",
        alertname=alertname,
        severity=severity,
        venue=venue,
        venue_kind="clearstreet",
        account=account,
        labels={},
        fingerprint="f" * 32,
        phase=phase,
        active_at=1.0,
        fired_at=2.0 if phase is AlertPhase.FIRING else None,
    )


def account_series_of(metrics: Metrics, venue: str, account: str) -> list[Sample]:
    return [
        s
        for s in samples(metrics)
        if s.labels.get("venue") == venue and s.labels.get("account") == account
    ]


# -- values -------------------------------------------------------------------------


def test_every_field_gauge_holds_the_snapshots_value_exactly() -> None:
    metrics = Metrics()
    fields = cs_fields()
    metrics.update_account(snap(fields=fields))
    found = 0
    for path, name, _ in ACCOUNT_FIELD_METRICS:
        got = series(metrics, name)
        if path not in fields:
            assert got == {}, name
            continue
        found += 1
        expected = fields[path]
        assert got == {account_labels(): float(expected)}, name
    assert found >= 20  # a margin account fills most of the table
    assert series(metrics, "riskmon_account_up") == {account_labels(currency=None): 1.0}
    assert series(metrics, "riskmon_last_success_timestamp_seconds") == {
        account_labels(currency=None): 1_790_000_000.25
    }


def test_the_normalized_set_is_exported_under_its_spec_names() -> None:
    metrics = Metrics()
    metrics.update_account(snap())
    names = {s.name for s in samples(metrics)}
    for field in (
        "buying_power",
        "equity",
        "margin_excess",
        "margin_requirement",
        "pattern_day_trader",
        "day_trade_count",
        "daily_pnl",
    ):
        assert f"riskmon_account_{field}" in names
    assert series(metrics, "riskmon_account_pattern_day_trader") == {account_labels(): 0.0}
    assert series(metrics, "riskmon_account_day_trade_count") == {account_labels(): 2.0}


def test_polymarket_fields_and_no_duplicate_of_a_normalized_source() -> None:
    metrics = Metrics()
    fields = pmx_fields()
    metrics.update_account(snap("firms/ACME/accounts/main", fields, venue="pmx", kind="polymarket"))
    labels = account_labels("firms/ACME/accounts/main", "pmx")
    assert series(metrics, "riskmon_account_margin_excess") == {labels: 750.0}
    assert series(metrics, "riskmon_account_balance") == {labels: 1000.0}
    assert series(metrics, "riskmon_account_open_orders_value") == {labels: 110.0}
    names = {s.name for s in samples(metrics)}
    assert "riskmon_account_excess_capital" not in names  # it is margin_excess
    assert "riskmon_account_maintenance_margin_excess" not in FIELD_METRIC.values()


def test_changed_values_are_rerendered_and_vanished_fields_leave() -> None:
    metrics = Metrics()
    fields = cs_fields()
    metrics.update_account(snap(fields=fields))
    changed = dict(fields)
    changed["buying_power"] = Decimal("12345.67")
    changed["equity"] = Decimal("100000.000")  # the same number written otherwise
    del changed["settled_cash"]
    metrics.update_account(snap(fields=changed, taken_at=1_790_000_002.5))
    assert series(metrics, "riskmon_account_buying_power") == {account_labels(): 12345.67}
    assert series(metrics, "riskmon_account_equity") == {account_labels(): 100000.0}
    assert series(metrics, "riskmon_account_settled_cash") == {}
    assert series(metrics, "riskmon_last_success_timestamp_seconds") == {
        account_labels(currency=None): 1_790_000_002.5
    }
    back = {**changed, "settled_cash": Decimal("5")}  # a snapshot's fields never change
    metrics.update_account(snap(fields=back))
    assert series(metrics, "riskmon_account_settled_cash") == {account_labels(): 5.0}


def test_non_numeric_values_at_a_mapped_path_are_not_exported() -> None:
    metrics = Metrics()
    metrics.update_account(snap(fields={"buying_power": "n/a", "equity": Decimal(1)}))
    assert series(metrics, "riskmon_account_buying_power") == {}
    assert series(metrics, "riskmon_account_equity") == {account_labels(): 1.0}


def test_a_currency_change_relabels_every_series() -> None:
    metrics = Metrics()
    metrics.update_account(snap(currency="USD"))
    metrics.update_account(snap(currency="EUR"))
    assert set(series(metrics, "riskmon_account_buying_power")) == {account_labels(currency="EUR")}
    metrics.update_account(snap(currency=None))
    assert set(series(metrics, "riskmon_account_buying_power")) == {account_labels(currency=None)}
    assert series(metrics, "riskmon_account_up") == {account_labels(currency=None): 1.0}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("24000.00"), b"24000.00"),
        (Decimal("-0.5"), b"-0.5"),
        (Decimal("1.5E+7"), b"1.5E+7"),
        (Decimal("1E+400"), b"+Inf"),
        (Decimal("-1E+400"), b"-Inf"),
        (Decimal("NaN"), b"NaN"),
        (Decimal("Infinity"), b"+Inf"),
        (True, b"1"),
        (False, b"0"),
        (7, b"7"),
        (0.25, b"0.25"),
        (math.nan, b"NaN"),
        (-math.inf, b"-Inf"),
        ("12", None),
        (None, None),
        ({"a": 1}, None),
    ],
)
def test_format_value(value: object, text: bytes | None) -> None:
    assert format_value(value) == text
    if text is not None and isinstance(value, Decimal) and value.is_finite():
        parsed = float(text.decode())
        assert parsed == float(value)


def test_decimals_parse_to_the_same_float64_as_float_of_the_decimal() -> None:
    values = [Decimal("0.1"), Decimal("99775.05"), Decimal("123456789012345678901.23456789")]
    for value in values:
        text = format_value(value)
        assert text is not None
        assert float(text) == float(value)


# -- the format -----------------------------------------------------------------------


def busy_metrics() -> Metrics:
    metrics = Metrics(start_time=1_789_000_000.0)
    for i in range(3):
        metrics.update_account(snap(str(i)))
        metrics.observe_poll("cs-prod", "ok", 0.004 * (i + 1))
    metrics.update_account(
        snap("firms/ACME/accounts/main", pmx_fields(), venue="pmx", kind="polymarket")
    )
    metrics.update_account(snap(WEIRD_ACCOUNT))
    metrics.set_account_params("cs-prod", WEIRD_ACCOUNT, {"buying_power_floor": 25000})
    metrics.set_account_info("cs-prod", WEIRD_ACCOUNT, {"desk": "equities"})
    metrics.account_failed("cs-prod", "1")
    metrics.set_account_info("cs-prod", "1", {})
    metrics.observe_poll("pmx", "ok", 0.2)
    metrics.observe_poll("pmx", "unavailable", 5.0)
    metrics.count_poll("pmx", "skipped_overrun")
    metrics.observe_poll("cs-prod", "not_found", 0.001)
    metrics.set_venue("cs-prod", True, 4)
    metrics.set_venue("pmx", False, 1)
    metrics.set_alerts(
        [make_alert(), make_alert("DailyLoss", AlertPhase.PENDING, severity="warning")]
    )
    metrics.inc_rule_evaluation_failures("MarginUtilisation")
    metrics.inc_rule_evaluation_failures("Quiet", 0)
    metrics.set_mqtt(True)
    metrics.set_outbox_pending(3)
    metrics.inc_events_published(5)
    return metrics


def _family_of(sample_name: str, typed: Mapping[str, str]) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample_name.removesuffix(suffix)
        if base != sample_name and typed.get(base) == "histogram":
            return base
    return sample_name


def test_families_are_contiguous_with_help_and_type_once() -> None:
    text = busy_metrics().render().decode()
    assert text.endswith("\n")
    helps: dict[str, int] = {}
    types: dict[str, str] = {}
    finished: set[str] = set()
    current: str | None = None
    for line in text.splitlines():
        assert line, "no blank lines"
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            helps[name] = helps.get(name, 0) + 1
            assert name not in types, f"HELP after TYPE or twice: {name}"
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"TYPE twice: {name}"
            types[name] = kind
            if current is not None:
                finished.add(current)
            current = name
            continue
        assert not line.startswith("#")
        family = _family_of(line.split("{", 1)[0].split(" ", 1)[0], types)
        assert family == current, f"{family} outside its block (in {current})"
        assert family not in finished
    assert all(count == 1 for count in helps.values())
    assert set(helps) == set(types)
    assert types["riskmon_poll_duration_seconds"] == "histogram"
    assert types["riskmon_polls_total"] == "counter"
    assert types["riskmon_events_published_total"] == "counter"
    assert types["riskmon_rule_evaluation_failures_total"] == "counter"
    assert types["riskmon_account_buying_power"] == "gauge"


def test_the_output_parses_and_names_every_required_family() -> None:
    families = {f.name: f for f in text_string_to_metric_families(busy_metrics().render().decode())}
    for name in (
        "riskmon_account_buying_power",
        "riskmon_account_up",
        "riskmon_last_success_timestamp_seconds",
        "riskmon_account_param",
        "riskmon_account_info",
        "riskmon_alert_active",
        "riskmon_poll_duration_seconds",
        "riskmon_polls",
        "riskmon_venue_up",
        "riskmon_venue_accounts",
        "riskmon_rule_evaluation_failures",
        "riskmon_config_last_reload_successful",
        "riskmon_config_last_reload_success_timestamp_seconds",
        "riskmon_config_warnings",
        "riskmon_mqtt_connected",
        "riskmon_outbox_pending",
        "riskmon_events_published",
        "riskmon_build_info",
        "riskmon_start_time_seconds",
    ):
        assert name in families, name
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_label_values_are_escaped_and_read_back_intact() -> None:
    metrics = busy_metrics()
    text = metrics.render().decode()
    assert 'account="a\\"b\\\\c\\nd ü"' in text
    got = series(metrics, "riskmon_account_buying_power")
    assert account_labels(WEIRD_ACCOUNT) in got
    assert escape_label_value('x"y\\z\n') == 'x\\"y\\\\z\\n'
    assert escape_label_value("plain") == "plain"


def test_histogram_is_cumulative_and_consistent() -> None:
    metrics = busy_metrics()
    all_samples = samples(metrics)
    for venue, count, total in (("cs-prod", 4, 0.004 + 0.008 + 0.012 + 0.001), ("pmx", 2, 5.2)):
        buckets = [
            s
            for s in all_samples
            if s.name == "riskmon_poll_duration_seconds_bucket" and s.labels["venue"] == venue
        ]
        bounds = [s.labels["le"] for s in buckets]
        assert bounds == [*(repr(b) for b in POLL_DURATION_BUCKETS), "+Inf"]
        values = [s.value for s in buckets]
        assert values == sorted(values)
        assert values[-1] == count
        (count_sample,) = (
            s
            for s in all_samples
            if s.name == "riskmon_poll_duration_seconds_count" and s.labels["venue"] == venue
        )
        (sum_sample,) = (
            s
            for s in all_samples
            if s.name == "riskmon_poll_duration_seconds_sum" and s.labels["venue"] == venue
        )
        assert count_sample.value == count
        assert sum_sample.value == pytest.approx(total)
    cs = {
        s.labels["le"]: s.value
        for s in all_samples
        if s.name == "riskmon_poll_duration_seconds_bucket" and s.labels["venue"] == "cs-prod"
    }
    assert cs["0.001"] == 1  # a bucket's bound is inclusive
    assert cs["0.005"] == 2
    assert cs["0.01"] == 3
    assert cs["0.025"] == 4


def test_polls_total_counts_outcomes_skipped_turns_untimed() -> None:
    metrics = busy_metrics()
    polls = series(metrics, "riskmon_polls_total")
    assert polls[(("outcome", "ok"), ("venue", "cs-prod"))] == 3
    assert polls[(("outcome", "not_found"), ("venue", "cs-prod"))] == 1
    assert polls[(("outcome", "skipped_overrun"), ("venue", "pmx"))] == 1
    assert polls[(("outcome", "unavailable"), ("venue", "pmx"))] == 1
    assert series(metrics, "riskmon_poll_duration_seconds_count")[(("venue", "pmx"),)] == 2


def test_venue_and_process_gauges() -> None:
    metrics = busy_metrics()
    assert series(metrics, "riskmon_venue_up") == {
        (("venue", "cs-prod"),): 1,
        (("venue", "pmx"),): 0,
    }
    assert series(metrics, "riskmon_venue_accounts")[(("venue", "cs-prod"),)] == 4
    assert series(metrics, "riskmon_mqtt_connected") == {(): 1}
    assert series(metrics, "riskmon_outbox_pending") == {(): 3}
    assert series(metrics, "riskmon_events_published_total") == {(): 5}
    assert series(metrics, "riskmon_rule_evaluation_failures_total") == {
        (("alertname", "MarginUtilisation"),): 1,
        (("alertname", "Quiet"),): 0,
    }
    assert series(metrics, "riskmon_start_time_seconds") == {(): 1_789_000_000.0}
    ((labels, value),) = series(metrics, "riskmon_build_info").items()
    assert value == 1
    assert dict(labels)["version"] == __version__
    assert set(dict(labels)) == {"version", "python"}


def test_events_published_by_increment_or_from_the_publishers_total() -> None:
    metrics = Metrics()
    assert series(metrics, "riskmon_events_published_total") == {(): 0}
    metrics.inc_events_published()
    metrics.inc_events_published(2)
    assert series(metrics, "riskmon_events_published_total") == {(): 3}
    metrics.set_events_published(10)
    assert series(metrics, "riskmon_events_published_total") == {(): 10}


def test_event_delivery_histogram_from_the_first_scrape_then_cumulative() -> None:
    def delivery(metrics: Metrics) -> Any:
        [family] = [
            f
            for f in text_string_to_metric_families(metrics.render().decode())
            if f.name == "riskmon_event_delivery_seconds"
        ]
        return family

    metrics = Metrics()
    family = delivery(metrics)
    assert family.type == "histogram"
    assert {s.value for s in family.samples} == {0.0}  # exported before any event: rate() works
    for seconds in (0.0004, 0.001, 0.0042, 0.009, 0.02, 1.5, 400.0):
        metrics.observe_event_delivery(seconds)
    family = delivery(metrics)
    buckets = {float(s.labels["le"]): s.value for s in family.samples if s.name.endswith("_bucket")}
    assert sorted(buckets) == [*EVENT_DELIVERY_BUCKETS, math.inf]
    assert EVENT_DELIVERY_BUCKETS[0] == 0.001
    assert 0.01 in EVENT_DELIVERY_BUCKETS
    assert buckets[0.001] == 2  # le is inclusive
    assert buckets[0.005] == 3
    assert buckets[0.01] == 4
    assert buckets[300.0] == 6
    assert buckets[math.inf] == 7
    totals = {s.name: s.value for s in family.samples if not s.name.endswith("_bucket")}
    assert totals["riskmon_event_delivery_seconds_count"] == 7
    assert totals["riskmon_event_delivery_seconds_sum"] == pytest.approx(401.5346)


def test_reload_outcome() -> None:
    metrics = Metrics(start_time=100.0)
    assert series(metrics, "riskmon_config_last_reload_successful") == {(): 1}
    assert series(metrics, "riskmon_config_last_reload_success_timestamp_seconds") == {(): 100.0}
    metrics.set_reload(True, 200.0)
    metrics.set_reload(False, 300.0)
    assert series(metrics, "riskmon_config_last_reload_successful") == {(): 0}
    assert series(metrics, "riskmon_config_last_reload_success_timestamp_seconds") == {(): 200.0}


def test_config_warnings_count() -> None:
    metrics = Metrics(start_time=100.0)
    assert series(metrics, "riskmon_config_warnings") == {(): 0}
    metrics.set_config_warnings(3)
    assert series(metrics, "riskmon_config_warnings") == {(): 3}


def test_asyncio_tasks_is_a_gauge_once_set() -> None:
    metrics = Metrics()
    assert "riskmon_asyncio_tasks" not in metrics.render().decode()  # no loop to count yet
    metrics.set_asyncio_tasks(17)
    assert series(metrics, "riskmon_asyncio_tasks") == {(): 17}


def test_empty_families_are_left_out() -> None:
    text = Metrics().render().decode()
    assert "riskmon_account_" not in text
    assert "riskmon_alert_active" not in text
    assert "riskmon_poll_duration_seconds" not in text
    list(text_string_to_metric_families(text))  # parses


# -- accounts up and down, leaving -----------------------------------------------------


def test_a_failed_poll_sets_up_to_zero_and_keeps_the_last_values() -> None:
    metrics = Metrics()
    metrics.update_account(snap())
    metrics.account_failed("cs-prod", "19816", "unavailable")
    assert series(metrics, "riskmon_account_up") == {account_labels(currency=None): 0.0}
    assert series(metrics, "riskmon_account_buying_power") == {account_labels(): 90000.0}
    metrics.update_account(snap())
    assert series(metrics, "riskmon_account_up") == {account_labels(currency=None): 1.0}
    metrics.account_failed("cs-prod", "never-answered")
    assert (
        series(metrics, "riskmon_account_up")[account_labels("never-answered", currency=None)] == 0
    )


def test_an_account_removed_disappears_from_every_family() -> None:
    metrics = busy_metrics()
    metrics.set_alerts([make_alert(account=WEIRD_ACCOUNT), make_alert("DailyLoss", account="0")])
    assert len(account_series_of(metrics, "cs-prod", WEIRD_ACCOUNT)) >= 20
    metrics.remove_account("cs-prod", WEIRD_ACCOUNT)
    assert account_series_of(metrics, "cs-prod", WEIRD_ACCOUNT) == []
    assert WEIRD_ACCOUNT not in metrics.render().decode()
    assert len(account_series_of(metrics, "cs-prod", "0")) >= 20  # the others stay
    assert series(metrics, "riskmon_alert_active") == {
        (
            ("account", "0"),
            ("alertname", "DailyLoss"),
            ("severity", "critical"),
            ("state", "firing"),
            ("venue", "cs-prod"),
        ): 1
    }
    metrics.remove_account("cs-prod", "no-such-account")  # harmless
    assert ("cs-prod", WEIRD_ACCOUNT) not in metrics.accounts()


def test_a_venue_removed_takes_its_accounts_along() -> None:
    metrics = busy_metrics()
    metrics.remove_venue("pmx")
    text = metrics.render().decode()
    assert 'venue="pmx"' not in text
    assert 'venue="cs-prod"' in text


def test_removing_the_last_account_removes_the_family() -> None:
    metrics = Metrics()
    metrics.update_account(snap())
    metrics.remove_account("cs-prod", "19816")
    assert "riskmon_account_" not in metrics.render().decode()


# -- rule params ---------------------------------------------------------------------


def param_series(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["venue"], s.labels["account"], s.labels["param"]): s.value
        for s in samples(metrics)
        if s.name == "riskmon_account_param"
    }


def test_account_params_are_overrides_over_defaults_numbers_only() -> None:
    metrics = Metrics()
    metrics.update_account(snap())
    defaults = {"buying_power_floor": 25000, "near_floor_ratio": Decimal("1.2"), "desk": "eq"}
    metrics.set_account_params("cs-prod", "19816", defaults, {"buying_power_floor": 50000})
    metrics.set_account_params("pmx", WEIRD_ACCOUNT, {"excess_capital_floor": 1000.5})
    assert param_series(metrics) == {
        ("cs-prod", "19816", "buying_power_floor"): 50000,
        ("cs-prod", "19816", "near_floor_ratio"): 1.2,
        ("pmx", WEIRD_ACCOUNT, "excess_capital_floor"): 1000.5,
    }
    text = metrics.render().decode()
    assert text.count("# TYPE riskmon_account_param gauge") == 1


def test_account_params_rerender_only_for_other_mappings() -> None:
    metrics = Metrics()
    defaults: dict[str, Any] = {"buying_power_floor": 25000}
    overrides: dict[str, Any] = {}
    metrics.set_account_params("cs-prod", "19816", defaults, overrides)
    defaults["buying_power_floor"] = 1  # the same objects: taken as unchanged
    metrics.set_account_params("cs-prod", "19816", defaults, overrides)
    assert param_series(metrics) == {("cs-prod", "19816", "buying_power_floor"): 25000}
    metrics.set_account_params("cs-prod", "19816", {"buying_power_floor": 30000}, overrides)
    assert param_series(metrics) == {("cs-prod", "19816", "buying_power_floor"): 30000}
    metrics.set_account_params("cs-prod", "19816", {}, {})
    assert "riskmon_account_param" not in metrics.render().decode()


def test_account_params_survive_a_currency_change_and_leave_with_the_account() -> None:
    metrics = Metrics()
    metrics.update_account(snap(currency="USD"))
    metrics.set_account_params("cs-prod", "19816", {"buying_power_floor": 25000})
    metrics.update_account(snap(currency="EUR"))
    assert param_series(metrics) == {("cs-prod", "19816", "buying_power_floor"): 25000}
    metrics.remove_account("cs-prod", "19816")
    assert "riskmon_account_param" not in metrics.render().decode()


# -- account info ----------------------------------------------------------------------


def info_series(metrics: Metrics) -> dict[tuple[str, str], dict[str, str]]:
    """riskmon_account_info: (venue, account) -> its other labels (each value 1)."""
    found = {}
    for s in samples(metrics):
        if s.name == "riskmon_account_info":
            assert s.value == 1
            labels = dict(s.labels)
            found[labels.pop("venue"), labels.pop("account")] = labels
    return found


def test_account_info_carries_each_accounts_labels_escaped_and_bounded() -> None:
    metrics = Metrics()
    metrics.update_account(snap("19816"))
    metrics.set_account_info("cs-prod", "19816", {"desk": "equities", "tier": "1"})
    metrics.account_failed("cs-prod", "19817")  # never answered: its labels all the same
    metrics.set_account_info("cs-prod", "19817", {"desk": 'a"b\\c\nd ü'})
    metrics.update_account(snap("19818"))
    metrics.set_account_info("cs-prod", "19818", {})  # no labels: venue and account only
    metrics.update_account(snap("19819"))
    metrics.set_account_info("cs-prod", "19819", {"team": "x" * 1000})
    assert info_series(metrics) == {
        ("cs-prod", "19816"): {"desk": "equities", "tier": "1"},
        ("cs-prod", "19817"): {"desk": 'a"b\\c\nd ü'},
        ("cs-prod", "19818"): {},
        ("cs-prod", "19819"): {"team": "x" * 120 + "...(cut)"},
    }
    text = metrics.render().decode()
    assert text.count("# TYPE riskmon_account_info gauge") == 1
    assert 'riskmon_account_info{desk="equities",tier="1",venue="cs-prod",account="19816"} 1\n' in (
        text
    )


def test_account_info_leaves_out_names_that_would_make_the_series_invalid() -> None:
    metrics = Metrics()
    metrics.update_account(snap())
    # the config refuses these; given anyway, the series keeps one venue and one account
    labels = {"venue": "x", "account": "y", "__name__": "z", "1bad": "w", "desk": "eq"}
    metrics.set_account_info("cs-prod", "19816", labels)
    assert info_series(metrics) == {("cs-prod", "19816"): {"desk": "eq"}}


def test_account_info_rerenders_only_for_another_mapping_and_shares_equal_label_sets() -> None:
    metrics = Metrics()
    labels = {"desk": "equities"}
    metrics.set_account_info("cs-prod", "19816", labels)
    labels["desk"] = "changed"  # the same object: taken as unchanged (a config never changes)
    metrics.set_account_info("cs-prod", "19816", labels)
    assert info_series(metrics) == {("cs-prod", "19816"): {"desk": "equities"}}
    metrics.set_account_info("cs-prod", "19816", {"desk": "options"})  # a reload
    metrics.set_account_info("cs-prod", "19817", {"desk": "options"})
    assert info_series(metrics) == {
        ("cs-prod", "19816"): {"desk": "options"},
        ("cs-prod", "19817"): {"desk": "options"},
    }
    heads = {id(entries[metrics_module._INFO]) for entries in metrics._entries.values()}
    assert len(heads) == 1, "accounts with equal labels share one text"


def test_account_info_survives_a_currency_change_and_leaves_with_the_account() -> None:
    metrics = Metrics()
    metrics.account_failed("cs-prod", "19816")
    metrics.set_account_info("cs-prod", "19816", {"desk": "equities"})
    metrics.update_account(snap(currency="USD"))  # the record is made again with a currency
    metrics.update_account(snap(currency="EUR"))
    assert info_series(metrics) == {("cs-prod", "19816"): {"desk": "equities"}}
    metrics.set_account_info("pmx", "firms/ACME/accounts/main", {"desk": "prediction"})
    metrics.remove_account("cs-prod", "19816")
    assert info_series(metrics) == {("pmx", "firms/ACME/accounts/main"): {"desk": "prediction"}}
    metrics.remove_venue("pmx")
    assert "riskmon_account_info" not in metrics.render().decode()


# -- alerts ----------------------------------------------------------------------------


def alert_series(metrics: Metrics) -> set[tuple[str, str, str, str, str]]:
    return {
        (
            s.labels["alertname"],
            s.labels["venue"],
            s.labels["account"],
            s.labels["severity"],
            s.labels["state"],
        )
        for s in samples(metrics)
        if s.name == "riskmon_alert_active" and s.value == 1
    }


def _riskmon_lines(metrics: Metrics) -> list[str]:
    """riskmon's own series: the process and GC collectors' values move between renders
    (a garbage collection in between changes python_gc_*)."""
    return [line for line in metrics.render().decode().splitlines() if "riskmon_" in line]


def test_alert_active_is_replaced_as_a_set() -> None:
    metrics = Metrics()
    firing = make_alert()
    pending = make_alert("DailyLoss", AlertPhase.PENDING, severity="warning")
    inactive = make_alert("Other", AlertPhase.INACTIVE)
    metrics.set_alerts([firing, pending, inactive])
    assert alert_series(metrics) == {
        ("BuyingPowerBelowFloor", "cs-prod", "19816", "critical", "firing"),
        ("DailyLoss", "cs-prod", "19816", "warning", "pending"),
    }
    before = _riskmon_lines(metrics)
    metrics.set_alerts(iter([firing, pending]))  # unchanged: the same output
    assert _riskmon_lines(metrics) == before
    pending.phase = AlertPhase.FIRING
    metrics.set_alerts([pending])
    assert alert_series(metrics) == {("DailyLoss", "cs-prod", "19816", "warning", "firing")}
    metrics.set_alerts([])
    assert alert_series(metrics) == set()
    assert "riskmon_alert_active" not in metrics.render().decode()


def test_duplicate_alert_label_sets_give_one_series() -> None:
    metrics = Metrics()
    one = make_alert()
    two = make_alert()
    two.rule_key = "other-group/BuyingPowerBelowFloor"
    metrics.set_alerts([one, two])
    assert metrics.render().decode().count("riskmon_alert_active{") == 1


# -- against prometheus-client ---------------------------------------------------------


def stock_samples(
    snapshots: Iterable[Snapshot],
) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    registry = CollectorRegistry()
    gauges = {
        path: Gauge(name, help_text, ["venue", "account", "currency"], registry=registry)
        for path, name, help_text in ACCOUNT_FIELD_METRICS
    }
    for s in snapshots:
        for path, gauge in gauges.items():
            value = s.fields.get(path)
            if isinstance(value, Decimal | bool):
                gauge.labels(s.venue, s.account, s.currency or "").set(float(value))
    return {
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }


def test_same_samples_as_prometheus_client_gauges() -> None:
    snapshots = [snap(str(i)) for i in range(5)] + [snap(WEIRD_ACCOUNT)]
    metrics = Metrics()
    for s in snapshots:
        metrics.update_account(s)
    ours = {
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for sample in samples(metrics)
        if sample.name in FIELD_METRIC.values()
    }
    assert ours == stock_samples(snapshots)
