"""The demo's screen: event lines scroll by; the accounts table stays readable.

On a terminal the table sits under the events and is redrawn in place. Elsewhere (a
pipe, a CI log) a table is printed only when an account's state changes (at most every
`min_gap` seconds) or every `reprint_every` seconds, so the output reads as a log.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Hashable, Sequence
from typing import TextIO

_UP_AND_CLEAR = "\x1b[{n}F\x1b[J"  # cursor up n lines to column 1, clear to the end


class Console:
    def __init__(
        self,
        out: TextIO,
        *,
        live: bool,
        reprint_every: float = 30.0,
        min_gap: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.live = live
        self.reprint_every = reprint_every
        self.min_gap = min_gap
        self.clock = clock
        self._table: list[str] = []  # as drawn (live) or last printed
        self._drawn = 0  # lines of the live table on screen now
        self._state: Hashable = None
        self._printed_at: float | None = None

    def write(self, lines: Sequence[str]) -> None:
        """Lines that stay: the header, alert events."""
        self._erase()
        self.out.write("".join(f"{line}\n" for line in lines))
        self._draw()
        self.out.flush()

    def show_table(self, lines: Sequence[str], state: Hashable) -> None:
        """The accounts table now; `state` is what makes it worth printing again when
        not live (the numbers move on every poll, the states do not)."""
        if self.live:
            self._erase()
            self._table = list(lines)
            self._draw()
            self.out.flush()
            return
        now = self.clock()
        since = None if self._printed_at is None else now - self._printed_at
        if since is not None:
            wanted = since >= self.reprint_every or (state != self._state and since >= self.min_gap)
            if not wanted:
                return
        self._state = state
        self._printed_at = now
        self.out.write("".join(f"{line}\n" for line in lines))
        self.out.flush()

    def close(self) -> None:
        """Leave the last table on screen and the cursor under it."""
        self._drawn = 0
        self.out.flush()

    def _erase(self) -> None:
        if self._drawn:
            self.out.write(_UP_AND_CLEAR.format(n=self._drawn))
            self._drawn = 0

    def _draw(self) -> None:
        if self.live and self._table:
            self.out.write("".join(f"{line}\n" for line in self._table))
            # a line wider than the terminal wraps onto more rows, all of them to erase
            width = max(shutil.get_terminal_size().columns, 1)
            self._drawn = sum(max(1, -(-len(line) // width)) for line in self._table)
