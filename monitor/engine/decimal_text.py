"""Decimals as text whose length and cost are bounded, whatever the exponent.

`format(Decimal("-1E+999999999"), "f")` writes a billion zeros (2 GB, seconds of CPU);
`decimal_text` writes fixed-point text only while it stays short and switches to
scientific notation past that, so its output is never longer than the digits the
value holds plus a few characters.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

__all__ = ["MAX_FIXED_DIGITS", "decimal_text"]

#: Fixed-point text while |adjusted exponent| is below this (`1E+63` is 64 digits);
#: scientific notation past it (`1E+64`, `1.5E-70`).
MAX_FIXED_DIGITS: Final = 64


def decimal_text(value: Decimal) -> str:
    """`24000.00` as written (never `2.4E+4`) or, for a value whose fixed-point text
    would run past MAX_FIXED_DIGITS digits of magnitude, `-1E+999999999`; `NaN` and
    `Infinity` as such. Never longer than MAX_FIXED_DIGITS plus the value's own digits."""
    if value.is_finite() and -MAX_FIXED_DIGITS < value.adjusted() < MAX_FIXED_DIGITS:
        return format(value, "f")
    return format(value, "E") if value.is_finite() else str(value)
