"""Splitting accounts between replicas with rendezvous (highest-random-weight) hashing.

Each (venue, account) goes to the shard with the highest hash score, so N replicas
split the accounts with no coordination, and going from N to N+1 shards moves only
about 1/(N+1) of them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True, slots=True)
class Shard:
    index: int  # K, counted from 0
    count: int  # N

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`K/N` with 0 <= K < N, as given by --shard or RISKMON_SHARD."""
        match = _SPEC.fullmatch(text)
        if not match:
            raise ValueError(f"invalid shard {text!r}: expected K/N, e.g. 0/3")
        index, count = int(match[1]), int(match[2])
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"invalid shard {text!r}: K must be from 0 to N-1 and N at least 1")
        return cls(index, count)

    def owns(self, venue: str, account: str) -> bool:
        return self.count == 1 or shard_of(venue, account, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(venue: str, account: str, count: int) -> int:
    """The shard, of `count`, that (venue, account) belongs to."""
    key = f"{venue}\x00{account}".encode()
    best, best_score = 0, -1
    for shard in range(count):
        digest = hashlib.blake2b(key, digest_size=8, person=shard.to_bytes(16, "big")).digest()
        score = int.from_bytes(digest, "big")
        if score > best_score:
            best, best_score = shard, score
    return best
