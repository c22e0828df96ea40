"""`riskmon_account_info{venue, account, <labels>...} 1` from a running daemon: each
account's labels from riskmon.yaml, changed and removed by a reload."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import PIPE, STDOUT

import pytest
from test_daemon import RiskmonProcess

ACCOUNTS = [
    {"id": "19816", "labels": {"desk": "equities", "tier": "1"}},
    {"id": "19817", "labels": {"desk": 'op"tions\\'}},
    {"id": "19818"},
]
RULES = """\
groups:
  - name: capital
    venues: [clearstreet]
    rules:
      - alert: BuyingPowerBelowFloor
        expr: buying_power < 25000
"""
Info = dict[tuple[str, str], dict[str, str]]


@pytest.fixture
def riskmon(
    tmp_path: Path, riskmon_config: Callable[..., tuple[Path, int]]
) -> Iterator[RiskmonProcess]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "capital.yaml").write_text(RULES)
    config, http_port = riskmon_config(
        instance="info-1", rules="rules/*.yaml", stale_after="1500ms", cs_accounts=ACCOUNTS
    )
    process = RiskmonProcess(tmp_path, config, http_port)
    try:
        yield process
    finally:
        process.stop()


async def info(riskmon: RiskmonProcess) -> Info:
    found: Info = {}
    for (name, labels), value in (await riskmon.metrics()).items():
        if name == "riskmon_account_info":
            assert value == 1
            rest = dict(labels)
            found[rest.pop("venue"), rest.pop("account")] = rest
    return found


async def info_is(riskmon: RiskmonProcess, expected: Info) -> bool:
    return await info(riskmon) == expected


PMX = {("pmx", "firms/ACME/accounts/main"): {}, ("pmx", "firms/ACME/accounts/hedge"): {}}


async def test_account_labels_reach_the_metrics_and_follow_reloads(
    riskmon: RiskmonProcess,
) -> None:
    riskmon.start()
    await riskmon.ready()
    first = {
        ("cs", "19816"): {"desk": "equities", "tier": "1"},
        ("cs", "19817"): {"desk": 'op"tions\\'},
        ("cs", "19818"): {},
        **PMX,
    }
    await riskmon.until(lambda: info_is(riskmon, first), "an info series per account")
    _, text = await riskmon.get("/metrics")
    assert text.count("# TYPE riskmon_account_info gauge") == 1
    promtool = shutil.which("promtool")
    if promtool is not None:  # Debian's prometheus package (`make tools`)
        lint = await asyncio.create_subprocess_exec(
            promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
        )
        said, _ = await lint.communicate(text.encode())
        assert b"riskmon_account_info" not in said, said

    # a reload: 19816 leaves, 19817 moves desk, 19818 gets a label
    accounts = [
        {"id": "19817", "labels": {"desk": "futures"}},
        {"id": "19818", "labels": {"desk": "treasury"}},
    ]
    config = riskmon.config.read_text()
    assert json.dumps(ACCOUNTS) in config
    riskmon.config.write_text(config.replace(json.dumps(ACCOUNTS), json.dumps(accounts)))
    assert riskmon.process is not None
    riskmon.process.send_signal(signal.SIGHUP)
    second = {("cs", "19817"): {"desk": "futures"}, ("cs", "19818"): {"desk": "treasury"}, **PMX}
    await riskmon.until(lambda: info_is(riskmon, second), "the info series after the reload")
