"""Small helpers shared by adapters for reading venue answers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from monitor.errors import (
    AccountNotFound,
    SnapshotParseError,
    VenueAuthError,
    VenueError,
    VenueRateLimited,
    VenueRequestError,
    VenueUnavailable,
)
from monitor.venues.http import HttpResponse, retry_after_seconds

# msgspec decodes an answer in a third of the standard library's time (7 against 17 us
# for a Clear Street balance, once per poll); `float_hook` gets each number's text. An
# answer it refuses goes to the standard library (`_careful_loads`), which also reads
# UTF-16/32, NaN and lone surrogates, and whose result or error stands. One shared
# decoder each: `json.loads` would build a new decoder (and its scanner) per call.


def _number(text: str) -> Decimal | str:
    """A JSON number as an exact Decimal; one whose exponent no Decimal can hold
    (`1e+99999999999999999999`) stays text, which no field takes as a number: a known
    field then fails its parse naming itself, an unknown one keeps the text."""
    try:
        return Decimal(text)
    except InvalidOperation:
        return text


_FAST_DECODER = msgspec.json.Decoder(float_hook=_number)

#: Objects and lists nested deeper than this are refused: no venue answer nests more
#: than 5 levels, and `flatten` and everything after it recurse once per level.
MAX_DEPTH = 32

_SURROGATE = re.compile("[\ud800-\udfff]")


class AnswerRefused(ValueError):
    """JSON that parses but cannot be used as it is: ambiguous or nested too deep."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are unique: a repeated key makes the answer ambiguous."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise AnswerRefused(
                    f"response is ambiguous: key {clip(repr(valid_text(key)), 60)} "
                    "appears twice in one object"
                )
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(
    parse_float=_number, parse_constant=Decimal, object_pairs_hook=_unique_keys
)


def _loads(body: bytes) -> Any:
    """`json.loads(body, parse_float=Decimal)`, faster, and only what riskmon can use:
    unique keys, at most MAX_DEPTH levels, text that is valid Unicode."""
    try:
        value = _FAST_DECODER.decode(body)
    except msgspec.DecodeError:
        return _careful_loads(body)
    except RecursionError:
        raise AnswerRefused(_too_deep()) from None
    # msgspec keeps the last of repeated keys silently. Every key is followed by one
    # colon, so when the body holds no more colons than the decoded objects have keys, no
    # key was dropped. More colons (in text: times, URLs) are counted again, only those
    # right after a quote or a blank, as a key's is; still more (repeated keys, or such
    # text) and the careful path decides. msgspec never returns a lone surrogate; its
    # objects need the depth check.
    kind = type(value)
    if kind is dict or kind is list:
        keys = _keys_in(value, 0)
        if keys != body.count(b":") and keys != _colons_after_quotes_or_blanks(body):
            return _careful_loads(body)
    return value


def _colons_after_quotes_or_blanks(body: bytes) -> int:
    """At least the number of keys in UTF-8 JSON: a key's colon follows its closing
    quote, or the last of the JSON blanks (space, tab, line feed, return) after it."""
    return (
        body.count(b'":')
        + body.count(b" :")
        + body.count(b"\n:")
        + body.count(b"\t:")
        + body.count(b"\r:")
    )


def _careful_loads(body: bytes) -> Any:
    """The standard library's decoding, repeated keys refused, lone surrogates and bytes
    that are not text in the body's encoding replaced by U+FFFD."""
    text = body.decode(json.detect_encoding(body), "replace")
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise AnswerRefused(_too_deep()) from None
    return _valid(value, 0)


def _too_deep() -> str:
    return f"response nests objects or lists more than {MAX_DEPTH} levels deep"


def _keys_in(node: Any, depth: int) -> int:
    """How many keys the objects in `node` (an object or list) have; AnswerRefused when
    it nests too deep. Once per poll: two functions, so each type is tested once."""
    if depth >= MAX_DEPTH:
        raise AnswerRefused(_too_deep())
    if type(node) is not dict:
        return _keys_in_list(node, depth)
    count = len(node)
    for value in node.values():
        kind = type(value)
        if kind is dict or kind is list:
            count += _keys_in(value, depth + 1)
    return count


def _keys_in_list(node: list[Any], depth: int) -> int:
    count = 0
    for value in node:
        kind = type(value)
        if kind is dict or kind is list:
            count += _keys_in(value, depth + 1)
    return count


def valid_text(text: str) -> str:
    """`text` with each lone surrogate (which no encoding can write) replaced by U+FFFD."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _valid(node: Any, depth: int) -> Any:
    """`node` with valid text throughout (keys too); AnswerRefused when too deep."""
    kind = type(node)
    if kind is str:
        return valid_text(node)
    if kind is dict:
        if depth >= MAX_DEPTH:
            raise AnswerRefused(_too_deep())
        valid = {valid_text(k): _valid(v, depth + 1) for k, v in node.items()}
        if len(valid) != len(node):  # "\ud800" and "\udc00" are both "\ufffd" now
            raise AnswerRefused("response is ambiguous: two keys differ only in invalid text")
        return valid
    if kind is list:
        if depth >= MAX_DEPTH:
            raise AnswerRefused(_too_deep())
        return [_valid(v, depth + 1) for v in node]
    return node


def decode_json(response: HttpResponse) -> Any:
    """The JSON body, numbers as exact Decimals; SnapshotParseError if it is not JSON,
    repeats a key in an object or nests more than MAX_DEPTH levels."""
    try:
        return _loads(response.body)
    except (ValueError, RecursionError) as exc:
        size = len(response.body)
        if isinstance(exc, AnswerRefused):
            message = str(exc)
        else:
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            message = f"response is not valid JSON ({reason}; {size} bytes, possibly truncated)"
        raise SnapshotParseError(
            message,
            status=response.status,
            request_id=response.headers.get("x-request-id"),
        ) from None


def try_decode_json(response: HttpResponse) -> Any:
    """The JSON body of an error answer, or None: error bodies are a courtesy."""
    try:
        return _loads(response.body)
    except (ValueError, RecursionError):
        return None


def clip(text: object, limit: int = 200) -> str:
    """A venue-supplied message, made safe to log: one line, bounded length."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def error_for_status(
    response: HttpResponse,
    what: str,
    *,
    retryable: Callable[[int], bool],
    request_id: str | None = None,
) -> VenueError:
    """The named error for a non-200 answer; `retryable` is the venue's retry policy."""
    status = response.status
    context: dict[str, Any] = {"status": status, "request_id": request_id}
    if status in (401, 403):
        return VenueAuthError(what, **context)
    if status == 404:
        return AccountNotFound(what, **context)
    if status == 429:
        return VenueRateLimited(what, retry_after=retry_after_seconds(response.headers), **context)
    if status == 408 or status >= 500:
        return VenueUnavailable(
            what,
            retry_after=retry_after_seconds(response.headers),
            retryable=retryable(status),
            **context,
        )
    return VenueRequestError(what, retryable=retryable(status), **context)
