"""The daemon checks params and lints as `riskmon check` does: it refuses to start on an
error, keeps the running config and rules when a reload brings one, logs every warning
at start and at each reload, and lists them at /api/v1/status and in a gauge. Against
the real daemon, Mosquitto and the simulator."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from test_daemon import RULES, RiskmonProcess, riskmon_process, run_riskmon

QUOTED_FLOR = '"buying_power_flor"'
QUOTED_FLOOR = '"buying_power_floor"'
#: RULES with a field Clear Street never sends: a lint warning, as `check` prints it
LINTED = RULES.replace(
    "expr: margin_details.maintenance_margin_excess < 0",
    "expr: margin_details.maintenance_margin_excess < 0 or "
    "margin_details.maintenance_margin_exces < 0",
)


def place(path: Path, text: str) -> str:
    content = path.read_text()
    at = content.index(text)
    line = content.count("\n", 0, at) + 1
    return f"{path}:{line}:{at - (content.rfind(chr(10), 0, at) + 1) + 1}"


def replace_file(path: Path, text: str) -> None:
    """Write a watched file at once: the rule watch never reads it half written."""
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, path)


def log_lines(riskmon: RiskmonProcess, event: str) -> list[dict[str, Any]]:
    lines = (json.loads(line) for line in riskmon.log().splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == event]


async def status(riskmon: RiskmonProcess) -> dict[str, Any]:
    code, body = await riskmon.get("/api/v1/status")
    assert code == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


async def metric(riskmon: RiskmonProcess, name: str) -> float | None:
    return (await riskmon.metrics()).get((name, ()))


def test_a_param_error_refuses_the_start(
    tmp_path: Path, riskmon_config: Callable[..., tuple[Path, int]]
) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "capital.yaml").write_text(RULES)
    config, _ = riskmon_config(
        instance="t",
        rules="rules/*.yaml",
        stale_after="5s",
        cs_accounts=[
            {"id": "19816", "params": {"buying_power_flor": 50000}},
            {"id": "19817", "params": {"buying_power_floor": "50k"}},
        ],
    )
    result = run_riskmon(config)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{place(config, QUOTED_FLOR)}: params.buying_power_flor: no rule of venue "
        "'cs' reads it; did you mean buying_power_floor?",
        f"{place(config, chr(34) + '50k')}: params.buying_power_floor: '50k' is not a "
        f"number, but BuyingPowerBelowFloor ({tmp_path / 'rules' / 'capital.yaml'}:5:9) "
        "compares it with a number or computes with it",
    ]


async def test_warnings_are_logged_at_start_and_each_reload_and_listed_in_status(
    tmp_path: Path, riskmon_config: Callable[..., tuple[Path, int]]
) -> None:
    with riskmon_process(tmp_path, riskmon_config, rules=LINTED) as riskmon:
        rules = tmp_path / "rules" / "capital.yaml"
        warning = (
            f"{place(rules, 'margin_details.maintenance_margin_exces <')}: clearstreet never "
            "sends margin_details.maintenance_margin_exces; did you mean "
            "margin_details.maintenance_margin_excess?"
        )
        riskmon.start()
        await riskmon.ready()
        body = await status(riskmon)
        assert body["warnings"] == [warning]
        assert body["last_reload"]["successful"] is True
        assert body["rules"]["rules"] == 2
        assert body["rules"]["files"] == [str(rules)]
        assert body["config"]["path"] == str(riskmon.config)
        assert await metric(riskmon, "riskmon_config_warnings") == 1
        logged = [line["problem"] for line in log_lines(riskmon, "check warning")]
        assert logged == [warning.replace(": clearstreet", ": warning: clearstreet")]

        # a reload by SIGHUP logs them again
        assert riskmon.process is not None
        riskmon.process.send_signal(signal.SIGHUP)

        async def logged_twice() -> bool:
            return len(log_lines(riskmon, "check warning")) == 2

        await riskmon.until(logged_twice, "the warning logged again at the SIGHUP reload")

        # a changed rule file reloads by itself: its warnings are logged and listed too
        # (its "rules loaded" line said "warnings": [] for what check warns about)
        replace_file(rules, LINTED.replace("power {{ buying_power }}", "power {{ buying_powr }}"))

        async def two_warnings() -> bool:
            return await metric(riskmon, "riskmon_config_warnings") == 2

        await riskmon.until(two_warnings, "two warnings after the rule file changed")
        [loaded] = log_lines(riskmon, "rules loaded")
        assert len(loaded["warnings"]) == 2
        assert any(
            "never sends buying_powr; did you mean buying_power?" in w for w in loaded["warnings"]
        )
        body = await status(riskmon)
        assert len(body["warnings"]) == 2
        assert body["last_reload"]["successful"] is True


async def test_a_reload_with_a_param_error_keeps_the_running_config_and_rules(
    tmp_path: Path, riskmon_config: Callable[..., tuple[Path, int]]
) -> None:
    with riskmon_process(tmp_path, riskmon_config) as riskmon:
        config = riskmon.config
        config.write_text(
            config.read_text().replace(
                '{"id": "19816"}', '{"id": "19816", "params": {"buying_power_floor": 50000}}'
            )
        )
        riskmon.start()
        await riskmon.ready()
        param = (
            "riskmon_account_param",
            (("account", "19816"), ("param", "buying_power_floor"), ("venue", "cs")),
        )

        async def floor_exported() -> bool:
            return (await riskmon.metrics()).get(param) == 50000

        await riskmon.until(floor_exported, "the account's floor as riskmon_account_param")

        # SIGHUP with a misspelt param: refused, the running config stays
        config.write_text(
            config.read_text().replace('"buying_power_floor": 50000', '"buying_power_flor": 40000')
        )
        assert riskmon.process is not None
        riskmon.process.send_signal(signal.SIGHUP)

        async def reload_failed() -> bool:
            return await metric(riskmon, "riskmon_config_last_reload_successful") == 0

        await riskmon.until(reload_failed, "a refused reload (SIGHUP)")
        problem = (
            f"{place(config, QUOTED_FLOR)}: params.buying_power_flor: no rule of venue "
            "'cs' reads it; did you mean buying_power_floor?"
        )
        [failed] = log_lines(riskmon, "reload failed; the running config and rules stay")
        assert failed["problems"] == [problem]
        body = await status(riskmon)
        assert body["last_reload"]["successful"] is False
        assert body["last_reload"]["problems"] == [problem]
        assert (await riskmon.metrics()).get(param) == 50000  # still the running config's

        # the config fixed again; then a rule file that stops reading the param is
        # refused too, placed in the config that the daemon no longer holds in memory
        config.write_text(
            config.read_text().replace('"buying_power_flor": 40000', '"buying_power_floor": 50000')
        )
        riskmon.process.send_signal(signal.SIGHUP)

        async def reloaded() -> bool:
            return await metric(riskmon, "riskmon_config_last_reload_successful") == 1

        await riskmon.until(reloaded, "a good reload")
        rules = tmp_path / "rules" / "capital.yaml"
        replace_file(
            rules,
            RULES.replace("params.buying_power_floor", "params.buying_power_floor_usd").replace(
                "{buying_power_floor: 25000}", "{buying_power_floor_usd: 25000}"
            ),
        )
        await riskmon.until(reload_failed, "a refused reload (rule file watch)")
        [refused] = log_lines(riskmon, "rule reload failed; the running rules stay")
        assert refused["problems"] == [
            f"{place(config, QUOTED_FLOOR)}: params.buying_power_floor: no rule of "
            "venue 'cs' reads it; did you mean buying_power_floor_usd?"
        ]
        body = await status(riskmon)
        assert body["last_reload"]["problems"] == refused["problems"]
        _, alerts = await riskmon.get("/api/v1/alerts")  # the running rules still evaluate
        assert json.loads(alerts) == {"alerts": []}


async def test_account_params_show_only_params_some_rule_reads(
    tmp_path: Path, riskmon_config: Callable[..., tuple[Path, int]]
) -> None:
    rules = RULES.replace(
        "params: {buying_power_floor: 25000}",
        "params: {buying_power_floor: 25000, unread_default: 7}",
    )
    with riskmon_process(tmp_path, riskmon_config, rules=rules) as riskmon:
        riskmon.start()
        await riskmon.ready()

        async def params_of_19816() -> dict[str, float]:
            metrics = await riskmon.metrics()
            found = {
                dict(labels)["param"]: value
                for (name, labels), value in metrics.items()
                if name == "riskmon_account_param" and ("account", "19816") in labels
            }
            return found

        found = await riskmon.until(params_of_19816, "riskmon_account_param of 19816")
        assert found == {"buying_power_floor": 25000}  # not unread_default
