"""Exponential back-off with jitter: the waits between reconnects and retries."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]

_MAX_EXPONENT = 60  # 2**60 times any initial is past any max: no overflow beyond it


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits doubling from `initial` seconds up to `max`, each jittered down to half of
    itself (so clients that failed together do not come back together)."""

    initial: float
    max: float

    def __post_init__(self) -> None:
        if self.initial < 0 or self.max < self.initial:
            raise ValueError("a back-off needs 0 <= initial <= max")

    def ceiling(self, failures: int) -> float:
        """The longest wait after `failures` failures in a row before this one (0: the
        first failure waits up to `initial`)."""
        return min(self.max, self.initial * 2.0 ** min(max(0, failures), _MAX_EXPONENT))

    def delay(self, failures: int) -> float:
        """A wait between half the ceiling and the ceiling."""
        return self.ceiling(failures) * random.uniform(0.5, 1.0)
