"""Decimals as text whose length and cost are bounded, whatever the exponent.

`format(Decimal("-1E+999999999"), "f")` writes a billion zeros (2 GB, seconds of CPU);
`decimal_text` writes fixed-point text only while it stays short and switches to
scientific notation past that, so its output is never longer than the digits the
value holds plus a few characters.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

__all__ = ["MAX_FIXED_CHARS", "decimal_text"]

#: Longest fixed-point text; a value that would need more is written as `1.5E+40`.
MAX_FIXED_CHARS: Final = 64


def decimal_text(value: Decimal) -> str:
    """`24000.00` as written (never `2.4E+4`), or `-1E+999999999` when fixed-point
    text would be longer than MAX_FIXED_CHARS; `NaN`/`Infinity` as such."""
    if not value.is_finite():
        return str(value)
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite values have an integer exponent
    fixed_chars = sign + max(len(digits) + exponent, 1) + (1 - exponent if exponent < 0 else 0)
    if fixed_chars <= MAX_FIXED_CHARS:
        return format(value, "f")
    return format(value, "E")
