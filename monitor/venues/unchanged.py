"""Each account's last parsed answer, taken again when the next answer is the same.

Between two polls a second apart many accounts' balances do not move (idle or cash-only
accounts, any account outside market hours). Parsing such an answer into snapshot fields
(`flatten`: a Decimal and a range check per field, 20 us for a Clear Street balance)
is the same work with the same result; a digest of the decoded answer (2 us) tells
whether it is. An answer that changed costs the digest more than before.

The digest is of the answer re-encoded by msgspec with numbers as numbers, so two answers
share one only if they decode to equal values, key order included: the one pair that
encodes alike without decoding alike, an integer `5` and a `5e0` (Decimal 5), parses to
the same field value. BLAKE2b of 128 bits: no two different answers share one in practice,
and it cannot be chosen by the venue to match a stored one (the stored digests are not
sent anywhere). An answer msgspec cannot encode (a NaN, which the parse refuses) is parsed
every time.
"""

from __future__ import annotations

from collections.abc import Callable
from hashlib import blake2b
from typing import Any

import msgspec

_ENCODER = msgspec.json.Encoder(decimal_format="number")

#: accounts remembered; past it the table starts again (accounts discovered away)
ACCOUNTS_HELD = 100_000


def answer_digest(data: Any) -> bytes | None:
    """16 bytes that equal answers share, or None for an answer msgspec cannot encode."""
    try:
        encoded = _ENCODER.encode(data)
    except (msgspec.EncodeError, TypeError, ValueError, OverflowError):
        return None
    return blake2b(encoded, digest_size=16).digest()


class ParsedAnswers:
    """The fields parsed from each account's last answer, by the answer's digest.

    The fields are shared by the snapshots of equal answers: like every Snapshot's, they
    must not change once made. A parse that fails is not remembered."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, tuple[bytes, dict[str, Any]]] = {}

    def fields(
        self,
        account_id: str,
        data: dict[str, Any],
        parse: Callable[[dict[str, Any], str], dict[str, Any]],
    ) -> dict[str, Any]:
        """`parse(data, account_id)`, or its result for the account's last answer when
        `data` equals it."""
        digest = answer_digest(data)
        if digest is None:
            self._last.pop(account_id, None)
            return parse(data, account_id)
        last = self._last.get(account_id)
        if last is not None and last[0] == digest:
            return last[1]
        self._last.pop(account_id, None)  # the old answer's fields, even if this one fails
        fields = parse(data, account_id)
        if len(self._last) >= ACCOUNTS_HELD:
            self._last.clear()
        self._last[account_id] = (digest, fields)
        return fields

    def __len__(self) -> int:
        return len(self._last)
