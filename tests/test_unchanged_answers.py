"""An answer equal to the account's last one is not parsed or evaluated again
(`monitor.venues.unchanged`, the evaluator's quiet runs), and that never hides a change:
of the answer, the rules, the params, the labels, or an alert's timer."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from monitor.config import AccountConfig, VenueConfig
from monitor.engine.evaluate import Evaluator
from monitor.engine.model import RuleSet
from monitor.engine.rulefile import parse_rules
from monitor.errors import SnapshotParseError
from monitor.simulator import Simulator
from monitor.snapshot import Snapshot
from monitor.venues.clearstreet import ClearStreetAdapter
from monitor.venues.http import HttpClient
from monitor.venues.unchanged import ParsedAnswers, answer_digest
from monitor.venues.wire import _loads

# -- over real sockets: the Clear Street adapter against the simulator -------------------


async def fetch(adapter: ClearStreetAdapter, account: str) -> Snapshot:
    return await adapter.fetch(AccountConfig(account), asyncio.get_running_loop().time() + 5)


async def test_an_unchanged_answer_shares_its_fields_and_a_change_is_seen_at_once(
    simulator: Simulator, cs_config: VenueConfig, http_client: HttpClient
) -> None:
    adapter = ClearStreetAdapter(cs_config, http_client)
    first = await fetch(adapter, "19816")
    second = await fetch(adapter, "19816")
    assert second.fields is first.fields  # parsed once
    assert second.request_id != first.request_id  # the envelope is each answer's own
    assert second.taken_at >= first.taken_at

    simulator.set_fields("clearstreet", "19816", {"buying_power": "12345.67"})
    changed = await fetch(adapter, "19816")
    assert changed.fields is not first.fields
    assert changed.fields["buying_power"] == Decimal("12345.67")
    assert first.fields["buying_power"] != Decimal("12345.67")  # the old one untouched

    other = await fetch(adapter, "19817")  # another account: its own answer
    assert other.fields is not changed.fields
    assert other.account == "19817"


async def test_a_refused_answer_is_refused_every_time_and_forgets_the_last_one(
    simulator: Simulator, cs_config: VenueConfig, http_client: HttpClient
) -> None:
    adapter = ClearStreetAdapter(cs_config, http_client)
    good = await fetch(adapter, "19816")
    simulator.set_fields("clearstreet", "19816", {"buying_power": "not a number"})
    for _ in range(2):
        with pytest.raises(SnapshotParseError, match="buying_power"):
            await fetch(adapter, "19816")
    simulator.set_fields("clearstreet", "19816", {"buying_power": str(good.fields["buying_power"])})
    again = await fetch(adapter, "19816")
    assert again.fields == good.fields


# -- the digest --------------------------------------------------------------------------


def data(body: str) -> Any:
    return _loads(body.encode())


def test_answers_share_a_digest_only_when_they_decode_alike() -> None:
    base = data('{"a": "1.00", "b": {"c": 2, "d": [1, "x"]}, "e": null}')
    assert answer_digest(base) == answer_digest(
        data('{"a":"1.00","b":{"c":2,"d":[1,"x"]},"e":null}')  # spacing is not content
    )
    for different in (
        '{"a": "1.0", "b": {"c": 2, "d": [1, "x"]}, "e": null}',  # 1.00 and 1.0 are two texts
        '{"a": 1.00, "b": {"c": 2, "d": [1, "x"]}, "e": null}',  # a number, not a text
        '{"a": "1.00", "b": {"c": 3, "d": [1, "x"]}, "e": null}',
        '{"a": "1.00", "b": {"c": 2, "d": ["x", 1]}, "e": null}',
        '{"a": "1.00", "b": {"c": 2, "d": [1, "x"]}}',
        '{"a": "1.00", "b": {"c": 2, "d": [1, "x"]}, "e": false}',
        '{"b": {"c": 2, "d": [1, "x"]}, "a": "1.00", "e": null}',  # another key order
    ):
        assert answer_digest(data(different)) != answer_digest(base), different


def test_the_one_pair_that_digests_alike_without_decoding_alike_parses_alike() -> None:
    """An integer 5 and 5e0 (a Decimal 5) encode alike; their fields are the same."""
    parsed = ParsedAnswers()
    calls: list[dict[str, Any]] = []

    def parse(answer: dict[str, Any], account: str) -> dict[str, Any]:
        calls.append(answer)
        return ClearStreetAdapter.parse_balances(answer, account)

    as_int = data('{"buying_power": 5, "equity": "1"}')
    as_decimal = data('{"buying_power": 5e0, "equity": "1"}')
    assert answer_digest(as_int) == answer_digest(as_decimal)
    fields = parsed.fields("1", as_int, parse)
    assert ClearStreetAdapter.parse_balances(as_decimal, "1") == fields
    assert parsed.fields("1", as_decimal, parse) is fields
    assert len(calls) == 1


def test_an_answer_without_a_digest_is_parsed_every_time() -> None:
    parsed = ParsedAnswers()
    calls = 0

    def parse(answer: dict[str, Any], account: str) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"n": answer["n"]}

    nan = {"n": Decimal("NaN")}  # the standard library's decoding keeps a NaN
    first = parsed.fields("1", nan, parse)
    assert parsed.fields("1", nan, parse) is not first
    assert calls == 2


def test_the_table_of_last_answers_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("monitor.venues.unchanged.ACCOUNTS_HELD", 3)
    parsed = ParsedAnswers()
    for account in range(10):
        parsed.fields(str(account), {"n": account}, lambda answer, _: dict(answer))
        assert len(parsed) <= 3


# -- the evaluator: a quiet run is skipped only while nothing it reads changed -----------

RULES = """
groups:
  - name: capital
    venues: [cs]
    rules:
      - alert: LowBuyingPower
        expr: buying_power < params.floor
        for: 10s
        params: {floor: 50000}
        severity: critical
        labels: {team: risk}
        annotations: {summary: "low"}
"""


def ruleset(text: str = RULES) -> RuleSet:
    return RuleSet(tuple(parse_rules(text, "capital.yaml")))


def snap(fields: dict[str, Any], **kw: Any) -> Snapshot:
    settings: dict[str, Any] = {
        "venue": "cs",
        "venue_kind": "clearstreet",
        "account": "19816",
        "fields": fields,
        "taken_at": 0.0,
        "currency": "USD",
    }
    return Snapshot(**(settings | kw))


def test_the_same_quiet_fields_again_start_nothing_and_a_new_rule_set_is_run() -> None:
    fields = {"buying_power": Decimal(60000)}
    evaluator = Evaluator(ruleset())
    assert evaluator.evaluate(snap(fields), 0.0) == []
    assert evaluator.evaluate(snap(fields), 1.0) == []
    stricter = evaluator.replace_rules(ruleset(RULES.replace("50000", "70000")), 2.0)
    assert stricter == []
    evaluator.evaluate(snap(fields), 3.0)
    assert evaluator.book.holds_any("cs", "19816")  # pending on the very same fields


def test_new_params_with_the_same_fields_are_run() -> None:
    fields = {"buying_power": Decimal(60000)}
    evaluator = Evaluator(ruleset())
    labels = {"desk": "a"}
    assert evaluator.evaluate(snap(fields, labels=labels), 0.0) == []
    evaluator.evaluate(snap(fields, labels=labels, params={"floor": Decimal(70000)}), 1.0)
    assert evaluator.book.holds_any("cs", "19816")


def test_a_pending_alert_fires_after_its_for_on_unchanged_fields() -> None:
    fields = {"buying_power": Decimal(40000)}
    evaluator = Evaluator(ruleset())
    assert evaluator.evaluate(snap(fields), 0.0) == []  # pending
    assert evaluator.evaluate(snap(fields), 5.0) == []
    (fired,) = evaluator.evaluate(snap(fields), 10.0)
    assert fired.status == "firing"
    assert evaluator.evaluate(snap(fields), 11.0) == []
    (resolved,) = evaluator.evaluate(snap({"buying_power": Decimal(60000)}), 12.0)
    assert resolved.status == "resolved"
