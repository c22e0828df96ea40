"""What a template may spend while it renders: steps, time, and the size of each value.

Every render runs under a budget (`with RenderBudget():`): each attribute or item lookup,
call, operator, filter and loop iteration is one step, and a render that takes more than
`MAX_STEPS` steps or `RENDER_SECONDS` of CPU time stops with `BoundExceeded`. Values are
held to `MAX_VALUE_CHARS` characters or items and integers to `MAX_INT_BITS` bits,
checked before an operation that could build a larger one (`*`, `+`, `replace`, `join`,
format widths, methods of a value already too large) and after every call. One
operation on bounded values is itself bounded, so together these bound a render in time
and memory; `monitor.engine.template_check` refuses at load what would only fail here.
"""

from __future__ import annotations

import contextvars
import decimal
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from decimal import Decimal
from functools import wraps
from typing import Any, Final, TypeGuard

from jinja2.exceptions import SecurityError

from monitor.engine.decimal_text import decimal_text
from monitor.engine.expr import CONTEXT

__all__ = [
    "LOOP_FILTER",
    "MAX_INT_BITS",
    "MAX_LOOP_ITEMS",
    "MAX_STEPS",
    "MAX_VALUE_CHARS",
    "MAX_WIDTH",
    "RENDER_SECONDS",
    "TEXT_FILTER",
    "BoundExceeded",
    "RenderBudget",
    "bounded_filters",
    "bounded_range",
    "check_binop",
    "check_call",
    "check_call_result",
    "check_format",
    "tick",
]

MAX_STEPS: Final = 100_000
#: CPU time of the rendering thread (time the thread waits for a core does not count,
#: so a busy machine does not fail a short template).
RENDER_SECONDS: Final = 0.1
#: Longest text, list or map a template may build.
MAX_VALUE_CHARS: Final = 16_384
MAX_INT_BITS: Final = 4096
#: Most items one loop (or `range`) may go over.
MAX_LOOP_ITEMS: Final = 1000
#: Largest width or precision in a format (`%10s`, `{:>10}`).
MAX_WIDTH: Final = 1000
#: Largest |exponent| of a Decimal given to a format (`{:f}` writes every digit) or to
#: `int` (which builds every digit).
_MAX_NUMBER_DIGITS: Final = 1000

#: Internal filters `template_check` wraps around loops' iterables and `~` results.
LOOP_FILTER: Final = "riskmon_bounded_loop"
TEXT_FILTER: Final = "riskmon_bounded_text"

#: Filters left out: widths and counts that build large values from small ones
#: (`center(10**9)`, `batch`, `indent`, `wordwrap`), or of no use in an alert.
_DROPPED_FILTERS: Final = frozenset(
    {"batch", "center", "indent", "slice", "wordwrap", "urlize", "pprint", "xmlattr", "tojson"}
)


class BoundExceeded(SecurityError):
    """A template went past one of the bounds above."""


class _Budget:
    __slots__ = ("deadline", "steps")

    def __init__(self) -> None:
        self.steps = MAX_STEPS
        self.deadline = time.thread_time() + RENDER_SECONDS


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "riskmon_template_budget", default=None
)


class RenderBudget:
    """`with RenderBudget():` one render's budget, in the rules' decimal context (set and
    restored directly, as compiled expressions do: cheaper than `decimal.localcontext`)."""

    __slots__ = ("_saved", "_token")

    def __enter__(self) -> None:
        self._token = _budget.set(_Budget())
        self._saved = decimal.getcontext()
        decimal.setcontext(CONTEXT)

    def __exit__(self, *exc: object) -> None:
        decimal.setcontext(self._saved)
        _budget.reset(self._token)


def tick() -> None:
    """One step of the render; BoundExceeded once the budget is spent (and after)."""
    budget = _budget.get()
    if budget is None:
        return
    budget.steps -= 1
    if budget.steps < 0:
        raise BoundExceeded(f"template took more than {MAX_STEPS} steps")
    if time.thread_time() > budget.deadline:
        budget.steps = -1  # stays spent
        raise BoundExceeded(f"template took more than {RENDER_SECONDS:g}s of CPU time")


# ------------------------------------------------------------------------- values


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_container(value: Any) -> TypeGuard[Sized]:
    return isinstance(value, str | list | tuple | dict | set | frozenset)


def _check_size(value: Any) -> Any:
    if _is_container(value):
        if len(value) > MAX_VALUE_CHARS:
            raise BoundExceeded(f"a value of more than {MAX_VALUE_CHARS} characters or items")
    elif _is_int(value) and value.bit_length() > MAX_INT_BITS:
        raise BoundExceeded(f"an integer of more than {MAX_INT_BITS} bits")
    return value


def check_call(function: Any) -> None:
    """BoundExceeded before a method of a value past the size bounds is called: a venue's
    1 MiB string split into half a million words is not built."""
    owner = getattr(function, "__self__", None)
    if _is_container(owner) and len(owner) > MAX_VALUE_CHARS:
        raise BoundExceeded(
            f"calling a method of a value of more than {MAX_VALUE_CHARS} characters or items"
        )


def check_call_result(value: Any) -> Any:
    """`value` if it is within the size bounds, else BoundExceeded."""
    return _check_size(value)


def _exponent(value: Decimal) -> int:
    """|adjusted exponent|: how many digits fixed-point text of `value` writes, about."""
    return abs(value.adjusted()) if value.is_finite() else 0


def _sized(value: Any) -> bool:
    return isinstance(value, str | list | tuple)


def check_binop(op: str, left: Any, right: Any) -> None:
    """BoundExceeded before an operator would build a value past the bounds."""
    if op == "*":
        for seq, count in ((left, right), (right, left)):
            if _sized(seq) and _is_int(count) and len(seq) * count > MAX_VALUE_CHARS:
                raise BoundExceeded(f"repeating {len(seq)} characters or items {count} times")
        ints = _is_int(left) and _is_int(right)
        if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise BoundExceeded(f"a product of more than {MAX_INT_BITS} bits")
    elif op == "+":
        if _sized(left) and _sized(right) and len(left) + len(right) > MAX_VALUE_CHARS:
            raise BoundExceeded(f"a value of more than {MAX_VALUE_CHARS} characters or items")
    elif op == "**":
        big = _is_int(left) and _is_int(right) and max(left.bit_length(), 1) * right > MAX_INT_BITS
        if big:
            raise BoundExceeded(f"a power of more than {MAX_INT_BITS} bits")
    elif op == "%" and isinstance(left, str):
        check_format(left, right if isinstance(right, tuple) else (right,), percent=True)


# ------------------------------------------------------------------------- formats

_PERCENT_SPEC: Final = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_SPEC_NUMBER: Final = re.compile(r"\d+")
_FORMATTER: Final = string.Formatter()


def check_format(text: str, args: Iterable[Any], *, percent: bool) -> None:
    """BoundExceeded for a format (`%`-style or `{}`-style) whose output could be
    large: a width or precision over MAX_WIDTH, one read from the arguments, or a
    number whose digits would all be written (`{:f}` of 1E+999999999)."""
    if percent:
        for match in _PERCENT_SPEC.finditer(text):
            for number in match.groups():
                _check_width(number)
    else:
        for _, _, spec, _ in _FORMATTER.parse(text):
            if spec and "{" in spec:
                raise BoundExceeded("a format width taken from an argument")
            for number in _SPEC_NUMBER.findall(spec or ""):
                _check_width(number)
    for arg in args:
        values = arg.values() if isinstance(arg, Mapping) else (arg,)
        for value in values:
            _check_format_arg(value)


def _check_width(number: str | None) -> None:
    if number == "*":
        raise BoundExceeded("a format width taken from an argument")
    if number is not None and (len(number) > 6 or int(number) > MAX_WIDTH):
        raise BoundExceeded(f"a format width or precision over {MAX_WIDTH}")


def _check_format_arg(value: Any) -> None:
    if isinstance(value, Decimal) and _exponent(value) > _MAX_NUMBER_DIGITS:
        raise BoundExceeded(f"formatting {decimal_text(value)} would write too many digits")
    _check_size(value)


# ------------------------------------------------------------------------- filters


def bounded_range(*args: int) -> range:
    """`range` of at most MAX_LOOP_ITEMS numbers."""
    rng = range(*args)
    try:
        size = len(rng)
    except OverflowError:
        size = MAX_LOOP_ITEMS + 1
    if size > MAX_LOOP_ITEMS:
        raise BoundExceeded(f"range of more than {MAX_LOOP_ITEMS} numbers")
    return rng


def _bounded_loop(iterable: Any) -> Iterator[Any]:
    for count, item in enumerate(iterable, 1):
        if count > MAX_LOOP_ITEMS:
            raise BoundExceeded(f"a loop over more than {MAX_LOOP_ITEMS} items")
        tick()
        yield item


def _bounded_text(value: Any) -> Any:
    return _check_size(value)


def _int(value: Any, default: int = 0, base: int = 10) -> int:
    """Jinja's `int` without building a billion-digit integer from 1E+999999999."""
    if isinstance(value, Decimal) and value.is_finite() and value.adjusted() > _MAX_NUMBER_DIGITS:
        raise BoundExceeded(f"{decimal_text(value)} is too large for int")
    if isinstance(value, str) and len(value) > _MAX_NUMBER_DIGITS:
        raise BoundExceeded("text too long for int")
    try:
        if isinstance(value, str):
            return int(value, base)
        return int(value)
    except (TypeError, ValueError, OverflowError, decimal.InvalidOperation):
        try:
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            return default


def _string(value: Any) -> str:
    return decimal_text(value) if isinstance(value, Decimal) else str(value)


def _check_replace(value: Any, old: Any, new: Any, count: Any = None) -> None:
    if isinstance(value, str) and isinstance(old, str) and isinstance(new, str):
        hits = value.count(old) if old else len(value) + 1
        if _is_int(count) and count >= 0:
            hits = min(hits, count)
        if len(value) + hits * max(len(new) - len(old), 0) > MAX_VALUE_CHARS:
            raise BoundExceeded(f"replace would build more than {MAX_VALUE_CHARS} characters")


def _bounded(name: str, filter_: Callable[..., Any]) -> Callable[..., Any]:
    """`filter_` counted as a step, its arguments checked where they set a size, its
    result held to the size bounds."""
    takes_context = getattr(filter_, "jinja_pass_arg", None) is not None

    @wraps(filter_)
    def run(*args: Any, **kwargs: Any) -> Any:
        tick()
        own = args[1:] if takes_context else args  # the value, then the filter's arguments
        if name == "format" and own and isinstance(own[0], str):
            check_format(own[0], (*own[1:], kwargs), percent=True)
        elif name == "replace" and len(own) >= 3:
            _check_replace(*own[:4])
        elif name == "join" and own:
            items = list(own[0]) if not isinstance(own[0], str) else own[0]
            if len(items) > MAX_VALUE_CHARS:
                raise BoundExceeded(f"joining more than {MAX_VALUE_CHARS} items")
            joined = sum(len(x) for x in items if isinstance(x, str))
            sep = own[1] if len(own) > 1 else kwargs.get("d", "")
            if joined + len(items) * len(str(sep)) > MAX_VALUE_CHARS:
                raise BoundExceeded(f"join would build more than {MAX_VALUE_CHARS} characters")
            args = (*args[: len(args) - len(own)], items, *own[1:])
        return _check_size(filter_(*args, **kwargs))

    return run


def bounded_filters(filters: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Jinja's filters, bounded (those that cannot be are left out), plus the internal
    loop and text filters."""
    replaced: dict[str, Callable[..., Any]] = {"int": _int, "string": _string}
    result = {
        name: _bounded(name, replaced.get(name, filter_))
        for name, filter_ in filters.items()
        if name not in _DROPPED_FILTERS
    }
    result[LOOP_FILTER] = _bounded_loop
    result[TEXT_FILTER] = _bounded_text
    return result
