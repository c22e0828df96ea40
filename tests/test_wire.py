"""Decoding venue answers: exact numbers, readable errors, every JSON encoding."""

from __future__ import annotations

from decimal import Decimal

import pytest

from monitor.errors import SnapshotParseError
from monitor.venues.http import HttpResponse
from monitor.venues.http1 import ResponseHeaders
from monitor.venues.wire import decode_json, try_decode_json


def answer(body: bytes) -> HttpResponse:
    headers = ResponseHeaders({"x-request-id": "req-7"})
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


def test_utf16_answers_and_lone_surrogates_decode_as_the_standard_library_does() -> None:
    text = '{"name": "Zoë", "buying_power": 1.5}'
    expected = {"name": "Zoë", "buying_power": Decimal("1.5")}
    assert decode_json(answer(text.encode("utf-16"))) == expected
    assert decode_json(answer(text.encode("utf-8"))) == expected
    assert decode_json(answer(b'"\\ud800"')) == "\ud800"


def test_a_body_that_is_not_json_is_a_parse_error_naming_size_and_request() -> None:
    for body in (b'{"data": {"buying_power": "1', b"<html>502 Bad Gateway</html>", b""):
        with pytest.raises(SnapshotParseError) as caught:
            decode_json(answer(body))
        assert "not valid JSON" in str(caught.value)
        assert f"{len(body)} bytes" in str(caught.value)
        assert caught.value.request_id == "req-7"
        assert try_decode_json(answer(body)) is None
