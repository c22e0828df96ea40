"""Rule reloads: all or nothing, and alert state that survives them."""

from __future__ import annotations

import asyncio
import os
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import monitor.engine.reload as reload_module
from monitor.engine.builtin import builtin_rules, riskmon_snapshot
from monitor.engine.evaluate import Evaluator
from monitor.engine.lifecycle import AlertBook
from monitor.engine.model import RuleSet
from monitor.engine.reload import RuleSource
from monitor.snapshot import Snapshot
from monitor.yamlsource import SourceError

FLOOR = """groups:
  - name: capital
    rules:
      - alert: BuyingPowerBelowFloor
        expr: buying_power < {floor}
        for: 0s
        severity: critical
"""
MARGIN = """groups:
  - name: margin
    rules:
      - alert: MarginCall
        expr: margin_excess < 0
"""


def snap(**fields: Decimal) -> Snapshot:
    return Snapshot("cs", "clearstreet", "1", fields, 0.0)


def write(path: Path, text: str) -> None:
    path.write_text(text)
    stat = path.stat()  # a new mtime even within the file system's time resolution
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_a_changed_file_is_noticed_and_loaded(tmp_path: Path) -> None:
    write(tmp_path / "capital.yaml", FLOOR.format(floor=100))
    source = RuleSource([str(tmp_path / "*.yaml")])
    assert source.changed()
    source.load()
    assert not source.changed()
    write(tmp_path / "margin.yaml", MARGIN)
    assert source.changed()
    rules = source.reload()
    assert rules is not None
    assert {r.alert for r in rules.rules} == {"BuyingPowerBelowFloor", "MarginCall"}
    assert source.status.successful


def test_an_invalid_set_is_refused_whole_and_the_old_rules_stay(tmp_path: Path) -> None:
    write(tmp_path / "capital.yaml", FLOOR.format(floor=100))
    source = RuleSource([str(tmp_path / "*.yaml")])
    good = source.load()
    write(tmp_path / "margin.yaml", MARGIN)
    write(tmp_path / "capital.yaml", FLOOR.format(floor="__import__('os')"))
    assert source.reload() is None
    assert source.rules is good
    assert not source.status.successful
    assert any(str(p).startswith(f"{tmp_path / 'capital.yaml'}:5:") for p in source.status.problems)
    assert not source.changed()  # the broken files are not retried in a loop
    with pytest.raises(SourceError):
        source.load()
    write(tmp_path / "capital.yaml", FLOOR.format(floor=200))
    assert source.reload() is not None
    assert source.status.successful


def test_pending_and_firing_alerts_survive_a_reload_that_keeps_their_rule(
    tmp_path: Path,
) -> None:
    write(tmp_path / "capital.yaml", FLOOR.format(floor=100))
    source = RuleSource([str(tmp_path / "*.yaml")])
    evaluator = Evaluator(source.load())
    [fired] = evaluator.evaluate(snap(buying_power=Decimal(50)), 0)
    write(tmp_path / "capital.yaml", FLOOR.format(floor=60))  # same identity, new threshold
    new = source.reload()
    assert new is not None
    assert evaluator.replace_rules(new, 1) == []
    assert evaluator.evaluate(snap(buying_power=Decimal(50)), 2) == []  # not re-announced
    [alert] = evaluator.book.firing()
    assert alert.fingerprint == fired.fingerprint
    [resolved] = evaluator.evaluate(snap(buying_power=Decimal(70)), 3)
    assert resolved.status == "resolved"


def many_rules(count: int) -> str:
    """A rule file of `count` rules, each with its own expression, param and template."""
    rules = "".join(
        f"      - alert: Rule{i}\n"
        f"        expr: buying_power < params.floor_{i} and margin_excess > {i}\n"
        f"        params: {{floor_{i}: {i}}}\n"
        f'        annotations: {{summary: "{{{{ account }}}} {{{{ buying_power }}}} under {i}"}}\n'
        for i in range(count)
    )
    return "groups:\n  - name: many\n    rules:\n" + rules


async def test_a_reload_compiles_in_a_thread_while_the_loop_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "capital.yaml", FLOOR.format(floor=100))
    source = RuleSource([str(tmp_path / "*.yaml")])
    source.load()
    compiled_in: list[threading.Thread] = []
    load_rules = reload_module.load_rules

    def spy(paths: Any) -> Any:
        compiled_in.append(threading.current_thread())
        return load_rules(paths)

    monkeypatch.setattr(reload_module, "load_rules", spy)
    write(tmp_path / "many.yaml", many_rules(300))
    turns = 0
    reload = asyncio.ensure_future(source.reload_in_thread())
    while not reload.done():  # the loop keeps turning while the rules compile
        turns += 1
        await asyncio.sleep(0)
    rules = await reload
    assert rules is not None
    assert len(rules.rules) == 301
    assert compiled_in
    assert compiled_in[0] is not threading.main_thread()
    assert turns > 10
    assert source.rules is rules
    assert source.status.successful

    write(tmp_path / "many.yaml", many_rules(2).replace("buying_power <", "buying_power <<"))
    assert await source.reload_in_thread() is None  # broken: the running rules stay
    assert source.rules is rules
    assert not source.status.successful
    assert not source.changed()  # a broken set is not tried again until it changes


def test_a_reload_leaves_the_built_in_alerts_alone() -> None:
    """The daemon's two Evaluators share one AlertBook: a reload of the user's rules
    must not resolve a firing EventsUndeliverable (or AccountDataStale) as 'rule removed'."""
    book = AlertBook()
    health = Evaluator(builtin_rules(), book)
    user = Evaluator(RuleSet(groups=(), files=()), book)
    [fired] = health.evaluate(riskmon_snapshot(dead_letters=2, now=100.0), 100.0)
    assert (fired.alertname, fired.status) == ("EventsUndeliverable", "firing")
    assert user.replace_rules(RuleSet(groups=(), files=()), 101.0, also_keep=health.rules) == []
    assert [a.alertname for a in book.firing()] == ["EventsUndeliverable"]
    assert health.evaluate(riskmon_snapshot(dead_letters=2, now=102.0), 102.0) == []
