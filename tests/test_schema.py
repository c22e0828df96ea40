"""`monitor.schema`: each typed field validator, table-driven."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from monitor import schema
from monitor.config.checking import Checker
from monitor.schema import Invalid, ListenAddress
from monitor.yamlsource import Location, parse_yaml

# -- params ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("25000", Decimal("25000")),
        ("25000.00", Decimal("25000.00")),
        (" 1e5 ", Decimal("1E+5")),
        ("-3.5", Decimal("-3.5")),
        ("+.5", Decimal("0.5")),
        ("2_500", Decimal("2500")),
        ("1.5E-3", Decimal("0.0015")),
        ("true", True),
        (" False ", False),
        ("TRUE", True),
        ("50k", "50k"),
        ("desk 7", "desk 7"),
        ("", ""),
        ("nan", "nan"),
        ("Infinity", "Infinity"),
        ("0x10", "0x10"),
        ("1e", "1e"),
        ("_1", "_1"),
    ],
)
def test_param_from_text(text: str, expected: Any) -> None:
    got = schema.param_from_text(text)
    assert type(got) is type(expected)
    assert str(got) == str(expected)  # exact: "25000.00" keeps its two places


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        (25000, Decimal(25000)),
        (0.1, Decimal("0.1")),
        ("25000", Decimal(25000)),
        (" 1e5", Decimal("1E+5")),
        ("50k", "50k"),
        (Decimal("2.50"), Decimal("2.50")),
    ],
)
def test_param_value(value: Any, expected: Any) -> None:
    got = schema.param_value(value)
    assert type(got) is type(expected)
    assert str(got) == str(expected)


def test_param_value_keeps_the_decimal_written_in_the_file() -> None:
    assert str(schema.param_value(1.10, written=lambda v: Decimal("1.10"))) == "1.10"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "expected a number, text or true/false, got an empty value"),
        ([1], "expected a number, text or true/false, got a list"),
        ({"a": 1}, "expected a number, text or true/false, got a mapping"),
        (float("inf"), "expected a finite number, got inf"),
        (float("nan"), "expected a finite number, got nan"),
        ("9" * 51, "number longer than 50 digits"),
        ("1e1001", "number with an exponent beyond ±1000"),
        (10**51, "number longer than 50 digits"),
    ],
)
def test_param_value_refuses(value: Any, message: str) -> None:
    with pytest.raises(Invalid) as exc:
        schema.param_value(value)
    assert str(exc.value) == message


@pytest.mark.parametrize(
    ("line", "col", "value", "expected"),
    [
        ("a: 0.1", 4, 0.1, "0.1"),
        ("a: 1.10  # comment", 4, 1.1, "1.10"),
        ("a: 2_500.50", 4, 2500.5, "2500.50"),
        ("a: &x !!float 1.0e+5", 4, 1e5, "1.0E+5"),
        ("a: -3.", 4, -3.0, "-3"),
        ("a: 0.30000000000000004", 4, 0.1 + 0.2, "0.30000000000000004"),
        ("a: .inf", 4, 7.5, "7.5"),  # nothing written that reads as the value: repr
    ],
)
def test_written_number(line: str, col: int, value: float, expected: str) -> None:
    got = schema.written_number([line], Location("f", 1, col), value)
    assert str(got) == expected


def test_split_lines_counts_lines_as_yaml_does() -> None:
    assert schema.split_lines("a\r\nb\rc\x85d\u2028e\nf") == ["a", "b", "c", "d", "e", "f"]


# -- names and labels --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["desk", "_x", "a1", "A_B_9"])
def test_label_and_param_names(name: str) -> None:
    assert schema.label_name(name) == name
    assert schema.param_name(name) == name


@pytest.mark.parametrize(
    ("name", "label_ok", "param_ok"),
    [
        ("1desk", False, False),
        ("de-sk", False, False),
        ("", False, False),
        ("désk", False, False),
        ("__name", False, True),  # reserved for labels only
    ],
)
def test_bad_names(name: str, label_ok: bool, param_ok: bool) -> None:
    for check, ok, message in (
        (schema.label_name, label_ok, f"invalid label name {name!r}: use letters"),
        (schema.param_name, param_ok, f"invalid parameter name {name!r}: use letters"),
    ):
        if ok:
            assert check(name) == name
        else:
            with pytest.raises(Invalid, match=re.escape(message)):
                check(name)


def test_annotation_names_say_what_they_are() -> None:
    with pytest.raises(Invalid, match="invalid annotation name '9x'"):
        schema.label_name("9x", what="annotation")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("equities", "equities"), (7, "7"), (Decimal("1.50"), "1.50"), (2.5, "2.5"), ("", "")],
)
def test_label_value(value: Any, expected: str) -> None:
    assert schema.label_value(value) == expected


@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}, float("inf")])
def test_label_value_refuses(value: Any) -> None:
    with pytest.raises(Invalid, match="expected text, got"):
        schema.label_value(value)


# -- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "allow_zero", "seconds"),
    [
        ("500ms", False, 0.5),
        ("1m30s", False, 90.0),
        ("2s", True, 2.0),
        ("0s", True, 0.0),
        (0, True, 0.0),
        ("0", True, 0.0),
    ],
)
def test_duration(value: Any, allow_zero: bool, seconds: float) -> None:
    assert schema.duration(value, allow_zero=allow_zero) == seconds


@pytest.mark.parametrize(
    ("value", "allow_zero", "message"),
    [
        (30, False, "expected a duration such as 500ms, 2s or 1m30s, got 30 (add a unit)"),
        (30, True, "expected a duration such as 500ms, 2s or 1m30s, got 30 (add a unit)"),
        (0, False, "expected a duration such as 500ms, 2s or 1m30s, got 0"),
        (None, True, "expected a duration such as 500ms, 2s or 1m30s, got an empty value"),
        (
            "soon",
            False,
            "invalid duration 'soon': expected a number and a unit (ms, s, m, h, d, w, y) "
            "such as 500ms, 2s or 1m30s",
        ),
        ("0s", False, "must be longer than 0, e.g. 2s"),
        ("-1s", True, "invalid duration '-1s'"),
    ],
)
def test_duration_refuses(value: Any, allow_zero: bool, message: str) -> None:
    with pytest.raises(Invalid) as exc:
        schema.duration(value, allow_zero=allow_zero)
    assert str(exc.value).startswith(message)


def test_duration_shows_the_value_as_the_caller_says() -> None:
    with pytest.raises(Invalid, match=r"invalid duration '\$\{X\}' \(from the environment\)"):
        schema.duration("secret", show=lambda _: "'${X}' (from the environment)")


# -- listen addresses, hosts, URLs -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "shown"),
    [
        ("127.0.0.1:9817", "127.0.0.1", 9817, "127.0.0.1:9817"),
        ("0.0.0.0:80", "0.0.0.0", 80, "0.0.0.0:80"),
        ("[::1]:9817", "::1", 9817, "[::1]:9817"),
        (":9817", "127.0.0.1", 9817, "127.0.0.1:9817"),
        ("localhost:0", "localhost", 0, "localhost:0"),
        (" host.example:65535 ", "host.example", 65535, "host.example:65535"),
    ],
)
def test_listen_address(text: str, host: str, port: int, shown: str) -> None:
    address = schema.listen_address(text)
    assert address == ListenAddress(host, port)
    assert str(address) == shown


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("9817", "expected HOST:PORT such as 127.0.0.1:9817, 0.0.0.0:9817 or [::1]:9817"),
        ("host:", "expected HOST:PORT"),
        ("host:99999", "expected HOST:PORT"),
        ("::1:80", "expected HOST:PORT"),
        ("a:b", "expected HOST:PORT"),
        ("[::zz]:9817", "invalid IPv6 address [::zz]"),
        ("bad host:80", "invalid host 'bad host'"),
        ("-x-:80", "invalid host '-x-'"),
    ],
)
def test_listen_address_refuses(text: str, message: str) -> None:
    with pytest.raises(Invalid, match=re.escape(message)):
        schema.listen_address(text)


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("api.example.com", True),
        ("api.example.com.", True),
        ("a_b", True),
        ("-a", False),
        ("a..b", False),
        ("", False),
        ("a" * 254, False),
    ],
)
def test_valid_host(host: str, ok: bool) -> None:
    assert schema.valid_host(host) is ok


@pytest.mark.parametrize(
    "text",
    ["https://api.example.com", "http://127.0.0.1:8090/prefix/", "https://[::1]:443"],
)
def test_http_url(text: str) -> None:
    assert schema.http_url(text, name="base_url") == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "ftp://x.example",
            "base_url: expected an http:// or https:// URL such as https://api.example.com, "
            "got 'ftp://x.example'",
        ),
        ("https://user:hunter2@x.example", "base_url must not hold credentials"),
        ("https://-bad-/", "base_url: no valid host in 'https://-bad-/'"),
        ("https://x.example:0", "base_url: invalid port in 'https://x.example:0'"),
        ("https://x.example:99999", "base_url: invalid port"),
        ("https://x.example/?a=1", "base_url must not have a query (?) or fragment (#)"),
        ("https://x.example/#", "base_url must not have a query (?) or fragment (#)"),
    ],
)
def test_http_url_refuses(text: str, message: str) -> None:
    with pytest.raises(Invalid) as exc:
        schema.http_url(text, name="base_url")
    assert str(exc.value).startswith(message)
    assert "hunter2" not in str(exc.value)


def test_url_parts_never_show_a_password() -> None:
    with pytest.raises(Invalid) as exc:
        schema.url_parts(
            "mqtt:/user:hunter2@host",
            ("mqtt",),
            name="url",
            expected="expected mqtt://HOST:PORT",
            credentials="no credentials",
        )
    assert "hunter2" not in str(exc.value)
    assert str(exc.value) == "url: no valid host in 'mqtt:/***@host'"


# -- matchers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        ('severity="critical"', "severity", "=", "critical"),
        ("severity=critical", "severity", "=", "critical"),
        (' team =~ "risk|ops" ', "team", "=~", "risk|ops"),
        ('env!="test"', "env", "!=", "test"),
        ('alertname!~"Venue.*"', "alertname", "!~", "Venue.*"),
        ('desk=""', "desk", "=", ""),
        ('note="say \\"hi\\"\\n"', "note", "=", 'say "hi"\n'),
        ('path="a\\\\b"', "path", "=", "a\\b"),
    ],
)
def test_parse_matcher(text: str, name: str, op: str, value: str) -> None:
    matcher = schema.parse_matcher(text)
    assert (matcher.name, matcher.op, matcher.value) == (name, op, value)
    assert schema.parse_matcher(str(matcher)) == matcher  # its text reads back


@pytest.mark.parametrize(
    ("text", "offset", "message"),
    [
        ("", 0, "expected a label matcher such as"),
        ("severity", 0, "expected a label matcher such as"),
        ('="x"', 0, "expected a label matcher such as"),
        ('  1sev="x"', 2, "invalid label name '1sev' in a matcher"),
        ('team=~"(risk"', 6, "invalid regular expression '(risk'"),
        ('team="risk', 5, 'unterminated matcher value: add the closing "'),
        ('team="a\\qb"', 7, "invalid escape in a matcher value"),
        ('team="a" b', 9, "unexpected 'b' after the matcher's value"),
        ("team=a b", 7, "unexpected 'b' after the matcher's value"),
        ("team==x", 5, "unexpected '=x' after the matcher's value"),
    ],
)
def test_parse_matcher_refuses_with_the_place(text: str, offset: int, message: str) -> None:
    with pytest.raises(Invalid) as exc:
        schema.parse_matcher(text)
    assert str(exc.value).startswith(message)
    assert exc.value.offset == offset


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ('severity="critical"', {"severity": "critical"}, True),
        ('severity="critical"', {"severity": "warning"}, False),
        ('severity!="critical"', {}, True),  # a missing label reads as ""
        ('desk=""', {}, True),
        ('desk=""', {"desk": "eq"}, False),
        ('team=~"risk|ops"', {"team": "ops"}, True),
        ('team=~"risk|ops"', {"team": "risk-eu"}, False),  # anchored at both ends
        ('team!~"risk.*"', {"team": "ops"}, True),
        ('team!~"risk.*"', {"team": "risk-eu"}, False),
        ('team=~".*"', {}, True),
    ],
)
def test_matcher_matches(text: str, labels: dict[str, str], matches: bool) -> None:
    assert schema.parse_matcher(text).matches(labels) is matches


def test_invalid_is_a_value_error_for_callers_that_catch_those() -> None:
    assert issubclass(Invalid, ValueError)


# -- in a config: placed at the character --------------------------------------------------


@pytest.mark.parametrize(
    ("line", "environ", "expected"),
    [
        ('match: team=~"(risk"', {}, "c.yaml:1:14: match: invalid regular expression '(risk'"),
        ("match: 'team=\"a\" b'", {}, "c.yaml:1:18: match: unexpected 'b' after the"),
        ("match: &m 1team=x", {}, "c.yaml:1:11: match: invalid label name '1team'"),
        (
            "match: ${M}",
            {"M": 'secret=~"(x"'},
            "c.yaml:1:8: match: invalid label matcher '${M}' (from the environment)",
        ),
    ],
)
def test_a_config_matcher_problem_is_placed_at_its_character(
    tmp_path: Path, line: str, environ: dict[str, str], expected: str
) -> None:
    checker = Checker(parse_yaml(line, "c.yaml"), line, tmp_path, environ)
    assert checker.matcher(("match",), checker.value["match"]) is None
    [problem] = checker.problems
    assert str(problem).startswith(expected)
    assert "secret" not in str(problem)


def test_a_config_matcher() -> None:
    text = 'match: "severity!=info"'
    checker = Checker(parse_yaml(text, "c.yaml"), text, Path("."), {})
    assert checker.matcher(("match",), checker.value["match"]) == schema.Matcher(
        "severity", "!=", "info"
    )
    assert checker.problems == []
