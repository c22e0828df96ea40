"""Decoding venue answers: exact numbers, readable errors, every JSON encoding."""

from __future__ import annotations

from decimal import Decimal

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from monitor.errors import SnapshotParseError
from monitor.venues.http import HttpResponse
from monitor.venues.wire import MAX_DEPTH, decode_json, try_decode_json


def answer(body: bytes) -> HttpResponse:
    headers = CIMultiDictProxy(CIMultiDict({"x-request-id": "req-7"}))
    return HttpResponse(200, headers, body, "http://venue.test/v1/accounts/1/balances")


def test_numbers_are_exact_decimals_with_their_digits() -> None:
    body = b'{"a": 1.10, "b": 12345678901234567890.123456789, "c": 5, "d": 1e5, "e": -0.0}'
    assert decode_json(answer(body)) == {
        "a": Decimal("1.10"),
        "b": Decimal("12345678901234567890.123456789"),
        "c": 5,
        "d": Decimal("1E+5"),
        "e": Decimal("-0.0"),
    }
    assert str(decode_json(answer(b"[1.10]"))[0]) == "1.10"  # trailing zeros kept
    assert decode_json(answer(b"123456789012345678901234567890")) == 123456789012345678901234567890


@pytest.mark.parametrize("careful", [False, True], ids=["msgspec", "standard library"])
def test_a_number_no_decimal_can_hold_stays_text(careful: bool) -> None:
    # decimal.InvalidOperation out of the decoder's number hook crashed the adapter
    # (found by tests/test_fuzz_pipeline.py); a lone surrogate takes the careful path
    body = b'{"equity": 1.0e+99999999999999999999, "n": "\\ud800", "ok": 2.5}'
    value = decode_json(answer(body if careful else body.replace(b"\\ud800", b"x")))
    assert value["equity"] == "1.0e+99999999999999999999"
    assert value["ok"] == Decimal("2.5")


def test_utf16_answers_decode_as_the_standard_library_does() -> None:
    text = '{"name": "Zoë", "buying_power": 1.5}'
    expected = {"name": "Zoë", "buying_power": Decimal("1.5")}
    assert decode_json(answer(text.encode("utf-16"))) == expected
    assert decode_json(answer(text.encode("utf-8"))) == expected


def test_text_that_no_encoding_can_write_becomes_the_replacement_character() -> None:
    """Lone surrogates (escaped, or UTF-8-encoded) and bytes that are not UTF-8, in values,
    keys and lists alike, at any depth: U+FFFD, so that nothing downstream (metric labels,
    the API's JSON, MQTT payloads, URLs) meets text it cannot encode."""
    body = b'{"currency": "\\ud800", "\\udc00k": ["a\\udfff", {"x": "\xed\xa0\x80\xff"}]}'
    decoded = decode_json(answer(body))
    assert decoded == {"currency": "\ufffd", "\ufffdk": ["a\ufffd", {"x": "\ufffd" * 4}]}
    assert decode_json(answer(b'"\\ud800"')) == "\ufffd"
    assert decode_json(answer(b'"\\ud83d\\ude00"')) == "\U0001f600"  # a pair stays
    assert try_decode_json(answer(b'{"message": "\\ud800"}')) == {"message": "\ufffd"}
    lone_in_utf16 = b"\x00\xd8"
    body16 = '{"currency": "'.encode("utf-16-le") + lone_in_utf16 + '"}'.encode("utf-16-le")
    assert decode_json(answer(body16)) == {"currency": "\ufffd"}


@pytest.mark.parametrize(
    "body",
    [
        b'{"buying_power": "1", "buying_power": "2"}',
        b'{"data":{"buying_power":"1","sod":{"asof":"12:00","equity":"1","equity":"1"}}}',
        b'[{"a": 1}, {"b": 1, "c": {"d": 1, "d": null}}]',
        b'{"x\\ud800": 1, "x\\udc00": 2}',
    ],
)
def test_a_key_repeated_in_one_object_makes_the_answer_ambiguous(body: bytes) -> None:
    with pytest.raises(
        SnapshotParseError,
        match=r"ambiguous: (key '[a-z_]+' appears twice|two keys differ only in invalid text)",
    ):
        decode_json(answer(body))
    assert try_decode_json(answer(body)) is None


def test_colons_in_text_and_the_same_key_in_other_objects_are_not_repeats() -> None:
    body = b'{"t": "12:00:00", "u": "a\\":b", "x": {"t": 1}, "y": [{"t": 2}, {"t": 3}]}'
    assert decode_json(answer(body))["x"] == {"t": 1}
    assert decode_json(answer(body.replace(b":", b" : ")))["u"] == 'a" : b'


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900, 5000])
def test_answers_nested_too_deep_are_refused(depth: int) -> None:
    for opening, closing in ((b"[", b"]"), (b'{"a":', b"}")):
        body = opening * depth + b"1" + closing * depth
        with pytest.raises(SnapshotParseError, match=f"more than {MAX_DEPTH} levels deep"):
            decode_json(answer(body))
    nested_enough = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert decode_json(answer(nested_enough)) is not None


def test_a_body_that_is_not_json_is_a_parse_error_naming_size_and_request() -> None:
    for body in (b'{"data": {"buying_power": "1', b"<html>502 Bad Gateway</html>", b""):
        with pytest.raises(SnapshotParseError) as caught:
            decode_json(answer(body))
        assert "not valid JSON" in str(caught.value)
        assert f"{len(body)} bytes" in str(caught.value)
        assert caught.value.request_id == "req-7"
        assert try_decode_json(answer(body)) is None


def test_times_in_text_keep_an_answer_on_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Polymarket's `updateTime` holds colons; only a repeat-or-text doubt goes the slow way."""

    def careful(body: bytes) -> None:
        raise AssertionError("decoded on the careful path")

    body = b'{"balance":"1","updateTime":"2026-01-01T12:00:00Z","securities":{"X":{"b":"1"}}}'
    monkeypatch.setattr("monitor.venues.wire._careful_loads", careful)
    assert decode_json(answer(body))["updateTime"] == "2026-01-01T12:00:00Z"
    assert decode_json(answer(body.replace(b'":', b'" :')))["balance"] == "1"
