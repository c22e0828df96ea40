"""deploy/grafana and deploy/prometheus: the dashboard's every query against a real
Prometheus scraping a running riskmon, and Prometheus' self-monitoring rules through
`promtool check rules` and `promtool test rules`.

Prometheus and promtool come from Debian's `prometheus` package (`make tools`); the tests
that need them are skipped, saying so, where it is not installed.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from conftest import _free_port
from test_daemon import RiskmonProcess

from monitor.metrics import ACCOUNT_FIELD_METRICS
from monitor.simulator import Simulator

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "riskmon.json"
GRAFANA_DATASOURCES = REPO / "deploy" / "grafana" / "provisioning" / "datasources"
GRAFANA_DASHBOARDS = REPO / "deploy" / "grafana" / "provisioning" / "dashboards"
ALERT_RULES = REPO / "deploy" / "prometheus" / "riskmon-alerts.yaml"
ALERT_TESTS = REPO / "deploy" / "prometheus" / "riskmon-alerts.test.yaml"
METRICS_SOURCE = REPO / "monitor" / "metrics.py"

SELF_ALERTS = {
    "RiskmonDown",
    "RiskmonPollsFailing",
    "RiskmonAccountsStale",
    "RiskmonOutboxBacklogGrowing",
    "RiskmonConfigReloadFailed",
    "RiskmonMqttDisconnected",
    "RiskmonMemoryNearLimit",
    "RiskmonInternalErrors",
    "RiskmonEventsDeadLettered",
    "RiskmonStoreWritesFailing",
    "RiskmonAlertmanagerUndelivered",
    "RiskmonUnhealthy",
}
SCRAPES = 4  # successful scrapes of riskmon before the dashboard's queries run


def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/bin") / name, Path("/usr/local/bin") / name) if p.exists()),
        None,
    )


PROMTOOL = _tool("promtool")
PROMETHEUS = _tool("prometheus")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian's prometheus package; `make tools` installs it)",
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus is not installed (Debian's prometheus package; `make tools` installs it)",
)


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel but rows, including those inside collapsed rows."""
    out: list[dict[str, Any]] = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every query of every panel."""
    return [(panel["title"], target) for panel in panels(board) for target in panel["targets"]]


def exprs(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for _, target in targets(board)]


def legend(target: dict[str, Any], labels: dict[str, str]) -> str | None:
    """The series' name in the panel: its legendFormat filled in (None: Grafana's own)."""
    form = target.get("legendFormat")
    if not form or form == "__auto":
        return None
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), form)


def variable_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(variable name, query) of the dashboard's query variables."""
    out = []
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            out.append((variable["name"], query["query"] if isinstance(query, dict) else query))
    return out


# Grafana's built-in variables as Grafana would set them for Prometheus scraping every 1 s
# over the last minute, and the dashboard's own variables set to "All".
GRAFANA_BUILTINS = {
    "__rate_interval": "10s",
    "__interval": "5s",
    "__interval_ms": "5000",
    "__range": "1m",
    "__range_s": "60",
    "__range_ms": "60000",
}
ALL = {"instance": ".*", "venue": ".*", "account": ".*", "desk": ".*"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(expr: str, values: dict[str, str]) -> str:
    """`expr` with Grafana's variables replaced; an unknown variable is an error."""

    def one(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        if name not in values:
            raise AssertionError(f"{expr!r}: no test value for ${name}")
        return values[name]

    return _VARIABLE.sub(one, expr)


def test_substitute() -> None:
    expr = 'rate(x{venue=~"$venue",a=~"${account}",i=~"[[instance]]"}[$__rate_interval])'
    assert substitute(expr, ALL) == 'rate(x{venue=~".*",a=~".*",i=~".*"}[10s])'
    with pytest.raises(AssertionError, match=r"\$team"):
        substitute('x{team="$team"}', ALL)


# -- the dashboard's shape ----------------------------------------------------------------


def test_dashboard_has_a_stable_uid_a_datasource_variable_and_recent_schema() -> None:
    board = dashboard()
    assert board["uid"] == "riskmon-overview"
    assert board["schemaVersion"] >= 38  # Grafana 10 and 11
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("instance", "venue", "account", "desk"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        assert variables[name]["query"]["query"].startswith("label_values(")
        assert variables[name]["includeAll"]
        assert variables[name]["allValue"] == ".*"


def test_every_panel_queries_the_datasource_variable() -> None:
    board = dashboard()
    ids = [panel["id"] for panel in board["panels"]] + [
        p["id"] for row in board["panels"] if row["type"] == "row" for p in row.get("panels", [])
    ]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_panels_fit_the_grid_without_overlapping() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_the_dashboard_shows_what_on_call_needs() -> None:
    board = dashboard()
    text = " ".join(exprs(board))
    for metric in (
        "riskmon_account_buying_power",
        "riskmon_account_margin_excess",
        'param="buying_power_floor"',
        'param="excess_capital_floor"',
        'riskmon_alert_active{instance=~"$instance", venue=~"$venue", account=~"$account", '
        'state="firing"}',
        # suppressed alerts apart from firing ones
        'riskmon_alert_active{instance=~"$instance", venue=~"$venue", account=~"$account", '
        'state="suppressed"}',
        "time() - riskmon_last_success_timestamp_seconds",
        # the accounts' labels from riskmon.yaml, joined on: the desk variable and column
        "group_left (desk) riskmon_account_info",
        'riskmon_account_info{instance=~"$instance", desk=~"$desk"}',
        "riskmon_poll_duration_seconds_bucket",
        "riskmon_polls_total",
        "riskmon_outbox_pending",
        "riskmon_mqtt_connected",
        # riskmon itself: memory against its container's limit, fds, CPU
        "process_resident_memory_bytes",
        "riskmon_memory_limit_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ):
        assert metric in text, metric
    kinds = {panel["type"] for panel in panels(board)}
    assert {"state-timeline", "table", "timeseries"} <= kinds


def test_the_dashboard_names_only_metrics_riskmon_exports() -> None:
    source = METRICS_SOURCE.read_text(encoding="utf-8")
    exported = {name for _, name, _ in ACCOUNT_FIELD_METRICS}
    board = dashboard()
    text = " ".join(exprs(board) + [query for _, query in variable_queries(board)])
    for name in set(re.findall(r"\briskmon_\w+", text)):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert base in exported or f'"{base}' in source, f"{name} is not a riskmon metric"


def test_grafana_provisioning_points_at_the_dashboard_and_datasource() -> None:
    [datasource] = yaml.safe_load((GRAFANA_DATASOURCES / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == datasource["uid"]
    [provider] = yaml.safe_load((GRAFANA_DASHBOARDS / "riskmon.yaml").read_text())["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


# -- Prometheus' self-monitoring rules -----------------------------------------------------


def alerting_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_self_monitoring_rules_have_severity_and_runbooks() -> None:
    rules = alerting_rules()
    assert set(rules) == SELF_ALERTS
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert {"summary", "description", "runbook_url"} <= rule["annotations"].keys(), name
        assert rule["annotations"]["runbook_url"].startswith("https://"), name
        assert 'job="riskmon"' in rule["expr"], name


def test_every_self_monitoring_rule_is_unit_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == [ALERT_RULES.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == SELF_ALERTS
    assert quiet == SELF_ALERTS


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )


@needs_promtool
def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(ALERT_RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(SELF_ALERTS)} rules found" in result.stdout


@needs_promtool
def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# -- every panel's query against Prometheus scraping a running riskmon --------------------


class PrometheusProcess:
    """Debian's `prometheus` as a child process scraping `target` every second."""

    def __init__(self, binary: str, folder: Path, target: str) -> None:
        self.folder = folder
        self.port = _free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "prometheus.yml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": "1s",
                        "scrape_timeout": "1s",
                        "evaluation_interval": "1s",
                    },
                    "rule_files": [str(ALERT_RULES)],
                    "scrape_configs": [
                        {"job_name": "riskmon", "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
        )
        self.args = [
            binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.log_path = folder / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def api(self, path: str, **params: str) -> Any:
        """`/api/v1/<path>`'s data; AssertionError with Prometheus' error otherwise."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/api/v1/{path}", params=params) as resp,
        ):
            body = await resp.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.api("query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), data
        result: list[dict[str, Any]] = data["result"]
        return result if data["resultType"] == "vector" else [{"value": result}]

    async def until(self, expr: str, what: str, timeout: float = 30) -> None:  # noqa: ASYNC109
        """Wait until the instant query `expr` returns something."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                if await self.query(expr):
                    return
            except (aiohttp.ClientError, AssertionError):
                pass  # not listening yet
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"prometheus exited while waiting for {what}:\n{self.log()}")
            if loop.time() > deadline:
                raise AssertionError(f"no {what} after {timeout} s:\n{self.log()[-3000:]}")
            await asyncio.sleep(0.2)  # another process: its state can only be polled


@pytest.fixture
def riskmon(
    tmp_path: Path, riskmon_config: Callable[..., tuple[Path, int]]
) -> Iterator[RiskmonProcess]:
    """riskmon with the shipped rules/*.yaml over the simulator's five accounts."""
    config, http_port = riskmon_config(
        instance="observability-1",
        rules=f"{REPO / 'rules'}/*.yaml",
        stale_after="1s",
        cs_accounts=[
            {"id": "19816", "params": {"buying_power_floor": 50000}, "labels": {"desk": "eq"}},
            {"id": "19817"},
            {"id": "19818", "labels": {"desk": "options"}},
        ],
        venue_settings={"max_requests_per_second": 1000},
    )
    process = RiskmonProcess(tmp_path, config, http_port)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def prometheus(tmp_path: Path, riskmon: RiskmonProcess) -> AsyncIterator[PrometheusProcess]:
    if PROMETHEUS is None:
        pytest.skip(
            "prometheus is not installed (Debian's prometheus package; `make tools` installs it)"
        )
    target = f"127.0.0.1:{riskmon.http_port}"
    server = PrometheusProcess(PROMETHEUS, tmp_path / "prometheus", target)
    try:
        yield server
    finally:
        server.stop()


async def firing(riskmon: RiskmonProcess, *alertnames: str) -> bool:
    _, body = await riskmon.get("/api/v1/alerts?state=firing")
    names = {alert["alertname"] for alert in json.loads(body)["alerts"]}
    return set(alertnames) <= names


@needs_prometheus
async def test_every_dashboard_query_returns_series_from_a_running_riskmon(
    riskmon: RiskmonProcess, prometheus: PrometheusProcess, simulator: Simulator
) -> None:
    # a margin call fires at once and inhibits the Reg T shortfall beside it (a suppressed
    # alert); 19817 fails every poll: poll errors, a stale account
    simulator.set_fields(
        "clearstreet",
        "19818",
        {
            "margin_details.maintenance_margin_excess": "-5.00",
            "margin_details.initial_margin_excess": "-5.00",
        },
    )
    simulator.add_fault(
        {"venue": "clearstreet", "account": "19817", "kind": "status", "status": 503}
    )
    prometheus.start()  # its first scrape comes some seconds after it starts
    riskmon.start()
    await riskmon.ready()
    await riskmon.until(
        lambda: firing(riskmon, "MaintenanceMarginCall", "RegTShortfall", "AccountDataStale"),
        "alerts firing",
    )
    await prometheus.until(
        f'count_over_time(up{{job="riskmon"}}[1m]) >= {SCRAPES} and up{{job="riskmon"}} == 1',
        f"{SCRAPES} scrapes of riskmon",
    )

    board = dashboard()
    problems: list[str] = []
    for title, target in targets(board):
        result = await prometheus.query(substitute(target["expr"], ALL))
        if not result:
            problems.append(f"{title}: nothing from {target['expr']}")
        named = (legend(target, series.get("metric", {})) for series in result)
        names = [name for name in named if name is not None]
        if len(names) != len(set(names)):  # two lines of one name: a query that doubles
            problems.append(f"{title}: series named alike {sorted(map(str, names))}")
    assert not problems, "\n".join(problems)

    # the desk label from riskmon.yaml, joined on: chosen, it filters; All keeps the rest
    by_title = {title: target["expr"] for title, target in targets(board)}
    rows = await prometheus.query(substitute(by_title["Firing alerts"], {**ALL, "desk": "options"}))
    assert {(r["metric"]["account"], r["metric"].get("desk")) for r in rows} == {
        ("19818", "options")
    }
    assert "MaintenanceMarginCall" in {r["metric"]["alertname"] for r in rows}
    rows = await prometheus.query(substitute(by_title["Firing alerts by desk"], ALL))
    desks = {r["metric"]["desk"] for r in rows}
    assert {"options", "(no desk)"} <= desks, desks  # 19817 is stale, and has no desk

    # one account, one venue chosen: every query is still valid PromQL
    chosen = {
        "instance": f"127.0.0.1:{riskmon.http_port}",
        "venue": "cs",
        "account": "19816",
        "desk": "eq",
    }
    for expr in exprs(board):
        await prometheus.query(substitute(expr, chosen))

    # the variables' label_values(metric, label) list something
    for name, query in variable_queries(board):
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, f"${name}: {query}"
        values = await prometheus.api(
            f"label/{match[2]}/values", **{"match[]": substitute(match[1], ALL)}
        )
        assert values, f"${name} lists nothing: {query}"


@needs_prometheus
async def test_floors_and_self_monitoring_rules_on_real_metrics(
    riskmon: RiskmonProcess, prometheus: PrometheusProcess, simulator: Simulator
) -> None:
    simulator.add_fault(
        {"venue": "clearstreet", "account": "19817", "kind": "status", "status": 503}
    )
    prometheus.start()
    riskmon.start()
    await riskmon.ready()
    await prometheus.until('up{job="riskmon"} == 1', "a scrape of riskmon")
    scraped = time.time()  # rule groups evaluate at their own offsets: wait for ones after

    # riskmon_account_param: the account's own floor, else the rules' default
    floors = {
        (s["metric"]["venue"], s["metric"]["account"], s["metric"]["param"]): s["value"][1]
        for s in await prometheus.query(
            'riskmon_account_param{param=~"buying_power_floor|excess_capital_floor"}'
        )
    }
    assert floors == {
        ("cs", "19816", "buying_power_floor"): "50000",
        ("cs", "19818", "buying_power_floor"): "25000",  # rules/capital.yaml
        ("pmx", "firms/ACME/accounts/main", "excess_capital_floor"): "1000",
        ("pmx", "firms/ACME/accounts/hedge", "excess_capital_floor"): "1000",
    }  # 19817 never answered: no snapshot, no params

    # every rule of riskmon-alerts.yaml evaluates without error against riskmon's metrics;
    # 19817 has never had a good poll: RiskmonAccountsStale is pending for cs
    async def evaluated() -> list[dict[str, Any]]:
        data = await prometheus.api("rules", type="alert")
        rules: list[dict[str, Any]] = [r for g in data["groups"] for r in g["rules"]]
        pending = {
            (a["labels"]["alertname"], a["labels"].get("venue")) for r in rules for a in r["alerts"]
        }
        done = all(_seconds(r.get("lastEvaluation")) > scraped for r in rules)
        return rules if done and ("RiskmonAccountsStale", "cs") in pending else []

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not (rules := await evaluated()):
        assert loop.time() < deadline, f"rules not evaluated:\n{prometheus.log()[-3000:]}"
        await asyncio.sleep(0.2)
    assert {r["name"] for r in rules} == SELF_ALERTS
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    states = {r["name"]: r["state"] for r in rules}
    assert states["RiskmonDown"] == "inactive"
    assert states["RiskmonMqttDisconnected"] == "inactive"
    assert states["RiskmonConfigReloadFailed"] == "inactive"
    assert states["RiskmonEventsDeadLettered"] == "inactive"
    assert states["RiskmonStoreWritesFailing"] == "inactive"
    assert states["RiskmonAccountsStale"] == "pending"


def _seconds(rfc3339: str | None) -> float:
    """Seconds since the epoch of a time Prometheus' API gives (UTC, `...Z`, nanoseconds
    cut to microseconds); 0 for none or Go's zero time (a rule not evaluated yet)."""
    if not rfc3339 or rfc3339.startswith("0001"):
        return 0.0
    head, _, fraction = rfc3339.removesuffix("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]}+00:00").timestamp()
