"""What a journal record's digest covers, so that anyone can check the chain.

A record is (seq, at, kind, payload, prev): its place (1, 2, 3 ... with no gap), when it
happened (RFC 3339 UTC with milliseconds), what it is (`event`, `silence`, `reload`,
`gap`), its payload (a JSON object, stored as its canonical text: keys sorted, no
blanks, ASCII with \\u escapes) and the digest of the record before it (64 zeros for
the first record ever). Its digest is the SHA-256, in hex, of the UTF-8 bytes of

    [seq,"at","kind",PAYLOAD,"prev"]

with PAYLOAD the stored payload text as it is: the JSON array of the five, written
without blanks. Python: `json.dumps([seq, at, kind, json.loads(payload), prev],
sort_keys=True, separators=(",", ":"))` gives the same text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["GENESIS", "canonical", "record_digest"]

#: The `prev` of the first record ever written.
GENESIS: Final = "0" * 64


def canonical(payload: Mapping[str, Any]) -> str:
    """The stored text of a payload: keys sorted, no blanks, ASCII."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def record_digest(seq: int, at: str, kind: str, payload: str, prev: str) -> str:
    """The digest of a record whose payload is stored as the text `payload`."""
    text = f"[{seq},{json.dumps(at)},{json.dumps(kind)},{payload},{json.dumps(prev)}]"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
