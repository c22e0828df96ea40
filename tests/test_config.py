"""The config loader: one test per kind of mistake, each pinned to its file:line:col."""

from __future__ import annotations

import os
import shutil
import socket
from decimal import Decimal
from pathlib import Path

import pytest

from monitor.config import Config, load_config
from monitor.config.loader import parse_config
from monitor.config.secret import RECHECK_SECONDS, UNREADABLE_DIGEST, Secret, digest_of
from monitor.yamlsource import SourceError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PEM = "-----BEGIN PRIVATE KEY-----\nMIIBdemo\n-----END PRIVATE KEY-----\n"

# A valid Clear Street venue; most tests append to it or change one line of it.
CS = """\
venues:
  - name: cs
    kind: clearstreet
    base_url: https://api.clearstreet.com
    api_key_file: cs.key
    accounts:
      - id: "19816"
"""

PMX = """\
venues:
  - name: pmx
    kind: polymarket
    base_url: https://api.prod.polymarketexchange.com
    auth:
      token_url: https://pmx-prod.us.auth0.com/oauth/token
      client_id: riskmon
      private_key_file: pmx.pem
      participant_id: firms/ACME/users/riskbot
    accounts:
      - id: firms/ACME/accounts/main
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The config's folder, holding the secret files the configs above name."""
    (tmp_path / "cs.key").write_text("cs-key-value\n")
    (tmp_path / "pmx.pem").write_text(PEM)
    return tmp_path


def parse(folder: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config(text, "riskmon.yaml", base_dir=folder, environ=environ or {})


def errors(folder: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SourceError) as info:
        parse(folder, text, environ)
    return [str(p) for p in info.value.problems]


def error(folder: Path, text: str, environ: dict[str, str] | None = None) -> str:
    found = errors(folder, text, environ)
    assert len(found) == 1, found
    return found[0]


# -- valid configs ---------------------------------------------------------------------


def test_minimal_config_takes_the_defaults(folder: Path) -> None:
    config = parse(folder, CS)
    assert config.instance == socket.gethostname()
    assert config.state_dir == folder / "state"
    assert config.http.listen == "127.0.0.1:9817"
    assert config.mqtt.url == "mqtt://127.0.0.1:1883"
    assert config.mqtt.topic_prefix == "riskmon"
    assert config.mqtt.tls is None
    assert config.rules == ()
    assert config.stale_after == 30.0
    venue = config.venue("cs")
    assert (venue.poll_interval, venue.timeout, venue.stale_after) == (2.0, 5.0, 30.0)
    assert (venue.max_concurrency, venue.max_requests_per_second) == (16, 20.0)
    assert venue.max_response_bytes == 1 << 20
    assert venue.accounts[0].id == "19816"
    assert venue.discovery is None
    assert venue.settings.api_key is not None
    assert venue.settings.api_key.get() == "cs-key-value"
    assert venue.settings.api_key.name == "cs api_key_file"
    assert config.document is not None
    assert config.document.at(("venues", 0, "name")).line == 2


def test_polymarket_venue(folder: Path) -> None:
    venue = parse(folder, PMX).venue("pmx")
    assert venue.kind == "polymarket"
    assert venue.settings.currency == "USD"
    assert venue.settings.auth is not None
    assert venue.settings.auth.client_id == "riskmon"
    assert venue.settings.auth.participant_id == "firms/ACME/users/riskbot"
    assert venue.settings.auth.private_key.path == folder / "pmx.pem"
    assert venue.settings.auth.private_key.get() == PEM.strip()
    assert venue.settings.auth.audience is None
    assert not hasattr(venue.settings, "api_key")  # a polymarket venue's settings


def test_full_config(folder: Path) -> None:
    (folder / "ca.pem").write_text("ca")
    (folder / "mqtt-password").write_text("pw")
    text = """\
instance: riskmon-a
state_dir: /var/lib/riskmon
http: {listen: "[::1]:9000"}
mqtt:
  url: mqtts://broker.example.com:8883
  topic_prefix: acme/risk
  username: ops
  password_file: mqtt-password
  client_id: riskmon-a
  tls: {ca_file: ca.pem, insecure: false}
rules: ["rules/*.yaml", "/etc/riskmon/rules/**/*.yaml"]
stale_after: 1m
venues:
  - name: cs_prod-1
    kind: clearstreet
    base_url: https://api.clearstreet.com/
    api_key: ${CS_KEY}
    poll_interval: 500ms
    timeout: 1m30s
    max_concurrency: 4
    max_requests_per_second: 2.5
    stale_after: 10s
    max_response_bytes: 65536
    top_margin_contributors_limit: 5
    accounts:
      - id: 19816
        labels: {desk: equities, tier: 1}
        params: {floor: 50000, ratio: 0.1, mode: strict, enabled: true}
      - discover: true
        interval: 10m
        statuses: [active, INACTIVE]
        labels: {source: discovery}
"""
    config = parse(folder, text, {"CS_KEY": "k"})
    assert config.instance == "riskmon-a"
    assert config.state_dir == Path("/var/lib/riskmon")
    assert config.http.listen == "[::1]:9000"
    assert config.mqtt.url == "mqtts://broker.example.com:8883"
    assert config.mqtt.topic_prefix == "acme/risk"
    assert config.mqtt.username == "ops"
    assert config.mqtt.password is not None
    assert config.mqtt.password.get() == "pw"
    assert config.mqtt.client_id == "riskmon-a"
    assert config.mqtt.tls is not None
    assert config.mqtt.tls.ca_file == folder / "ca.pem"
    assert config.rules == (str(folder / "rules/*.yaml"), "/etc/riskmon/rules/**/*.yaml")
    assert config.stale_after == 60.0
    venue = config.venue("cs_prod-1")
    assert venue.base_url == "https://api.clearstreet.com"
    assert venue.settings.api_key is not None
    assert venue.settings.api_key.get() == "k"
    assert venue.settings.api_key.name == "cs_prod-1 api_key"
    assert (venue.poll_interval, venue.timeout, venue.stale_after) == (0.5, 90.0, 10.0)
    assert (venue.max_concurrency, venue.max_requests_per_second) == (4, 2.5)
    assert venue.max_response_bytes == 65536
    assert venue.settings.top_margin_contributors_limit == 5
    account = venue.accounts[0]
    assert account.id == "19816"
    assert account.labels == {"desk": "equities", "tier": "1"}
    assert account.params == {
        "floor": Decimal("50000"),
        "ratio": Decimal("0.1"),
        "mode": "strict",
        "enabled": True,
    }
    assert venue.discovery is not None
    assert venue.discovery.interval == 600.0
    assert venue.discovery.statuses == ("ACTIVE", "INACTIVE")
    assert venue.discovery.labels == {"source": "discovery"}


def test_mqtts_without_a_tls_section_still_uses_tls(folder: Path) -> None:
    config = parse(folder, "mqtt: {url: mqtts://broker:8883}\n" + CS)
    assert config.mqtt.tls is not None
    assert config.mqtt.tls.ca_file is None


def test_embedded_broker(folder: Path) -> None:
    assert parse(folder, "mqtt: {url: embedded}\n" + CS).mqtt.url == "embedded"


def test_venue_stale_after_defaults_to_the_global_one(folder: Path) -> None:
    config = parse(folder, "stale_after: 45s\n" + CS)
    assert config.venue("cs").stale_after == 45.0


def test_base_url_keeps_its_path_prefix_without_the_trailing_slash(folder: Path) -> None:
    text = CS.replace("https://api.clearstreet.com", "http://127.0.0.1:8080/clearstreet/")
    assert parse(folder, text).venue("cs").base_url == "http://127.0.0.1:8080/clearstreet"


def test_params_become_exact_decimals(folder: Path) -> None:
    text = CS + (
        "        params: {floor: 50000, ratio: 0.1, tiny: 0.30000000000000004, "
        "big: 123456789012345678901234567890, long: 0.12345678901234567890, neg: -2.50}\n"
    )
    params = parse(folder, text).venue("cs").accounts[0].params
    assert params == {
        "floor": Decimal("50000"),
        "ratio": Decimal("0.1"),
        "tiny": Decimal("0.30000000000000004"),
        "big": Decimal("123456789012345678901234567890"),
        "long": Decimal("0.12345678901234567890"),
        "neg": Decimal("-2.50"),
    }
    assert all(isinstance(v, Decimal) for v in params.values())
    assert str(params["ratio"]) == "0.1"  # not 0.1000000000000000055511151231257827...


def test_relative_paths_are_resolved_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "riskmon"
    (folder / "secrets").mkdir(parents=True)
    (folder / "secrets" / "cs.key").write_text("k")
    (folder / "riskmon.yaml").write_text(
        "state_dir: ../../var/state\n"
        'rules: ["rules/*.yaml", "../shared/*.yaml"]\n'
        + CS.replace("api_key_file: cs.key", "api_key_file: secrets/cs.key")
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(os.path.relpath(folder / "riskmon.yaml"), environ={})
    assert config.source == folder / "riskmon.yaml"
    assert config.state_dir == tmp_path / "var" / "state"
    assert config.rules == (str(folder / "rules" / "*.yaml"), str(tmp_path / "etc/shared/*.yaml"))
    api_key = config.venue("cs").settings.api_key
    assert api_key is not None
    assert api_key.path == folder / "secrets" / "cs.key"


def test_example_config_loads(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "riskmon.yaml", tmp_path / "riskmon.yaml")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "clearstreet-api-key").write_text("demo-key\n")
    (tmp_path / "secrets" / "pmx-demo.pem").write_text(PEM)
    config = load_config(tmp_path / "riskmon.yaml", environ={})
    assert [v.name for v in config.venues] == ["cs-sim", "pmx-sim"]
    cs, pmx = config.venues
    assert cs.base_url == "http://127.0.0.1:8090/clearstreet"
    assert [a.id for a in cs.accounts] == ["19816", "19817", "19818"]
    assert cs.accounts[0].labels == {"desk": "equities"}
    assert cs.accounts[0].params == {"buying_power_floor": Decimal("50000")}
    assert cs.discovery is not None
    assert cs.settings.api_key is not None
    assert cs.settings.api_key.get() == "demo-key"
    assert pmx.settings.auth is not None
    assert pmx.settings.auth.token_url == "http://127.0.0.1:8090/polymarket/oauth/token"
    assert pmx.settings.auth.client_id == "riskmon-demo"
    assert pmx.settings.auth.participant_id == "firms/ACME/users/riskbot"
    assert [a.id for a in pmx.accounts] == ["firms/ACME/accounts/main", "firms/ACME/accounts/hedge"]
    assert config.mqtt.url == "mqtt://127.0.0.1:1883"
    assert config.http.listen == "127.0.0.1:9817"
    assert config.state_dir == tmp_path / "state"
    assert config.rules == (str(tmp_path.parent / "rules" / "*.yaml"),)


# -- environment variables ---------------------------------------------------------------


def test_missing_environment_variable_is_named(folder: Path) -> None:
    text = CS.replace("api_key_file: cs.key", "api_key: ${CLEARSTREET_API_KEY}")
    assert error(folder, text) == (
        "riskmon.yaml:5:14: environment variable CLEARSTREET_API_KEY is not set"
    )


def test_environment_variables_are_substituted(folder: Path) -> None:
    text = CS.replace("name: cs", "name: ${VENUE}").replace(
        "api_key_file: cs.key", "api_key: ${CS_KEY}"
    )
    venue = parse(folder, text, {"VENUE": "cs-prod", "CS_KEY": "secret"}).venues[0]
    assert venue.name == "cs-prod"
    assert venue.settings.api_key is not None
    assert venue.settings.api_key.get() == "secret"


def test_environment_variable_default(folder: Path) -> None:
    text = "instance: ${RISKMON_INSTANCE:-riskmon-a}\n" + CS
    assert parse(folder, text).instance == "riskmon-a"
    assert parse(folder, text, {"RISKMON_INSTANCE": ""}).instance == "riskmon-a"
    assert parse(folder, text, {"RISKMON_INSTANCE": "b"}).instance == "b"


def test_double_dollar_is_a_literal_dollar(folder: Path) -> None:
    text = CS.replace("api_key_file: cs.key", "api_key: a$$b$${NOT_A_VAR}$")
    api_key = parse(folder, text).venues[0].settings.api_key
    assert api_key is not None
    assert api_key.get() == "a$b${NOT_A_VAR}$"


def test_numbers_and_durations_from_the_environment(folder: Path) -> None:
    text = CS.replace(
        "    accounts:",
        "    max_concurrency: ${CONC}\n    poll_interval: ${POLL}\n    accounts:",
    )
    venue = parse(folder, text, {"CONC": "3", "POLL": "5s"}).venues[0]
    assert (venue.max_concurrency, venue.poll_interval) == (3, 5.0)


def test_unterminated_variable(folder: Path) -> None:
    text = "instance: ${HOST\n" + CS
    assert error(folder, text) == (
        "riskmon.yaml:1:11: unterminated ${...}: add the closing } (or write $$ for a $)"
    )


# -- YAML ----------------------------------------------------------------------------------


def test_yaml_syntax_error(folder: Path) -> None:
    text = CS.replace('      - id: "19816"', '      - id: "19816\n')
    message = error(folder, text)
    assert message.startswith("riskmon.yaml:9:1: invalid YAML: ")


def test_duplicate_key(folder: Path) -> None:
    text = CS.replace("    kind: clearstreet\n", "    kind: clearstreet\n    kind: polymarket\n")
    assert error(folder, text) == "riskmon.yaml:4:5: duplicate key 'kind'"


def test_empty_file(folder: Path) -> None:
    assert error(folder, "# nothing yet\n") == (
        "riskmon.yaml:1:1: the config file is empty; it needs at least a list of venues"
    )


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        load_config(tmp_path / "nope.yaml", environ={})
    assert (
        str(info.value) == f"{tmp_path / 'nope.yaml'}:1:1: cannot read: No such file or directory"
    )


# -- unknown keys ------------------------------------------------------------------------


def test_unknown_top_level_key_suggests_the_closest(folder: Path) -> None:
    assert error(folder, "stale_afer: 10s\n" + CS) == (
        "riskmon.yaml:1:1: unknown key 'stale_afer' in the config; did you mean 'stale_after'?"
    )


def test_unknown_venue_key_suggests_the_closest(folder: Path) -> None:
    text = CS.replace("    accounts:", "    pol_interval: 2s\n    accounts:")
    assert error(folder, text) == (
        "riskmon.yaml:6:5: unknown key 'pol_interval' in venue 'cs'; did you mean 'poll_interval'?"
    )


def test_unknown_account_key_suggests_the_closest(folder: Path) -> None:
    text = CS + "        lables: {desk: equities}\n"
    assert error(folder, text) == (
        "riskmon.yaml:8:9: unknown key 'lables' in account '19816' of venue 'cs'; "
        "did you mean 'labels'?"
    )


def test_unknown_mqtt_key_suggests_the_closest(folder: Path) -> None:
    text = "mqtt:\n  url: mqtt://broker:1883\n  usrname: ops\n" + CS
    assert error(folder, text) == (
        "riskmon.yaml:3:3: unknown key 'usrname' in mqtt; did you mean 'username'?"
    )


def test_unknown_key_without_a_close_one_lists_the_known(folder: Path) -> None:
    assert error(folder, "http: {port: 9817}\n" + CS) == (
        "riskmon.yaml:1:8: unknown key 'port' in http (known keys: listen, tls, bearer_token_file)"
    )


# -- wrong types and values ----------------------------------------------------------------


def test_wrong_type_for_a_whole_number(folder: Path) -> None:
    text = CS.replace("    accounts:", "    max_concurrency: abc\n    accounts:")
    assert error(folder, text) == (
        "riskmon.yaml:6:22: max_concurrency: expected a whole number, got 'abc'"
    )


def test_wrong_type_for_a_number(folder: Path) -> None:
    text = CS.replace("    accounts:", "    max_requests_per_second: abc\n    accounts:")
    assert error(folder, text) == (
        "riskmon.yaml:6:30: max_requests_per_second: expected a number, got 'abc'"
    )


def test_accounts_must_be_a_list(folder: Path) -> None:
    text = CS.replace('    accounts:\n      - id: "19816"\n', '    accounts: "19816"\n')
    assert error(folder, text) == (
        "riskmon.yaml:6:15: accounts: expected a list of accounts "
        "(- id: ... or - discover: true), got '19816'"
    )


def test_bad_duration_says_what_form_is_expected(folder: Path) -> None:
    text = CS.replace("    accounts:", "    timeout: 5 seconds\n    accounts:")
    assert error(folder, text) == (
        "riskmon.yaml:6:14: timeout: invalid duration '5 seconds': expected a number and a "
        "unit (ms, s, m, h, d, w, y) such as 500ms, 2s or 1m30s"
    )


def test_duration_without_a_unit(folder: Path) -> None:
    assert error(folder, "stale_after: 30\n" + CS) == (
        "riskmon.yaml:1:14: stale_after: expected a duration such as 500ms, 2s or 1m30s, "
        "got 30 (add a unit)"
    )


def test_zero_poll_interval(folder: Path) -> None:
    text = CS.replace("    accounts:", "    poll_interval: 0s\n    accounts:")
    assert error(folder, text) == "riskmon.yaml:6:20: poll_interval must be longer than 0, e.g. 2s"


def test_stale_after_must_outlast_the_poll_interval(folder: Path) -> None:
    text = CS.replace("    accounts:", "    poll_interval: 1m\n    accounts:")
    assert error(folder, text) == (
        "riskmon.yaml:6:20: stale_after (30s) must be longer than poll_interval (1m), or "
        "every account turns stale between polls; set a longer stale_after in venue 'cs'"
    )


# -- required keys -----------------------------------------------------------------------


def test_missing_base_url(folder: Path) -> None:
    text = CS.replace("    base_url: https://api.clearstreet.com\n", "")
    assert error(folder, text) == "riskmon.yaml:2:5: missing required key 'base_url' in venue 'cs'"


def test_missing_api_key_for_clearstreet(folder: Path) -> None:
    text = CS.replace("    api_key_file: cs.key\n", "")
    assert error(folder, text) == (
        "riskmon.yaml:2:5: missing api_key_file (or api_key) in venue 'cs': "
        "clearstreet venues need an API key"
    )


def test_missing_auth_for_polymarket(folder: Path) -> None:
    lines = PMX.splitlines(keepends=True)
    text = "".join(lines[:4] + lines[9:])
    assert error(folder, text) == "riskmon.yaml:2:5: missing required key 'auth' in venue 'pmx'"


def test_missing_auth_keys_for_polymarket(folder: Path) -> None:
    text = PMX.replace("      client_id: riskmon\n", "").replace(
        "      private_key_file: pmx.pem\n", ""
    )
    assert errors(folder, text) == [
        "riskmon.yaml:6:7: missing required key 'client_id' in auth of venue 'pmx'",
        "riskmon.yaml:6:7: missing private_key_file (or private_key) in auth of venue 'pmx'",
    ]


def test_missing_venues(folder: Path) -> None:
    assert error(folder, "instance: a\n") == (
        "riskmon.yaml:1:1: missing required key 'venues' in the config"
    )


def test_venue_without_accounts(folder: Path) -> None:
    text = CS.replace('    accounts:\n      - id: "19816"\n', "    accounts: []\n")
    assert error(folder, text) == (
        "riskmon.yaml:6:15: venue 'cs' has no accounts: list some (- id: ...) "
        "or add - discover: true"
    )


# -- venue kinds ---------------------------------------------------------------------------


def test_key_of_the_other_venue_kind(folder: Path) -> None:
    text = PMX.replace("    auth:", "    api_key_file: cs.key\n    auth:")
    assert error(folder, text) == (
        "riskmon.yaml:5:5: api_key_file is for clearstreet venues; polymarket venues use auth"
    )


def test_auth_in_a_clearstreet_venue(folder: Path) -> None:
    text = CS.replace("    accounts:", "    auth: {}\n    accounts:")
    assert error(folder, text) == (
        "riskmon.yaml:6:5: auth is for polymarket venues; "
        "clearstreet venues use api_key or api_key_file"
    )


def test_unknown_kind_suggests_the_closest(folder: Path) -> None:
    text = CS.replace("kind: clearstreet", "kind: clearstret")
    assert error(folder, text) == (
        "riskmon.yaml:3:11: unknown venue kind 'clearstret'; did you mean 'clearstreet'? "
        "(known kinds: clearstreet, polymarket)"
    )


def test_both_api_key_and_api_key_file(folder: Path) -> None:
    text = CS.replace("    accounts:", "    api_key: ${CS_KEY}\n    accounts:")
    assert error(folder, text, {"CS_KEY": "k"}) == (
        "riskmon.yaml:5:5: give api_key or api_key_file, not both"
    )


# -- names and ids -----------------------------------------------------------------------


def test_duplicate_venue_name(folder: Path) -> None:
    text = CS + CS.removeprefix("venues:\n")
    assert error(folder, text) == ("riskmon.yaml:8:11: duplicate venue name 'cs' (first at line 2)")


def test_bad_venue_name_characters(folder: Path) -> None:
    text = CS.replace("name: cs", "name: cs prod")
    assert error(folder, text) == (
        "riskmon.yaml:2:11: venue name 'cs prod' may only contain letters, digits, _ and -"
    )


def test_duplicate_account_id(folder: Path) -> None:
    text = CS + "      - id: 19816\n"
    assert error(folder, text) == (
        "riskmon.yaml:8:13: duplicate account id '19816' in venue 'cs' (first at line 7)"
    )


def test_clearstreet_ids_are_digits(folder: Path) -> None:
    text = CS.replace('id: "19816"', "id: ABC-1")
    assert error(folder, text) == (
        "riskmon.yaml:7:13: Clear Street account ids are numbers such as 19816, got 'ABC-1'"
    )


def test_id_that_yaml_reads_as_another_number(folder: Path) -> None:
    text = CS.replace('id: "19816"', "id: 010")
    assert error(folder, text) == (
        "riskmon.yaml:7:13: id: YAML reads 010 as the number 8; put the id in quotes"
    )


def test_bad_participant_id(folder: Path) -> None:
    text = PMX.replace("firms/ACME/users/riskbot", "riskbot")
    assert error(folder, text) == (
        "riskmon.yaml:9:23: participant_id must look like firms/<FIRM>/users/<USER>, got 'riskbot'"
    )


def test_two_discover_entries(folder: Path) -> None:
    text = CS + "      - discover: true\n      - {discover: true, interval: 1m}\n"
    assert error(folder, text) == (
        "riskmon.yaml:9:10: only one discover entry per venue (first at line 8)"
    )


def test_bad_labels_and_params(folder: Path) -> None:
    text = CS + "        labels: {1desk: a, ok: [x]}\n        params: {floor: .nan}\n"
    assert errors(folder, text) == [
        "riskmon.yaml:8:18: invalid label name '1desk': use letters, digits and _, "
        "not starting with a digit or __",
        "riskmon.yaml:8:32: label ok: expected text, got a list",
        "riskmon.yaml:9:25: floor: expected a finite number, got nan",
    ]


def test_label_names_riskmon_sets_itself_are_refused(folder: Path) -> None:
    # riskmon_account_info carries venue and account, the account gauges currency, and
    # alerts alertname, venue, account and severity: an account label must not shadow them
    text = CS + "        labels: {desk: eq, venue: x, currency: y}\n      - discover: true\n"
    text += "        labels: {severity: z}\n"
    reserved = "riskmon sets alertname, venue, account, severity and currency itself"
    assert errors(folder, text) == [
        f"riskmon.yaml:8:28: label 'venue' is reserved: {reserved}",
        f"riskmon.yaml:8:38: label 'currency' is reserved: {reserved}",
        f"riskmon.yaml:10:18: label 'severity' is reserved: {reserved}",
    ]


# -- addresses, URLs and files -----------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "col", "message"),
    [
        (
            "9817",
            16,
            "listen: expected HOST:PORT such as 127.0.0.1:9817, 0.0.0.0:9817 or [::1]:9817, "
            "got '9817'",
        ),
        (
            "localhost:99999",
            16,
            "listen: expected HOST:PORT such as 127.0.0.1:9817, 0.0.0.0:9817 or [::1]:9817, "
            "got 'localhost:99999'",
        ),
        ("[::zz]:9817", 16, "listen: invalid IPv6 address [::zz]"),
    ],
)
def test_bad_listen_address(folder: Path, listen: str, col: int, message: str) -> None:
    assert error(folder, f'http: {{listen: "{listen}"}}\n' + CS) == (
        f"riskmon.yaml:1:{col}: {message}"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "tcp://broker:1883",
            "url: expected mqtt://HOST:PORT, mqtts://HOST:PORT or embedded, "
            "got 'tcp://broker:1883'",
        ),
        (
            "mqtt://broker:0",
            "url: invalid port in 'mqtt://broker:0'; expected mqtt://HOST:PORT, "
            "mqtts://HOST:PORT or embedded",
        ),
        (
            "mqtt://:1883",
            "url: no valid host in 'mqtt://:1883'; expected mqtt://HOST:PORT, "
            "mqtts://HOST:PORT or embedded",
        ),
        (
            "mqtt://ops:hunter2@broker",
            "url must not hold credentials: use username and password_file",
        ),
    ],
)
def test_bad_mqtt_url(folder: Path, url: str, message: str) -> None:
    assert error(folder, f"mqtt:\n  url: {url}\n" + CS) == f"riskmon.yaml:2:8: {message}"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (  # one slash: urlsplit sees no user, the password lands in the path
            "mqtt:/ops:SECRETPW@127.0.0.1:1883",
            "url: no valid host in 'mqtt:/***@127.0.0.1:1883'; expected mqtt://HOST:PORT, "
            "mqtts://HOST:PORT or embedded",
        ),
        (  # a # in the password: the rest of it is a fragment, its start a port
            "mqtt://ops:SEC#RETPW@broker:1883",
            "url: invalid port in 'mqtt://***@broker:1883'; expected mqtt://HOST:PORT, "
            "mqtts://HOST:PORT or embedded",
        ),
        (
            "tcp:ops:SECRETPW@broker",
            "url: expected mqtt://HOST:PORT, mqtts://HOST:PORT or embedded, got 'tcp:***@broker'",
        ),
    ],
)
def test_a_malformed_mqtt_url_never_shows_its_password(
    folder: Path, url: str, message: str
) -> None:
    text = f'mqtt:\n  url: "{url}"\n' + CS
    assert error(folder, text) == f"riskmon.yaml:2:8: {message}"


@pytest.mark.parametrize(
    ("venue", "good", "bad", "message"),
    [
        (
            CS,
            "https://api.clearstreet.com",
            "https:/ops:SECRETPW@api.clearstreet.com",
            "riskmon.yaml:4:15: base_url: no valid host in 'https:/***@api.clearstreet.com'",
        ),
        (
            PMX,
            "https://pmx-prod.us.auth0.com/oauth/token",
            "https://ops:SE?CRETPW@pmx-prod.us.auth0.com",
            "riskmon.yaml:6:18: token_url: invalid port in 'https://***@pmx-prod.us.auth0.com'",
        ),
    ],
)
def test_a_malformed_venue_url_never_shows_its_password(
    folder: Path, venue: str, good: str, bad: str, message: str
) -> None:
    assert error(folder, venue.replace(good, bad)) == message


def test_mqtt_topic_prefix_wildcards(folder: Path) -> None:
    assert error(folder, "mqtt: {topic_prefix: risk/+}\n" + CS) == (
        "riskmon.yaml:1:22: topic_prefix must not contain the MQTT wildcards + or #"
    )


def test_mqtt_password_and_password_file(folder: Path) -> None:
    text = "mqtt: {username: ops, password: x, password_file: cs.key}\n" + CS
    assert error(folder, text) == (
        "riskmon.yaml:1:36: mqtt takes password or password_file, not both"
    )


def test_bad_base_url(folder: Path) -> None:
    text = CS.replace("https://api.clearstreet.com", "api.clearstreet.com")
    assert error(folder, text) == (
        "riskmon.yaml:4:15: base_url: expected an http:// or https:// URL such as "
        "https://api.example.com, got 'api.clearstreet.com'"
    )


def test_missing_api_key_file(folder: Path) -> None:
    text = CS.replace("api_key_file: cs.key", "api_key_file: secrets/nope")
    assert error(folder, text) == (
        f"riskmon.yaml:5:19: api_key_file {folder / 'secrets' / 'nope'} does not exist"
    )


def test_private_key_file_must_be_pem(folder: Path) -> None:
    (folder / "pmx.pem").write_text("not a key")
    assert error(folder, PMX) == (
        f"riskmon.yaml:8:25: private_key_file {folder / 'pmx.pem'} is not a PEM private key "
        "(-----BEGIN ... PRIVATE KEY-----)"
    )


def test_missing_tls_file(folder: Path) -> None:
    text = "mqtt:\n  url: mqtts://broker:8883\n  tls: {ca_file: ca.pem}\n" + CS
    assert error(folder, text) == f"riskmon.yaml:3:18: ca_file {folder / 'ca.pem'} does not exist"


# -- many problems, secrets, rotation ----------------------------------------------------


def test_several_errors_are_reported_at_once(folder: Path) -> None:
    text = """\
stale_after: soon
venues:
  - name: cs
    kind: clearstreet
    base_url: https://api.clearstreet.com
    api_key: ${CS_KEY}
    poll_interval: 0s
    accounts:
      - id: x1
  - name: pmx
    kind: polymarket
    base_url: https://api.prod.polymarketexchange.com
    currency: usd
    accounts: []
"""
    assert errors(folder, text) == [
        "riskmon.yaml:1:14: stale_after: invalid duration 'soon': expected a number and a unit "
        "(ms, s, m, h, d, w, y) such as 500ms, 2s or 1m30s",
        "riskmon.yaml:6:14: environment variable CS_KEY is not set",
        "riskmon.yaml:7:20: poll_interval must be longer than 0, e.g. 2s",
        "riskmon.yaml:9:13: Clear Street account ids are numbers such as 19816, got 'x1'",
        "riskmon.yaml:10:5: missing required key 'auth' in venue 'pmx'",
        "riskmon.yaml:13:15: currency: expected a 3-letter upper-case code such as USD, got 'usd'",
        "riskmon.yaml:14:15: venue 'pmx' has no accounts: list some (- id: ...) "
        "or add - discover: true",
    ]


def test_secret_values_never_appear_in_errors(folder: Path) -> None:
    secret = "TOPSECRET-4f9a"
    text = f"""\
mqtt:
  url: ${{MQTT_URL}}
  password: {secret}
  topic_prefix: ${{PREFIX}}
venues:
  - name: cs
    kind: clearstreet
    base_url: ${{CS_URL}}
    api_key: {secret}
    api_key_file: cs.key
    accounts:
      - id: ${{CS_ACCOUNT}}
  - name: pmx
    kind: polymarket
    base_url: https://api.prod.polymarketexchange.com
    api_key: ${{CS_KEY}}
    auth:
      token_url: https://pmx/oauth/token
      client_id: ${{PMX_CLIENT:-{secret}}}x
      private_key: ${{PMX_KEY}}
      participant_id: ${{PMX_PARTICIPANT}}
    accounts:
      - id: ${{PMX_ACCOUNT}}
"""
    environ = {
        "MQTT_URL": f"mqtt://ops:{secret}@broker",
        "PREFIX": f"{secret}/#",
        "CS_URL": f"ftp://{secret}",
        "CS_KEY": secret,
        "CS_ACCOUNT": secret,
        "PMX_KEY": secret,
        "PMX_PARTICIPANT": secret,
        "PMX_ACCOUNT": secret,
    }
    with pytest.raises(SourceError) as info:
        parse(folder, text, environ)
    message = str(info.value)
    assert len(info.value.problems) >= 8, message
    assert "TOPSECRET" not in message
    assert "(from the environment)" in message  # the ${VAR} written is shown instead


def test_secrets_do_not_show_in_repr(folder: Path) -> None:
    text = CS.replace("api_key_file: cs.key", "api_key: ${CS_KEY}")
    config = parse(folder, text, {"CS_KEY": "TOPSECRET"})
    assert "TOPSECRET" not in repr(config)


def test_rotated_api_key_file_is_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("monitor.config.secret.time.monotonic", lambda: clock[0])
    key_file = tmp_path / "secrets" / "cs.key"
    key_file.parent.mkdir()
    key_file.write_text("first-key\n")
    config_file = tmp_path / "riskmon.yaml"
    config_file.write_text(CS.replace("api_key_file: cs.key", "api_key_file: secrets/cs.key"))
    api_key = load_config(config_file, environ={}).venue("cs").settings.api_key
    assert api_key is not None
    assert api_key.get() == "first-key"
    # a rotation as Kubernetes does it: a new file swapped in, with another length
    new_file = tmp_path / "secrets" / "cs.key.new"
    new_file.write_text("second-key-rotated\n")
    new_file.replace(key_file)
    assert api_key.get() == "first-key"  # the file is looked at once a second at most
    clock[0] += RECHECK_SECONDS
    assert api_key.get() == "second-key-rotated"
    # and rewritten in place with the same length: the modification time tells
    key_file.write_text("third-key-rotated!\n")
    stat = key_file.stat()
    os.utime(key_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    api_key.recheck()  # as an adapter does when the venue refuses the key
    assert api_key.get() == "third-key-rotated!"


def test_a_secret_digest_follows_the_file_and_never_shows_the_value(tmp_path: Path) -> None:
    key_file = tmp_path / "cs.key"
    secret = Secret.file("cs api_key", key_file)
    assert secret.digest() == UNREADABLE_DIGEST
    key_file.write_text("first-key\n")
    first = secret.digest()  # looked at now, not after RECHECK_SECONDS
    assert first == digest_of("first-key")
    assert "first-key" not in first
    new_file = tmp_path / "cs.key.new"
    new_file.write_text("first-key\n")
    new_file.replace(key_file)
    assert secret.digest() == first  # the same value in a new file
    new_file.write_text("second-key\n")
    new_file.replace(key_file)
    assert secret.digest() == digest_of("second-key")
