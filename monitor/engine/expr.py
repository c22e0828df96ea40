"""The safe expression language of riskmon rules.

An expression is a small subset of Python expression syntax. It is parsed with
`ast.parse(text, mode="eval")`, checked against an allow-list, converted to a tiny tree
of its own and compiled ONCE into generated Python code; user text is never `eval`ed.
`compile_rules` generates one function for a whole rule set that reads every snapshot
field once and computes params-only arithmetic (`params.floor * 1.05`) once per
`prepare`. When every field and param used as a number is a Decimal (the usual case) it
evaluates all rules as one list of plain Python over Decimals, arithmetic that rules
share computed once; anything else falls back to a per-rule function with the full
semantics. A typical rule then costs about 115-130 ns (bench/rule_eval.py: 20 rules x
10,000 snapshots in 23-26 ms on a slow 2-core VM; the Decimal operations themselves are
more than half of that).

Allowed
    - literals: numbers (always exact `Decimal`: `0.1` is `Decimal("0.1")`; at most 50
      digits, exponent at most 1000; a rule's numeric `params` too), strings (at most
      1000 characters), `True`, `False`, `None`
    - field paths: dotted names, never attribute access: `buying_power`,
      `margin_details.usage.used`, `securities.AAPL.market_value`; plus `venue`,
      `venue_kind`, `account`, `currency`, `labels.<name>` and `params.<name>`
    - `and`, `or`, `not`; comparisons `== != < <= > >=` (chained: `a < b < c`);
      `in` / `not in` (right side: a string, map, list or a literal `(..)`/`[..]`/`{..}`)
    - `+ - * / %`, unary `-` and `+`, parentheses, `x if cond else y`
    - functions: `abs(x)`, `min(a, b, ...)`, `max(a, b, ...)`, `round(x)`,
      `round(x, n)`, `len(x)`, `present(path)`, `coalesce(a, b, ...)`,
      `sum_of(path, "key")`, `max_of(path, "key")`, `min_of(path, "key")`

Everything else is refused at load time with a `SourceError` whose location points at
the offending node: names with double underscores, attribute calls, other functions,
lambdas, comprehensions, f-strings, `:=`, subscripts (use dotted paths or the `*_of`
functions), `*args`, keyword arguments, `**` (a power can take unbounded time and
memory), `//`, bit operators, `is`, bytes, over-long literals, and expressions longer
than 2000 characters or nested more than 50 levels (each further operand of `and`/`or`,
of a comparison chain and of `coalesce` counts as one more level).

Semantics
    - Numbers are `Decimal`, computed in `CONTEXT` (34 significant digits, half-even
      rounding; invalid operations, division by zero and overflow raise). Comparisons
      are exact. `%` follows `Decimal`: the remainder has the sign of the dividend;
      `x % 0` is a division by zero like `x / 0`.
      Ints and floats found in snapshots or params count as the `Decimal` of their
      text (`0.9` -> `Decimal("0.9")`); pass Decimals for the fast path.
    - Booleans are not numbers: `True + 1`, `True < 2` and `True == 1` are errors.
    - Comparing values of different kinds (string with number, ...) is an error, even
      with `==`; `None` compares equal only to `None`. Strings order lexicographically.
    - `x in y`: substring for strings, key for maps, element for lists and literal
      lists; an element of another kind than `x` simply does not match.
    - A field that is absent is `MISSING`, and so is everything computed from it:
      arithmetic, comparisons, `not`, function calls. `present(path)` is True iff the
      field exists; `coalesce(a, b, ...)` returns the first argument that is not
      MISSING (or MISSING). Snapshot nulls are absent; a literal `None` is a value.
    - `and`/`or` use three-valued logic and need booleans: `False and MISSING` is
      False, `True or MISSING` is True, `True and MISSING` is MISSING. Operands are
      evaluated left to right; `and` stops at the first False, `or` at the first True,
      and an error in an operand that is reached is the result.
    - `x if c else y`: `c` must be a boolean; a MISSING condition gives MISSING.
    - `round` rounds half-even like Python's `round` and returns a Decimal;
      `round(x, n)` needs a whole number `n` (|n| <= 1000).
    - `min`/`max` need at least two numbers; `len` counts a string, list or map.
    - `sum_of/max_of/min_of(path, "key")` walk the values of a map or the elements of a
      list and take each element's `key` (a dotted key digs into nested maps);
      elements without it are skipped. `sum_of` of nothing is 0; `max_of`/`min_of`
      of nothing is MISSING.
    - `venue`, `venue_kind`, `account` and `currency` are the snapshot's identity (set
      by the config), not venue data; only when the snapshot has no currency does
      `currency` read a venue field of that name. `labels.x` reads the snapshot's
      labels and `params.x` the rule's params given to `evaluate` (never venue data).
    - An expression whose value is a whole map or list is an error.
    - Evaluation never raises: a failure (division by zero, a string compared with a
      number, a decimal overflow, a bad argument) gives an `EvalError` value, which
      the caller counts in `riskmon_rule_evaluation_failures_total` and treats as
      missing. `MISSING` and `EvalError` are both falsy; test for them with
      `result is MISSING` and `isinstance(result, EvalError)`.
"""

from __future__ import annotations

import ast
import decimal
import operator
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import repeat as _repeat
from typing import Any, Final, NewType

from monitor.schema import MAX_DIGITS, MAX_EXPONENT, number_problem
from monitor.snapshot import Snapshot
from monitor.yamlsource import Location, Problem, SourceError

__all__ = [
    "CONTEXT",
    "FUNCTIONS",
    "MISSING",
    "CompiledExpr",
    "CompiledRules",
    "EvalError",
    "Missing",
    "PreparedParams",
    "compile_expression",
    "compile_rules",
    "decimal_error_text",
    "guarded_paths",
    "number_problem",
    "param_uses",
]

MAX_SOURCE_CHARS: Final = 2000
MAX_DEPTH: Final = 50
MAX_STRING_CHARS: Final = 1000
MAX_ROUND_PLACES: Final = 1000

#: The decimal context every evaluation runs in.
CONTEXT: Final = decimal.Context(
    prec=34,
    rounding=decimal.ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    capitals=1,
    clamp=0,
    flags=[],
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)

#: Callable functions: name -> (least, most) number of arguments (None: no limit).
FUNCTIONS: Final[Mapping[str, tuple[int, int | None]]] = {
    "abs": (1, 1),
    "min": (2, None),
    "max": (2, None),
    "round": (1, 2),
    "len": (1, 1),
    "present": (1, 1),
    "coalesce": (1, None),
    "sum_of": (2, 2),
    "max_of": (2, 2),
    "min_of": (2, 2),
}
_AGGREGATES: Final = frozenset({"sum_of", "max_of", "min_of"})
_FUNCTION_LIST: Final = ", ".join(FUNCTIONS)
_IDENTITY: Final = ("venue", "venue_kind", "account")


class Missing:
    """The type of `MISSING`: the value of an absent field and all that follows from it."""

    __slots__ = ()
    _instance: Missing | None = None

    def __new__(cls) -> Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = Missing()


@dataclass(frozen=True, slots=True)
class EvalError:
    """The result of an evaluation that failed; `message` says why."""

    message: str

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return self.message


class _Fail(Exception):
    """Raised inside generated code; becomes an EvalError with its message."""


# --------------------------------------------------------------------------- the tree


@dataclass(frozen=True, slots=True)
class _Const:
    value: Decimal | str | bool | None


@dataclass(frozen=True, slots=True)
class _Field:
    path: str


@dataclass(frozen=True, slots=True)
class _Unary:
    op: str  # "-", "+", "not"
    operand: _Node


@dataclass(frozen=True, slots=True)
class _Binary:
    op: str  # "+", "-", "*", "/", "%"
    left: _Node
    right: _Node


@dataclass(frozen=True, slots=True)
class _Logic:
    op: str  # "and", "or"
    values: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Compare:
    left: _Node
    ops: tuple[str, ...]  # "==", "!=", "<", "<=", ">", ">=", "in", "not in"
    rights: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Seq:
    """A literal list/tuple/set: only as the right operand of `in` / `not in`."""

    items: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Cond:
    test: _Node
    body: _Node
    orelse: _Node


@dataclass(frozen=True, slots=True)
class _Call:
    name: str
    args: tuple[_Node, ...]


_Node = _Const | _Field | _Unary | _Binary | _Logic | _Compare | _Seq | _Cond | _Call


def _children(node: _Node) -> Iterable[_Node]:
    if isinstance(node, _Unary):
        return (node.operand,)
    if isinstance(node, _Binary):
        return (node.left, node.right)
    if isinstance(node, _Logic):
        return node.values
    if isinstance(node, _Seq):
        return node.items
    if isinstance(node, _Compare):
        return (node.left, *node.rights)
    if isinstance(node, _Cond):
        return (node.test, node.body, node.orelse)
    if isinstance(node, _Call):
        return node.args
    return ()


def _field_paths(node: _Node, out: set[str]) -> set[str]:
    if isinstance(node, _Field):
        out.add(node.path)
    for child in _children(node):
        _field_paths(child, out)
    return out


def _static_kind(node: _Node) -> str:
    if isinstance(node, _Const):
        value = node.value
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, Decimal):
            return "number"
        return "string" if isinstance(value, str) else "none"
    if isinstance(node, _Logic | _Compare) or (isinstance(node, _Unary) and node.op == "not"):
        return "bool"
    if isinstance(node, _Unary | _Binary):
        return "number"
    if isinstance(node, _Cond):
        body, orelse = _static_kind(node.body), _static_kind(node.orelse)
        return body if body == orelse else "any"
    if isinstance(node, _Call):
        if node.name == "present":
            return "bool"
        return "any" if node.name == "coalesce" else "number"
    return "any"


# --------------------------------------------------------------------------- checking

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BINOPS: Final[Mapping[type[ast.operator], str]] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Mod: "%",
}
_CMPOPS: Final[Mapping[type[ast.cmpop], str]] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}
_REFUSED: Final[Mapping[type[ast.AST], str]] = {
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed; use sum_of/max_of/min_of",
    ast.SetComp: "comprehensions are not allowed; use sum_of/max_of/min_of",
    ast.DictComp: "comprehensions are not allowed; use sum_of/max_of/min_of",
    ast.GeneratorExp: "generator expressions are not allowed; use sum_of/max_of/min_of",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.Starred: "starred expressions (*x) are not allowed",
    ast.Subscript: (
        "subscripts (x[...]) are not allowed; use a dotted path such as "
        "securities.AAPL.market_value, or sum_of/max_of/min_of over a collection"
    ),
    ast.Dict: "map literals are not allowed",
    ast.List: "lists are only allowed on the right of `in` / `not in`",
    ast.Tuple: "tuples are only allowed on the right of `in` / `not in`",
    ast.Set: "sets are only allowed on the right of `in` / `not in`",
    ast.Slice: "slices are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
}


def _is_dunder(name: str) -> bool:
    return name.startswith("__") or name.endswith("__")


class _Checker:
    """Turns a parsed expression into a checked `_Node` tree, collecting problems."""

    def __init__(self, text: str, where: Location | None, lead: int) -> None:
        self.text = text
        self.lines = _LINE_BREAK.split(text)
        self.where = where or Location("<expression>", 1, 1)
        self.lead = lead  # characters of leading blanks stripped before parsing
        self.problems: list[Problem] = []
        self.too_deep = False

    def location(self, lineno: int, char_col: int) -> Location:
        if lineno <= 1:
            return Location(self.where.file, self.where.line, self.where.col + self.lead + char_col)
        return Location(self.where.file, self.where.line + lineno - 1, char_col + 1)

    def node_location(self, node: ast.AST) -> Location:
        lineno: int = getattr(node, "lineno", 1)
        col_bytes: int = getattr(node, "col_offset", 0)
        line = self.lines[lineno - 1] if 0 < lineno <= len(self.lines) else ""
        char_col = len(line.encode("utf-8")[:col_bytes].decode("utf-8", "ignore"))
        return self.location(lineno, char_col)

    def refuse(self, node: ast.AST, message: str) -> None:
        self.problems.append(Problem(self.node_location(node), message))

    def convert(self, node: ast.AST, depth: int) -> _Node | None:
        if depth > MAX_DEPTH:
            if not self.too_deep:
                self.too_deep = True
                self.refuse(node, f"expression nested too deeply (more than {MAX_DEPTH} levels)")
            return None
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name | ast.Attribute):
            return self.path(node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node, depth)
        if isinstance(node, ast.BinOp):
            return self.binary(node, depth)
        if isinstance(node, ast.BoolOp):
            op = "and" if isinstance(node.op, ast.And) else "or"
            values = _all([self.convert(v, depth + 1 + i) for i, v in enumerate(node.values)])
            return None if values is None else _Logic(op, values)
        if isinstance(node, ast.Compare):
            return self.compare(node, depth)
        if isinstance(node, ast.IfExp):
            parts = _all([self.convert(n, depth + 1) for n in (node.test, node.body, node.orelse)])
            return None if parts is None else _Cond(*parts)
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        message = _REFUSED.get(type(node), f"{type(node).__name__} is not allowed")
        self.refuse(node, message)
        return None

    def constant(self, node: ast.Constant) -> _Node | None:
        value = node.value
        if isinstance(value, bool) or value is None:
            return _Const(value)
        if isinstance(value, str):
            if len(value) > MAX_STRING_CHARS:
                self.refuse(node, f"string literal longer than {MAX_STRING_CHARS} characters")
                return None
            return _Const(value)
        if isinstance(value, bytes):
            self.refuse(node, "bytes literals are not allowed")
            return None
        if isinstance(value, complex):
            self.refuse(node, "complex numbers are not allowed")
            return None
        if isinstance(value, int | float):
            segment = ast.get_source_segment(self.text, node) or repr(value)
            number, problem = _parse_number(segment)
            if number is None:
                self.refuse(node, problem)
                return None
            return _Const(number)
        self.refuse(node, f"the literal {type(value).__name__} is not allowed")
        return None

    def path(self, node: ast.Name | ast.Attribute) -> _Node | None:
        parts: list[str] = []
        current: ast.expr = node
        while isinstance(current, ast.Attribute):
            parts.append(current.attr)
            current = current.value
        dunders = [p for p in parts if _is_dunder(p)]
        if isinstance(current, ast.Name):
            parts.append(current.id)
            dunders += [current.id] if _is_dunder(current.id) else []
        if dunders:
            self.refuse(node, f"`{dunders[-1]}`: names with double underscores are not allowed")
            return None
        if not isinstance(current, ast.Name):
            self.refuse(
                node,
                "attribute access is only allowed in field paths such as margin_details.usage.used",
            )
            return None
        if len(parts) == 1 and parts[0] in FUNCTIONS:
            self.refuse(node, f"`{parts[0]}` is a function; call it as {parts[0]}(...)")
            return None
        return _Field(".".join(reversed(parts)))

    def unary(self, node: ast.UnaryOp, depth: int) -> _Node | None:
        if isinstance(node.op, ast.Invert):
            self.refuse(node, "bitwise operators (~) are not allowed")
            return None
        operand = self.convert(node.operand, depth + 1)
        if operand is None:
            return None
        if isinstance(node.op, ast.Not):
            return _Unary("not", operand)
        op = "-" if isinstance(node.op, ast.USub) else "+"
        if isinstance(operand, _Const) and isinstance(operand.value, Decimal):
            value = operand.value
            return _Const(value.copy_negate() if op == "-" else value)  # exact, no rounding
        return _Unary(op, operand)

    def binary(self, node: ast.BinOp, depth: int) -> _Node | None:
        op = _BINOPS.get(type(node.op))
        if op is None:
            if isinstance(node.op, ast.Pow):
                message = "** is not allowed: a power can take unbounded time and memory"
            elif isinstance(node.op, ast.FloorDiv):
                message = "// is not allowed; use round(a / b) or a / b"
            elif isinstance(node.op, ast.MatMult):
                message = "@ is not allowed"
            else:
                message = "bitwise operators (& | ^ << >>) are not allowed"
            self.refuse(node, message)
            return None
        left = self.convert(node.left, depth + 1)
        right = self.convert(node.right, depth + 1)
        if left is None or right is None:
            return None
        return _Binary(op, left, right)

    def compare(self, node: ast.Compare, depth: int) -> _Node | None:
        ops: list[str] = []
        ok = True
        for op in node.ops:
            name = _CMPOPS.get(type(op))
            if name is None:
                self.refuse(node, "`is` / `is not` are not allowed; use == or !=")
                ok = False
                name = "=="
            ops.append(name)
        left = self.convert(node.left, depth + 1)
        rights: list[_Node | None] = []
        last = len(node.comparators) - 1
        for i, (name, right) in enumerate(zip(ops, node.comparators, strict=True)):
            if isinstance(right, ast.List | ast.Tuple | ast.Set) and name in ("in", "not in"):
                if i != last:
                    self.refuse(right, "a list can only be the last operand of a comparison")
                    rights.append(None)
                    continue
                items = _all([self.convert(item, depth + 2 + i) for item in right.elts])
                rights.append(None if items is None else _Seq(items))
            else:
                rights.append(self.convert(right, depth + 1 + i))
        checked = _all(rights)
        if not ok or left is None or checked is None:
            return None
        return _Compare(left, tuple(ops), checked)

    def call(self, node: ast.Call, depth: int) -> _Node | None:
        func = node.func
        if not isinstance(func, ast.Name):
            if isinstance(func, ast.Attribute):
                message = (
                    f"calling methods (x.y(...)) is not allowed; the functions are {_FUNCTION_LIST}"
                )
            else:
                message = f"only these functions can be called: {_FUNCTION_LIST}"
            self.refuse(node, message)
            return None
        name = func.id
        if _is_dunder(name):
            self.refuse(node, f"`{name}`: names with double underscores are not allowed")
            return None
        if name not in FUNCTIONS:
            self.refuse(node, f"unknown function `{name}`; the functions are {_FUNCTION_LIST}")
            return None
        ok = True
        for keyword in node.keywords:
            what = "**kwargs" if keyword.arg is None else f"keyword argument `{keyword.arg}=`"
            self.refuse(keyword, f"{what} is not allowed: {name}() takes positional arguments")
            ok = False
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                self.refuse(arg, "starred arguments (*x) are not allowed")
                ok = False
        if not ok:
            return None
        least, most = FUNCTIONS[name]
        count = len(node.args)
        if count < least or (most is not None and count > most):
            self.refuse(node, _arity_message(name, least, most, count))
            return None
        if name == "present" or name in _AGGREGATES:
            first = node.args[0]
            if not isinstance(first, ast.Name | ast.Attribute):
                what = "a field path" if name == "present" else "the field path of a map or list"
                self.refuse(first, f"the first argument of {name}() must be {what}")
                return None
        if name in _AGGREGATES:
            key = node.args[1]
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                self.refuse(
                    key, f'the second argument of {name}() must be a string like "market_value"'
                )
                return None
        step = 1 if name == "coalesce" else 0
        args = _all([self.convert(arg, depth + 1 + step * i) for i, arg in enumerate(node.args)])
        return None if args is None else _Call(name, args)


def _all(nodes: Sequence[_Node | None]) -> tuple[_Node, ...] | None:
    """The nodes, or None if any of them was refused."""
    out = tuple(n for n in nodes if n is not None)
    return out if len(out) == len(nodes) else None


def _arity_message(name: str, least: int, most: int | None, count: int) -> str:
    if name in ("min", "max") and count < least:
        hint = f'{name}_of(collection, "field")'
        return f"{name}() needs at least two numbers; use {hint} for a collection"
    if most is None:
        wanted = f"at least {least} argument{'s' if least > 1 else ''}"
    elif least == most:
        wanted = f"{least} argument{'s' if least > 1 else ''}"
    else:
        wanted = f"{least} to {most} arguments"
    return f"{name}() takes {wanted}, got {count}"


def _parse_number(segment: str) -> tuple[Decimal | None, str]:
    """An exact Decimal from a numeric literal's source text, or None and why not."""
    text = segment.replace("_", "")
    lowered = text.lower()
    if lowered[:2] in ("0x", "0o", "0b"):
        if len(text) - 2 > MAX_DIGITS:
            return None, f"number literal longer than {MAX_DIGITS} digits"
        return Decimal(int(text, 0)), ""
    mantissa, _, exponent = lowered.partition("e")
    if sum(ch.isdigit() for ch in mantissa) > MAX_DIGITS:
        return None, f"number literal longer than {MAX_DIGITS} digits"
    digits = exponent.lstrip("+-").lstrip("0")
    if len(digits) > 6 or (digits and int(digits) > MAX_EXPONENT):
        return None, f"number literal with an exponent beyond ±{MAX_EXPONENT}"
    try:
        return Decimal(text), ""
    except decimal.InvalidOperation:  # pragma: no cover - the parser admits valid text only
        return None, f"invalid number literal {segment!r}"


def _syntax_error_place(text: str, exc: SyntaxError) -> tuple[int, int]:
    """The line (1-based) and character column (0-based) of a syntax error in `text`.

    When the text ends in the middle of an expression (`buying_power <`), Python 3.11
    gives offset 0 unless the text ends in a line break: the place is then the one
    Python gives for the text with a line break added, or else the end of the text.
    """
    if exc.offset or text.endswith(("\n", "\r")):
        return exc.lineno or 1, max((exc.offset or 1) - 1, 0)
    lines = _LINE_BREAK.split(text)
    end = (len(lines), len(lines[-1]))
    try:
        ast.parse(text + "\n", mode="eval")
    except SyntaxError as again:
        if again.offset and again.lineno:
            return min((again.lineno, again.offset - 1), end)
    except (ValueError, MemoryError, RecursionError):
        pass
    return end


def _check(text: str, where: Location | None) -> _Node:
    stripped = text.lstrip(" \t")
    lead = len(text) - len(stripped)
    checker = _Checker(stripped, where, lead)
    if len(text) > MAX_SOURCE_CHARS:
        raise SourceError(
            [
                Problem(
                    checker.location(1, 0), f"expression longer than {MAX_SOURCE_CHARS} characters"
                )
            ]
        )
    try:
        tree = ast.parse(stripped, mode="eval")
    except SyntaxError as exc:
        loc = checker.location(*_syntax_error_place(stripped, exc))
        raise SourceError([Problem(loc, f"invalid expression: {exc.msg}")]) from None
    except (ValueError, MemoryError, RecursionError) as exc:
        loc = checker.location(1, 0)
        raise SourceError([Problem(loc, f"invalid expression: {exc}")]) from None
    node = checker.convert(tree.body, 1)
    if checker.problems or node is None:
        raise SourceError(
            checker.problems or [Problem(checker.location(1, 0), "invalid expression")]
        )
    return node


# --------------------------------------------------------------------------- runtime


def _norm(x: Any) -> Any:
    """Numbers as Decimal; everything else unchanged."""
    kind = type(x)
    if kind is Decimal or kind is str or kind is bool or x is None or x is MISSING:
        return x
    if isinstance(x, bool):  # pragma: no cover - bool cannot be subclassed
        return bool(x)
    if isinstance(x, int):
        return Decimal(int(x))
    if isinstance(x, float):
        return Decimal(repr(x))
    if kind is EvalError:  # a params-only subtree that failed in `prepare`
        raise _Fail(x.message)
    return x


def _is_collection(x: Any) -> bool:
    return isinstance(x, Mapping | list | tuple)


def _kind(x: Any) -> str:
    if x is MISSING:
        return "missing"
    if x is None:
        return "none"
    if isinstance(x, bool):
        return "true/false"
    if isinstance(x, Decimal | int | float):
        return "number"
    if isinstance(x, str):
        return "string"
    if isinstance(x, Mapping):
        return "map"
    if isinstance(x, list | tuple):
        return "list"
    return type(x).__name__


def _rem(a: Decimal, b: Decimal) -> Decimal:
    if not b:
        raise _Fail("division by zero")
    return a % b


_ARITH: Final[Mapping[str, Callable[[Any, Any], Any]]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": _rem,
}
_ORDER: Final[Mapping[str, Callable[[Any, Any], Any]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _arith(op: str, a: Any, b: Any) -> Any:
    a, b = _norm(a), _norm(b)
    if a is MISSING or b is MISSING:
        return MISSING
    if type(a) is Decimal and type(b) is Decimal:
        return _ARITH[op](a, b)
    raise _Fail(f"cannot compute {_kind(a)} {op} {_kind(b)}: arithmetic needs numbers")


def _arith1(op: str, a: Any) -> Any:
    a = _norm(a)
    if a is MISSING:
        return MISSING
    if type(a) is Decimal:
        return -a if op == "-" else +a
    raise _Fail(f"cannot compute {op}{_kind(a)}: arithmetic needs numbers")


def _cmp(op: str, a: Any, b: Any) -> Any:
    a, b = _norm(a), _norm(b)
    if a is MISSING or b is MISSING:
        return MISSING
    kind = type(a)
    if kind is type(b) and (kind is Decimal or kind is str):
        return _ORDER[op](a, b)
    raise _Fail(f"cannot compare {_kind(a)} {op} {_kind(b)}")


def _eq(a: Any, b: Any) -> Any:
    a, b = _norm(a), _norm(b)
    if a is MISSING or b is MISSING:
        return MISSING
    if a is None or b is None:
        return a is b
    kind = type(a)
    if kind is type(b) and (kind is Decimal or kind is str or kind is bool):
        return a == b
    raise _Fail(f"cannot compare {_kind(a)} with {_kind(b)}")


def _ne(a: Any, b: Any) -> Any:
    result = _eq(a, b)
    return result if result is MISSING else not result


def _not(a: Any) -> Any:
    if a is True or a is False:
        return a is False
    if a is MISSING:
        return MISSING
    raise _Fail(f"`not` needs true or false, got {_kind(a)}")


def _and(acc: Any, a: Any) -> Any:
    if a is False:
        return False
    if a is MISSING:
        return MISSING
    if a is True:
        return acc
    raise _Fail(f"`and` needs true or false, got {_kind(a)}")


def _or(acc: Any, a: Any) -> Any:
    if a is True:
        return True
    if a is MISSING:
        return MISSING
    if a is False:
        return acc
    raise _Fail(f"`or` needs true or false, got {_kind(a)}")


def _and_all(*values: Any) -> Any:
    """`and` over values already computed, left to right (the fast path's fallback)."""
    return _logic_all(values, decisive=False, word="and")


def _or_all(*values: Any) -> Any:
    """`or` over values already computed, left to right (the fast path's fallback)."""
    return _logic_all(values, decisive=True, word="or")


def _logic_all(values: tuple[Any, ...], *, decisive: bool, word: str) -> Any:
    """Three-valued `and` (decisive False) or `or` (decisive True)."""
    missing = False
    for a in values:
        if a is decisive:
            return decisive
        if a is MISSING:
            missing = True
        elif a is not (not decisive):
            raise _Fail(f"`{word}` needs true or false, got {_kind(a)}")
    return MISSING if missing else not decisive


def _cond(a: Any) -> Any:
    if a is MISSING:
        return MISSING
    raise _Fail(f"the condition of `x if c else y` needs true or false, got {_kind(a)}")


def _scalar(a: Any, what: str) -> Any:
    a = _norm(a)
    if _is_collection(a):
        raise _Fail(f"{what} needs a single value, got a {_kind(a)}")
    return a


def _matches(a: Any, element: Any) -> bool:
    element = _norm(element)
    if a is None:
        return element is None
    return type(element) is type(a) and bool(element == a)


def _in_seq(a: Any, items: Iterable[Any]) -> Any:
    a = _scalar(a, "the left side of `in`")
    elements = [_norm(element) for element in items]  # surfaces a failed params subtree
    if a is MISSING:
        return MISSING
    missing = False
    for element in elements:
        if element is MISSING:
            missing = True
        elif _matches(a, element):
            return True
    return MISSING if missing else False


def _in_set(a: Any, choices: frozenset[Any]) -> Any:
    a = _scalar(a, "the left side of `in`")
    if a is MISSING:
        return MISSING
    if type(a) is Decimal or type(a) is str:
        return a in choices
    return False  # true/false and None never match the literal numbers or strings


def _in(a: Any, b: Any) -> Any:
    a, b = _scalar(a, "the left side of `in`"), _norm(b)
    if a is MISSING or b is MISSING:
        return MISSING
    if type(b) is str:
        if type(a) is str:
            return a in b
        raise _Fail(f"`in` a string needs a string on the left, got {_kind(a)}")
    if isinstance(b, Mapping):
        return a in b if type(a) is str else _in_seq(a, list(b.keys()))
    if isinstance(b, list | tuple):
        return _in_seq(a, b)
    raise _Fail(f"`in` needs a string, list or map on the right, got {_kind(b)}")


def _abs1(a: Any) -> Any:
    a = _norm(a)
    if a is MISSING:
        return MISSING
    if type(a) is Decimal:
        return abs(a)
    raise _Fail(f"abs() needs a number, got {_kind(a)}")


def _minmax(name: str, args: tuple[Any, ...]) -> Any:
    values = [_norm(a) for a in args]
    if any(v is MISSING for v in values):
        return MISSING
    for v in values:
        if type(v) is not Decimal:
            raise _Fail(f"{name}() needs numbers, got {_kind(v)}")
    return min(values) if name == "min" else max(values)


def _round(a: Any, n: Any = None) -> Any:
    a, n = _norm(a), _norm(n)
    if a is MISSING or n is MISSING:
        return MISSING
    if type(a) is not Decimal:
        raise _Fail(f"round() needs a number, got {_kind(a)}")
    places = 0
    if n is not None:
        if type(n) is not Decimal or not n.is_finite() or n != n.to_integral_value():
            raise _Fail(f"round(x, n) needs a whole number n, got {_kind(n)} {n}")
        if abs(n) > MAX_ROUND_PLACES:
            raise _Fail(f"round(x, n) needs |n| <= {MAX_ROUND_PLACES}")
        places = int(n)
    exponent = a.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -places:
        return a  # already has no more than `places` decimals
    return a.quantize(Decimal((0, (1,), -places)))


def _len(a: Any) -> Any:
    a = _norm(a)
    if a is MISSING:
        return MISSING
    if isinstance(a, str | Mapping | list | tuple):
        return Decimal(len(a))
    raise _Fail(f"len() needs a string, list or map, got {_kind(a)}")


def _dig(container: Any, path: str) -> Any:
    """A nested value by dotted path (the full key first), or MISSING."""
    if not isinstance(container, Mapping):
        return MISSING
    value = container.get(path, MISSING)
    if value is not MISSING or "." not in path:
        return value
    for part in path.split("."):
        if not isinstance(container, Mapping):
            return MISSING
        container = container.get(part, MISSING)
    return container


_DECIMAL_ONLY: Final = {Decimal}
_dict_get: Final = dict.get


def _agg(name: str, collection: Any, key: str) -> Any:
    kind = type(collection)
    if (kind is list or kind is dict) and "." not in key:
        # The usual: a venue's list (or map) of plain objects, each with a number at
        # `key`. Picked out and compared in C: the loop below took 5.5 us for 5 items
        # (a shipped rule's `max_of(margin_details.top_contributors, ...)`), more than
        # the 20 other rules together. Anything else takes the loop, which says why.
        items = collection if kind is list else collection.values()
        try:
            values: list[Any] = list(map(_dict_get, items, _repeat(key)))
        except TypeError:  # an item that is not a plain object
            return _agg_loop(name, collection, key)
        if set(map(type, values)) == _DECIMAL_ONLY:
            if name == "sum_of":
                return sum(values, Decimal(0))
            return max(values) if name == "max_of" else min(values)
    return _agg_loop(name, collection, key)


def _agg_loop(name: str, collection: Any, key: str) -> Any:
    """`_agg` item by item: any collection, dotted keys, skipped and refused items."""
    collection = _norm(collection)
    if collection is MISSING:
        return MISSING
    items: Iterable[Any]
    if isinstance(collection, Mapping):
        items = collection.values()
    elif isinstance(collection, list | tuple):
        items = collection
    else:
        raise _Fail(f"{name}() needs a map or a list, got {_kind(collection)}")
    total = Decimal(0)
    best: Decimal | None = None
    for item in items:
        value = _norm(_dig(item, key))
        if value is MISSING or value is None:
            continue
        if type(value) is not Decimal:
            raise _Fail(f'{name}(): "{key}" of an element is a {_kind(value)}, not a number')
        if name == "sum_of":
            total += value
        elif best is None or (value > best if name == "max_of" else value < best):
            best = value
    if name == "sum_of":
        return total
    return MISSING if best is None else best


def _finish(x: Any) -> Any:
    x = _norm(x)
    if _is_collection(x):
        raise _Fail(f"the expression's value is a whole {_kind(x)}, not a single value")
    kind = type(x)
    if kind is Decimal or kind is str or kind is bool or x is None or x is MISSING:
        return x
    raise _Fail(f"the expression's value has an unsupported type {kind.__name__}")


def decimal_error_text(exc: decimal.DecimalException) -> str:
    """What a decimal signal means, in words (templates say it the same way)."""
    signals = exc.args[0] if exc.args and isinstance(exc.args[0], list) else [type(exc)]
    names = {s.__name__ for s in signals if isinstance(s, type)} | {type(exc).__name__}
    if names & {"DivisionByZero", "DivisionUndefined"}:
        return "division by zero"
    if "DivisionImpossible" in names:
        return "quotient too large for 34 digits"
    if "Overflow" in names:
        return "number too large (decimal overflow)"
    return "invalid decimal operation (not a number, or a result longer than 34 digits)"


def _error(exc: BaseException) -> EvalError:
    """The EvalError for an exception raised while evaluating; never raises itself."""
    try:
        if isinstance(exc, _Fail):
            return EvalError(str(exc))
        if isinstance(exc, decimal.DecimalException):
            return EvalError(decimal_error_text(exc))
        return EvalError(f"{type(exc).__name__}: {exc}"[:300])
    except Exception:  # a hostile __str__, say
        return EvalError("evaluation failed")


# Everything generated code can reach: its globals, with no builtins at all.
_RUNTIME: Final[Mapping[str, Any]] = {
    "_M": MISSING,
    "_D": Decimal,
    "_S": str,
    "_B": bool,
    "_type": type,
    "_abs": abs,
    "_min": min,
    "_max": max,
    "_Exc": Exception,
    "_getctx": decimal.getcontext,
    "_setctx": decimal.setcontext,
    "_CTX": CONTEXT,
    "_arith": _arith,
    "_rem": _rem,
    "_arith1": _arith1,
    "_cmp": _cmp,
    "_eq": _eq,
    "_ne": _ne,
    "_not": _not,
    "_and": _and,
    "_or": _or,
    "_and_all": _and_all,
    "_or_all": _or_all,
    "_cond": _cond,
    "_in": _in,
    "_in_seq": _in_seq,
    "_in_set": _in_set,
    "_abs1": _abs1,
    "_minmax": _minmax,
    "_round1": _round,
    "_len1": _len,
    "_agg": _agg,
    "_dig": _dig,
    "_finish": _finish,
    "_error": _error,
}

# --------------------------------------------------------------------------- codegen

_Atom = tuple[str, str, bool]  # (python expression, kind, is a constant)
# The fast block's form of a node (see `_Gen.fx`): (fast Python, the conditions under
# which it is right (None: never), Python right always, kind of fast, kind of full)
_Fx = tuple[str, tuple[str, ...] | None, str, str, str]
#: Fast-block Python longer than this is generated as statements instead (nested
#: `and`/`or` repeat their operands in the fallback call).
_FX_MAX_CHARS: Final = 2000
_TYPE_NAMES: Final = {"num": "_D", "str": "_S", "bool": "_B"}
_LOGIC_UNIT: Final = {"and": ("True", "False", "_and"), "or": ("False", "True", "_or")}


def _is_arith(node: _Node) -> bool:
    """Nodes whose fast path is plain Decimal arithmetic."""
    if isinstance(node, _Binary):
        return True
    if isinstance(node, _Unary):
        return node.op != "not"
    return isinstance(node, _Call) and node.name in ("abs", "min", "max")


class _Gen:
    """Generates the Python source of one function evaluating a list of trees.

    The generated code reads each snapshot field once into a local. A numeric subtree
    (arithmetic topped by at most one comparison) becomes one plain Python expression
    over Decimals, guarded by "every leaf is a Decimal" flags: each field's flag is
    computed once per snapshot, each param's when params are prepared. Anything else
    (MISSING, ints, strings, errors) takes the slow path through the helpers above,
    which implement the full semantics.

    For a rule set (`single=False`) that is the slow function `_slow`; `_run` first tries
    `fast_block`, generated by `fx` from the same trees: one expression per rule with the
    guards on fields and params known to be Decimals left out.
    """

    def __init__(
        self, optional: frozenset[str] = frozenset(), vouched: frozenset[str] = frozenset()
    ) -> None:
        self.optional = optional  # fields the fast block must not count on
        # what the snapshots whose `decimal_fields` is this very set hold as Decimals
        # wherever present (their parser's guarantee): the fast block checks the type of
        # none of those fields for such a snapshot
        self.vouched = vouched
        self.namespace: dict[str, Any] = dict(_RUNTIME)
        self.const_names: dict[tuple[type, str], str] = {}
        self.snapshot_vars: dict[str, str] = {}
        self.param_vars: dict[str, str] = {}
        # (expression, params path or invariant subtree, variable) in `prepare` order
        self.param_slots: list[tuple[int, str | _Node, str]] = []
        self.prepared = False
        self.index = 0
        self.flags: dict[str, str] = {}  # variable -> its "is a Decimal" flag variable
        self.flags_used: set[str] = set()
        self.lines: list[str] = []
        self.indent = 0
        self.count = 0
        # the fast block (see `fast_block`)
        self.fast = False
        self.known: set[str] = set()  # variables the fast block knows hold Decimals
        self.fast_flags: dict[str, str] = {}  # fast block: field -> its is-a-Decimal flag
        self.rule_params: list[dict[str, str]] = []  # each expression's params variables
        self.invariant_vars: dict[tuple[int, _Node], str] = {}
        self.cse_pass = 0
        self.cse_seen: dict[str, int] = {}  # arithmetic Python -> how often it occurs
        self.cse: dict[str, str] = {}  # arithmetic Python -> the variable holding it
        self.stmt_cse: dict[_Node, _Atom] = {}

    def tmp(self, prefix: str = "t") -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.indent + line)

    def const(self, value: Any) -> str:
        key = (type(value), repr(value))
        name = self.const_names.get(key)
        if name is None:
            name = self.const_names[key] = f"c{len(self.const_names)}"
            # a path as a snapshot's keys are (`monitor.snapshot._join`): the same object,
            # so that reading a field finds its key without comparing the text
            self.namespace[name] = sys.intern(value) if type(value) is str else value
        return name

    def assign(self, expr: str) -> str:
        name = self.tmp()
        self.emit(f"{name} = {expr}")
        return name

    def flag(self, code: str) -> str:
        """A condition that is true iff the variable `code` holds a Decimal ("": known)."""
        if self.fast:
            if code in self.known:
                return ""
            return self.fast_flags.get(code) or f"_type({code}) is _D"
        flag = self.flags.get(code)
        if flag is None:
            return f"_type({code}) is _D"
        self.flags_used.add(flag)
        return flag

    # ----------------------------------------------------------------- field reads

    def snapshot_reads(self, paths: Sequence[str]) -> list[str]:
        flags = {var: flag for var, flag in self.flags.items() if flag in self.flags_used}
        return self.reads("s.fields", paths, skip=set(), flags=flags)

    def reads(
        self, fields: str, paths: Sequence[str], *, skip: set[str], flags: dict[str, str]
    ) -> list[str]:
        """Statements reading each path's variable (except those in `skip`) from the
        snapshot `s` and its fields mapping `fields`; `flags`: variable -> the name of
        its is-a-Decimal flag, for those that need one."""
        lines = [f"_g = {fields}.get"]
        if any(p == "labels" or p.startswith("labels.") for p in paths):
            lines.append("_l = s.labels")
        for path in paths:
            var = self.snapshot_vars[path]
            if var in skip:
                continue
            if path in _IDENTITY:
                lines.append(f"{var} = s.{path}")
            elif path == "currency":
                lines.append(f"{var} = s.currency")
                lines.append(f"if {var} is None: {var} = _g({self.const(path)}, _M)")
            elif path == "labels":
                lines.append(f"{var} = _l")
            elif path.startswith("labels."):
                lines.append(f"{var} = _l.get({self.const(path[7:])}, _M)")
            else:
                lines.append(f"{var} = _g({self.const(path)}, _M)")
            if var in flags:
                lines.append(f"{flags[var]} = _type({var}) is _D")
        return lines

    def param_reads(self, index: int, paths: Iterable[str], *, prepared: bool) -> None:
        """Variables for the rule's `params.*` paths.

        Prepared: a (value, is-a-Decimal) pair per path in the flat tuple unpacked at the
        top (see `CompiledRules.prepare`); otherwise reads from the Mapping `_p`.
        """
        self.param_vars = {}
        for path in sorted(paths):
            var = self.param_vars[path] = self.tmp("q")
            if prepared:
                self.param_slots.append((index, path, var))
                self.flags[var] = "d" + var
            elif path == "params":
                self.emit(f"{var} = _p")
            elif "." in path[7:]:
                self.emit(f"{var} = _dig(_p, {self.const(path[7:])})")
            else:
                self.emit(f"{var} = _p.get({self.const(path[7:])}, _M)")

    # ----------------------------------------------------------------- expressions

    def gen(self, node: _Node) -> _Atom:
        if (
            self.fast
            and self.indent == 0
            and isinstance(node, _Call | _Cond)
            and not any(_is_param(p) for p in _field_paths(node, set()))
        ):  # the fast block computes a repeated call such as coalesce(pnl, 0) once
            atom = self.stmt_cse.get(node)
            if atom is None:
                atom = self.stmt_cse[node] = self.gen_node(node)
            return atom
        return self.gen_node(node)

    def gen_node(self, node: _Node) -> _Atom:
        if isinstance(node, _Const):
            return self.gen_const(node.value)
        if isinstance(node, _Field):
            path = node.path
            var = self.param_vars.get(path) or self.snapshot_vars[path]
            return var, "any", False
        if _is_arith(node):
            guards: list[str] = []
            native, slow, ok = self.island(node, guards)
            return self.fast_or_slow(native, slow, _join(guards, ok)), "num", False
        if isinstance(node, _Unary):  # not
            a = self.gen(node.operand)
            if a[1] == "bool":  # a bool or MISSING
                return self.assign(f"{a[0]} is False if {a[0]} is not _M else _M"), "bool", False
            fast, slow = f"{a[0]} is False", f"_not({a[0]})"
            return self.fast_or_slow(fast, slow, _guard([a], "bool")), "bool", False
        if isinstance(node, _Logic):
            return self.gen_logic(node)
        if isinstance(node, _Compare):
            return self.gen_compare(node)
        if isinstance(node, _Cond):
            return self.gen_cond(node)
        if isinstance(node, _Call):
            return self.gen_call(node)
        raise AssertionError(f"a list outside `in`: {node!r}")  # pragma: no cover

    def gen_const(self, value: Decimal | str | bool | None) -> _Atom:
        if value is None or isinstance(value, bool):
            return repr(value), ("bool" if isinstance(value, bool) else "none"), True
        return self.const(value), ("str" if isinstance(value, str) else "num"), True

    def fast_or_slow(self, fast: str, slow: str, guard: str | None) -> str:
        if guard is None:
            return self.assign(slow)
        if guard == "":
            return self.assign(fast)
        return self.assign(f"({fast}) if {guard} else {slow}")

    def island(self, node: _Node, guards: list[str]) -> tuple[str, str, bool]:
        """(fast Python, slow Python, fast path possible) for a numeric subtree.

        Leaves that are not arithmetic are generated first as statements; `guards`
        collects the conditions under which the fast Python is right.
        """
        if self.prepared and _is_arith(node) and _invariant(node):
            if self.fast:
                var = self.invariant_vars[(self.index, node)]
            else:
                var = self.tmp("q")  # computed once per params by `prepare`
                self.param_slots.append((self.index, node, var))
                self.flags[var] = "d" + var
                self.invariant_vars.setdefault((self.index, node), var)
            guards.append(self.flag(var))
            return var, var, True
        if isinstance(node, _Binary):
            mark = len(guards)
            left = self.island(node.left, guards)
            right = self.island(node.right, guards)
            fast = f"({left[0]} {node.op} {right[0]})"
            if node.op == "%":  # a % 0 is an invalid operation for Decimal; say why
                fast = f"_rem({left[0]}, {right[0]})"
            ok = left[2] and right[2]
            if self.fast and ok and self.indent == 0 and not any(guards[mark:]):
                fast = self.common(fast)
            return fast, f"_arith({node.op!r}, {left[1]}, {right[1]})", ok
        if isinstance(node, _Unary) and node.op != "not":
            fast, slow, ok = self.island(node.operand, guards)
            return f"({node.op}{fast})", f"_arith1({node.op!r}, {slow})", ok
        if isinstance(node, _Call) and node.name in ("abs", "min", "max"):
            parts = [self.island(arg, guards) for arg in node.args]
            fasts, slows = ", ".join(p[0] for p in parts), ", ".join(p[1] for p in parts)
            ok = all(p[2] for p in parts)
            slow = f"_minmax({node.name!r}, ({slows},))"
            if node.name == "abs":
                return f"_abs({fasts})", f"_abs1({slows})", ok
            if len(parts) == 2 and all(p[0].isidentifier() for p in parts):
                a, b = parts[0][0], parts[1][0]  # plain variables: compare inline
                better = "<" if node.name == "min" else ">"
                return f"({b} if {b} {better} {a} else {a})", slow, ok
            return f"_{node.name}({fasts})", slow, ok
        code, kind, const = self.gen(node)
        if const:
            return code, code, kind == "num"
        guards.append(self.flag(code))
        return code, code, True

    def gen_logic(self, node: _Logic) -> _Atom:
        unit, stop, step = _LOGIC_UNIT[node.op]
        acc = self.assign(unit)
        opened = 0
        for i, value in enumerate(node.values):
            if i:
                self.emit(f"if {acc} is not {stop}:")
                self.indent += 1
                opened += 1
            a = self.gen(value)[0]
            self.emit(f"if {a} is not {unit}:")
            self.emit(f"    {acc} = {stop} if {a} is {stop} else {step}({acc}, {a})")
        self.indent -= opened
        return acc, "bool", False

    def gen_compare(self, node: _Compare) -> _Atom:
        if len(node.ops) == 1 and _numeric_comparison(node.left, node.ops[0], node.rights[0]):
            op = node.ops[0]
            guards: list[str] = []
            left = self.island(node.left, guards)
            right = self.island(node.rights[0], guards)
            fast = f"{left[0]} {op} {right[0]}"
            if op in ("==", "!="):
                slow = f"{'_eq' if op == '==' else '_ne'}({left[1]}, {right[1]})"
            else:
                slow = f"_cmp({op!r}, {left[1]}, {right[1]})"
            ok = left[2] and right[2]
            return self.fast_or_slow(fast, slow, _join(guards, ok)), "bool", False
        left = self.gen(node.left)
        right = self.gen_operand(node.rights[0])
        result = self.comparison(left, node.ops[0], right)
        if len(node.ops) == 1:
            return result, "bool", False
        acc = self.assign(result)
        opened = 0
        for op, right_node in zip(node.ops[1:], node.rights[1:], strict=True):
            self.emit(f"if {acc} is not False:")
            self.indent += 1
            opened += 1
            left, right = right, self.gen_operand(right_node)
            step = self.comparison(left, op, right)
            self.emit(f"if {step} is not True:")
            self.emit(f"    {acc} = False if {step} is False else _and({acc}, {step})")
        self.indent -= opened
        return acc, "bool", False

    def gen_operand(self, node: _Node) -> _Atom:
        if not isinstance(node, _Seq):
            return self.gen(node)
        values = [n.value for n in node.items if isinstance(n, _Const)]
        if len(values) == len(node.items) and values:
            if all(type(v) is str for v in values):
                return self.const(frozenset(values)), "set_str", True
            if all(type(v) is Decimal for v in values):
                return self.const(frozenset(values)), "set_num", True
        atoms = [self.gen(item)[0] for item in node.items]
        return self.assign("(" + "".join(f"{a}, " for a in atoms) + ")"), "tuple", False

    def comparison(self, a: _Atom, op: str, b: _Atom) -> str:
        """One comparison of two generated operands (chains, `in`, strings)."""
        if op in ("in", "not in"):
            if b[1] in ("set_str", "set_num"):
                guard = _guard([a], "str" if b[1] == "set_str" else "num")
                fast, slow = f"{a[0]} {op} {b[0]}", f"_in_set({a[0]}, {b[0]})"
            elif b[1] == "tuple":
                guard, fast, slow = None, "", f"_in_seq({a[0]}, {b[0]})"
            else:
                guard, fast, slow = None, "", f"_in({a[0]}, {b[0]})"
            if op == "not in":
                slow = f"_not({slow})"
            return self.fast_or_slow(fast, slow, guard)
        fast = f"{a[0]} {op} {b[0]}"
        if op in ("==", "!="):
            slow = f"{'_eq' if op == '==' else '_ne'}({a[0]}, {b[0]})"
            kinds = {atom[1] for atom in (a, b) if atom[2]}
            want = kinds.pop() if len(kinds) == 1 else "num"
            guard = None if want == "none" else _guard([a, b], want)
            return self.fast_or_slow(fast, slow, guard)
        slow = f"_cmp({op!r}, {a[0]}, {b[0]})"
        want = "str" if "str" in (a[1], b[1]) else "num"
        return self.fast_or_slow(fast, slow, _guard([a, b], want))

    def gen_cond(self, node: _Cond) -> _Atom:
        test = self.gen(node.test)[0]
        result = self.tmp()
        self.emit(f"if {test} is True:")
        self.indent += 1
        body = self.gen(node.body)
        self.emit(f"{result} = {body[0]}")
        self.indent -= 1
        self.emit(f"elif {test} is False:")
        self.indent += 1
        orelse = self.gen(node.orelse)
        self.emit(f"{result} = {orelse[0]}")
        self.indent -= 1
        self.emit("else:")
        self.emit(f"    {result} = _cond({test})")
        kind = body[1] if body[1] == orelse[1] and body[1] in ("num", "bool") else "any"
        return result, kind, False

    def gen_call(self, node: _Call) -> _Atom:
        name = node.name
        if name == "present":
            return self.assign(f"{self.gen(node.args[0])[0]} is not _M"), "bool", False
        if name == "coalesce":
            return self.gen_coalesce(node.args), "any", False
        args = ", ".join(self.gen(arg)[0] for arg in node.args)
        if name in _AGGREGATES:
            return self.assign(f"_agg({name!r}, {args})"), "num", False
        return self.assign(f"_{name}1({args})"), "num", False  # round, len

    def gen_coalesce(self, args: Sequence[_Node]) -> str:
        result = self.tmp()
        opened = 0
        for i, arg in enumerate(args):
            if i:
                self.emit(f"if {result} is _M:")
                self.indent += 1
                opened += 1
            self.emit(f"{result} = {self.gen(arg)[0]}")
        self.indent -= opened
        return result

    # ----------------------------------------------------------------- fast block

    def common(self, fast: str) -> str:
        """Arithmetic over known Decimals that several expressions compute: once."""
        if self.cse_pass == 1:  # the first pass counts
            self.cse_seen[fast] = self.cse_seen.get(fast, 0) + 1
            return fast
        if self.cse_seen.get(fast, 0) < 2:
            return fast
        var = self.cse.get(fast)
        if var is None:
            var = self.cse[fast] = self.assign(fast)
        return var

    def guards_of(self, atoms: Sequence[_Atom], want: str) -> tuple[str, ...] | None:
        """`_guard` for the fast block: known Decimals need no condition."""
        conditions = []
        for code, kind, const in atoms:
            if const:
                if kind != want:
                    return None
            elif not (want == "num" and code in self.known):
                conditions.append(f"_type({code}) is {_TYPE_NAMES[want]}")
        return tuple(dict.fromkeys(conditions))

    def fx(self, node: _Node) -> _Fx:
        """The fast block's Python for a node; statements it needs go to `self.lines`.

        `full` (the third item) is right whenever evaluating it raises nothing: anything
        raised in the fast block sends the snapshot to the slow function, which then
        finds the error (or not) exactly. So operands may be computed eagerly. `fast` is
        right, and of the kind given, when its conditions hold.
        """
        if isinstance(node, _Const):
            code, kind, _ = self.gen_const(node.value)
            return code, (), code, kind, kind
        if isinstance(node, _Field):
            var = self.param_vars.get(node.path) or self.snapshot_vars[node.path]
            return var, (), var, "num" if var in self.known else "any", "any"
        if _is_arith(node):
            guards: list[str] = []
            fast, slow, ok = self.island(node, guards)
            return self.fx_join(fast, slow, _conditions(guards, ok), "num", "num")
        if isinstance(node, _Unary):  # not
            a = self.fx_bool(self.fx(node.operand))
            return self.fx_join(f"(not {a[0]})", f"_not({a[2]})", a[1], "bool", "bool")
        if isinstance(node, _Logic):
            parts = [self.fx_bool(self.fx(value)) for value in node.values]
            slow = f"_{node.op}_all({', '.join(p[2] for p in parts)})"
            conditions: tuple[str, ...] | None = ()
            for part in parts:
                conditions = None if conditions is None or part[1] is None else conditions + part[1]
            fast = "(" + f" {node.op} ".join(p[0] for p in parts) + ")"
            if conditions is not None:
                conditions = tuple(dict.fromkeys(conditions))
            result = self.fx_join(fast, slow, conditions, "bool", "bool")
            return result if len(result[2]) <= _FX_MAX_CHARS else self.fx_statements(node)
        if isinstance(node, _Compare) and len(node.ops) == 1 and node.ops[0] not in _IN_OPS:
            op, right_node = node.ops[0], node.rights[0]
            if _numeric_comparison(node.left, op, right_node):
                guards = []
                left = self.island(node.left, guards)
                right = self.island(right_node, guards)
                fast = f"({left[0]} {op} {right[0]})"
                slow = _comparison_call(op, left[1], right[1])
                ok = left[2] and right[2]
                return self.fx_join(fast, slow, _conditions(guards, ok), "bool", "bool")
            x, y = self.gen(node.left), self.gen(right_node)
            if op in ("==", "!="):
                kinds = {atom[1] for atom in (x, y) if atom[2]}
                want = kinds.pop() if len(kinds) == 1 else "num"
                cond = None if want == "none" else self.guards_of([x, y], want)
            else:
                cond = self.guards_of([x, y], "str" if "str" in (x[1], y[1]) else "num")
            slow = _comparison_call(op, x[0], y[0])
            return self.fx_join(f"({x[0]} {op} {y[0]})", slow, cond, "bool", "bool")
        if isinstance(node, _Call) and node.name == "present":
            var = self.gen(node.args[0])[0]
            fast = "True" if var in self.known else f"({var} is not _M)"
            return fast, (), fast, "bool", "bool"
        return self.fx_statements(node)

    def fx_statements(self, node: _Node) -> _Fx:
        """A node generated as statements (chains, `in`, `x if c else y`, calls)."""
        code, kind, const = self.gen(node)
        return code, (), code, kind if const else "any", kind

    def fx_join(
        self, fast: str, slow: str, conditions: tuple[str, ...] | None, kind: str, full_kind: str
    ) -> _Fx:
        if conditions is None:
            return slow, None, slow, kind, full_kind
        if not conditions:
            return fast, (), fast, kind, full_kind
        return (
            fast,
            conditions,
            f"({fast} if {' and '.join(conditions)} else {slow})",
            kind,
            full_kind,
        )

    def fx_bool(self, fx: _Fx) -> _Fx:
        """The form of an operand of `and`/`or`/`not` whose fast Python is a bool."""
        fast, conditions, full, kind, full_kind = fx
        if conditions is None or kind == "bool":
            return fx
        if conditions == () and fast.isidentifier() and fast not in ("None", "True", "False"):
            return fast, (f"_type({fast}) is _B",), full, "bool", full_kind
        return full, None, full, kind, full_kind

    def fast_reads(self, paths: Sequence[str], required: set[str]) -> list[str]:
        """The fast block's reads of the fields that are not required Decimals.

        Those used as numbers get an is-a-Decimal flag (see `fast_block`).
        """
        return self.reads("f", paths, skip=required, flags=self.fast_flags)

    def fast_block(self, trees: Sequence[_Node], snapshot_paths: Sequence[str]) -> list[str]:
        """Statements evaluating every tree when the usual holds, else falling through.

        The usual: every field used as a number (an operand of arithmetic or of `<`,
        `<=`, `>`, `>=`) is a Decimal, and so is every such param (`prepare` checks the
        params once). Fields that some expression tests with `present` or `coalesce`
        are exempt: they are read as any other and checked where they are used. Then
        the rules are one `return [...]` of plain Python over Decimals, with no flags,
        no per-rule error handling and arithmetic that several rules share computed
        once; whatever raises (an error, a MISSING that a fast path cannot take) falls
        through to the slow function, which evaluates every rule on its own exactly.
        """
        maybe_missing: set[str] = set(self.optional)
        for tree in trees:
            _optional_paths(tree, maybe_missing)
        required_fields: dict[str, str] = {}
        self.fast_flags = {}
        for tree in trees:
            for path in sorted(_numeric_paths(tree, set())):
                if _is_param(path):
                    continue
                var = self.snapshot_vars[path]
                if path in maybe_missing or path in _IDENTITY or path == "currency":
                    self.fast_flags[var] = "f" + var  # checked where used, once per snapshot
                elif path == "labels" or path.startswith("labels."):
                    self.fast_flags[var] = "f" + var
                else:
                    required_fields[path] = var
        self.known = set(required_fields.values())
        for index, tree in enumerate(trees):
            for path in _numeric_paths(tree, set()) - maybe_missing:
                if _is_param(path):
                    self.known.add(self.rule_params[index][path])
        self.known.update(self.invariant_vars.values())
        self.fast, self.prepared = True, True
        prologue: list[str] = []
        results: list[str] = []
        for self.cse_pass in (1, 2):
            self.cse, self.stmt_cse, prologue, results = {}, {}, [], []
            for index, tree in enumerate(trees):
                self.lines, self.indent, self.index = [], 0, index
                self.param_vars = self.rule_params[index]
                _, _, full, _, full_kind = self.fx(tree)
                prologue += self.lines
                results.append(f"_finish({full})" if full_kind == "any" else full)
        self.fast = False
        body = self.fast_reads(snapshot_paths, self.known)
        if self.param_slots:  # before the prologue: shared arithmetic may read params
            body.append("".join(f"{v}, " for _, _, v in self.param_slots) + "= _fv")
        body += prologue
        body.append(f"return {_list(results)}")
        lines = ["try:", "    f = s.fields"]
        lines += [f"    {var} = f[{self.const(path)}]" for path, var in required_fields.items()]
        vouched = [var for path, var in required_fields.items() if path in self.vouched]
        if vouched:
            self.namespace["_K"] = self.vouched
            lines.append("    _dp = s.decimal_fields")
        lines += ["except _Exc:", "    pass", "else:"]
        indent = "    "
        if required_fields:
            checks = _decimals_test(required_fields.values())
            if vouched:
                unvouched = [var for var in required_fields.values() if var not in vouched]
                parsed = "_dp is _K" + (f" and {_decimals_test(unvouched)}" if unvouched else "")
                checks = f"({parsed}) or {checks}"
            lines.append(f"    if {checks}:")
            indent = "        "
        lines.append(indent + "try:")
        lines += [indent + "    " + line for line in body]
        lines += [indent + "except _Exc:", indent + "    pass"]
        return lines

    # ----------------------------------------------------------------- functions

    def function(self, trees: Sequence[_Node], *, single: bool) -> str:
        """The source of a module defining the evaluating function `_run`, whose globals
        are the namespace (globals cost a call nothing, unlike the free variables of a
        closure: each call of a closure copies and releases every one of them).

        single: `_run(s, _p)` -> one result, `_p` the params Mapping. Otherwise
        `_run(s, pp)` -> a list of results, `pp` the tuple from `CompiledRules.prepare`.
        """
        all_paths: set[str] = set()
        for tree in trees:
            _field_paths(tree, all_paths)
        snapshot_paths = sorted(p for p in all_paths if not _is_param(p))
        for path in snapshot_paths:
            var = self.snapshot_vars[path] = self.tmp("v")
            self.flags[var] = "d" + var
        rules: list[str] = []
        results = []
        for index, tree in enumerate(trees):
            self.lines, self.indent, self.index, self.prepared = [], 0, index, not single
            params = (p for p in _field_paths(tree, set()) if _is_param(p))
            self.param_reads(index, params, prepared=not single)
            self.rule_params.append(self.param_vars)
            atom = self.gen(tree)
            result = f"r{index}"
            results.append(result)
            last = self.lines[-1] if self.lines else ""
            if atom[1] != "any" and last.startswith(f"{atom[0]} = "):
                self.lines[-1] = result + last[len(atom[0]) :]  # assign the result directly
            else:
                finish = f"_finish({atom[0]})" if atom[1] == "any" else atom[0]
                self.emit(f"{result} = {finish}")
            rules.append("try:")
            rules.extend("    " + line for line in self.lines)
            rules.append("except _Exc as _e:")
            rules.append(f"    {result} = _error(_e)")
        reads = self.snapshot_reads(snapshot_paths)
        if self.param_slots:
            reads.append("".join(f"{v}, d{v}, " for _, _, v in self.param_slots) + "= pp")
        evaluate = [
            "try:",
            *("    " + line for line in reads),
            "except _Exc as _e:",
            "    _x = _error(_e)",
            f"    return {'_x' if single else f'[_x] * {len(trees)}'}",
            *rules,
            f"return {results[0] if single else _list(results)}",
        ]
        if single:
            head, slow = ["def _run(s, _p):"], []
        else:
            fast = self.fast_block(trees, snapshot_paths)
            slow = ["def _slow(s, pp):", *("    " + line for line in evaluate)]
            head = ["def _run(s, pp):"]
            evaluate = [
                "try:",
                "    _fv, _sv = pp",
                "except _Exc:",
                "    _fv, _sv = None, pp  # not from `prepare`: the slow function says why",
                "if _fv is not None:",
                *("    " + line for line in fast),
                "return _slow(s, _sv)",
            ]
        body = [
            "_old = _getctx()",
            "if _old is not _CTX: _setctx(_CTX)",
            "try:",
            *("    " + line for line in evaluate),
            "finally:",
            "    if _old is not _CTX: _setctx(_old)",
        ]
        lines = [*slow, *head, *("    " + line for line in body)]
        return "".join(f"{x}\n" for x in lines)

    def build(self, trees: Sequence[_Node], *, single: bool, name: str) -> tuple[Any, str]:
        """The evaluating function and its source."""
        source = self.function(trees, single=single)
        code = compile(source, name, "exec")
        scope: dict[str, Any] = {**self.namespace, "__builtins__": {}}
        exec(code, scope)  # generated from checked trees only; no builtins reachable
        return scope["_run"], source


def _decimals_test(variables: Iterable[str]) -> str:
    return " and ".join(f"_type({var}) is _D" for var in variables)


def _invariant(node: _Node) -> bool:
    """Arithmetic over params and constants only: the same for every snapshot."""
    if isinstance(node, _Const):
        return True
    if isinstance(node, _Field):
        return _is_param(node.path)
    return _is_arith(node) and all(_invariant(child) for child in _children(node))


def _numeric_comparison(left: _Node, op: str, right: _Node) -> bool:
    """Whether a comparison's fast path is Decimal against Decimal."""
    if op in ("in", "not in"):
        return False
    for side in (left, right):
        if isinstance(side, _Const) and not isinstance(side.value, Decimal):
            return False
    return True


def _join(guards: Sequence[str], ok: bool) -> str | None:
    """The fast-path condition from island guards ("" always, None never)."""
    return " and ".join(dict.fromkeys(g for g in guards if g)) if ok else None


def _conditions(guards: Sequence[str], ok: bool) -> tuple[str, ...] | None:
    """`_join` as the fast block's tuple of conditions."""
    return tuple(dict.fromkeys(g for g in guards if g)) if ok else None


_IN_OPS: Final = ("in", "not in")


def _comparison_call(op: str, a: str, b: str) -> str:
    """The slow path of one comparison of two non-`in` operands."""
    if op in ("==", "!="):
        return f"{'_eq' if op == '==' else '_ne'}({a}, {b})"
    return f"_cmp({op!r}, {a}, {b})"


def _numeric_paths(node: _Node, out: set[str]) -> set[str]:
    """Field paths used as numbers: operands of arithmetic or of an ordering."""
    sides: Iterable[_Node] = ()
    if _is_arith(node):
        sides = _children(node)
    elif (
        isinstance(node, _Compare)
        and len(node.ops) == 1
        and node.ops[0] in _ORDER
        and _numeric_comparison(node.left, node.ops[0], node.rights[0])
    ):
        sides = (node.left, node.rights[0])
    for side in sides:
        if isinstance(side, _Field):
            out.add(side.path)
    for child in _children(node):
        _numeric_paths(child, out)
    return out


def _optional_paths(node: _Node, out: set[str]) -> set[str]:
    """Field paths an expression expects to be absent at times: present(x), coalesce."""
    if isinstance(node, _Call) and node.name in ("present", "coalesce"):
        out.update(arg.path for arg in node.args if isinstance(arg, _Field))
    for child in _children(node):
        _optional_paths(child, out)
    return out


def _guard(atoms: Sequence[_Atom], want: str) -> str | None:
    """The fast-path condition: every non-constant atom has the type `want`.

    "" when every atom is a constant of that kind; None when some constant is not.
    """
    conditions = []
    for code, kind, const in atoms:
        if const:
            if kind != want:
                return None
            continue
        conditions.append(f"_type({code}) is {_TYPE_NAMES[want]}")
    return " and ".join(conditions)


def _is_param(path: str) -> bool:
    return path == "params" or path.startswith("params.")


# --------------------------------------------------------------------------- API


class CompiledExpr:
    """A checked, compiled expression."""

    __slots__ = ("_python", "_run", "_tree", "fields", "kind", "source", "where")

    source: str
    fields: frozenset[str]
    kind: str  # "bool" | "number" | "string" | "none" | "any": what it yields, statically
    where: Location | None

    def __init__(self, source: str, tree: _Node, where: Location | None) -> None:
        self.source = source
        self.where = where
        self._tree = tree
        self.fields = frozenset(_field_paths(tree, set()))
        self.kind = _static_kind(tree)
        self._run, self._python = _Gen().build([tree], single=True, name="<riskmon expression>")

    def evaluate(self, snapshot: Snapshot, params: Mapping[str, Any]) -> Any:
        """The value (Decimal, bool, str or None), MISSING, or an EvalError; never raises."""
        return self._run(snapshot, params)

    def __repr__(self) -> str:
        return f"CompiledExpr({self.source!r})"


#: The rule params of a rule set flattened for `CompiledRules.run` (see `prepare`).
PreparedParams = NewType("PreparedParams", tuple[Any, ...])


class CompiledRules:
    """Many expressions evaluated over one snapshot by one generated function.

    `rules(snapshot, params)` takes one params Mapping per expression. The fast way is to
    flatten each account's params once with `prepared = rules.prepare(params)` (they only
    change on a config reload) and call `rules.run(snapshot, prepared)` per snapshot.
    Both return one result per expression and never raise.

    The generated function first tries a fast block (`_Gen.fast_block`), which needs
    the fields and params that rules use as numbers to be Decimals; `prepare` checks the
    params once and returns None as the fast values when one is not. The block takes
    nothing for granted about snapshots (a None, int or bool where a number is expected
    just sends the snapshot to the per-rule slow function), so results never depend on
    which path ran; tests/test_expr_properties.py compares the two. The one thing it
    takes on trust is the guarantee of the venue's parser: given `decimal_fields` (the
    kind's `FieldSchema.decimal_paths`), it skips the type checks of those fields in a
    snapshot that carries that very set object (the adapters' snapshots), 7-8% of the
    time of 20 rules; tests/test_snapshot_parsing.py holds the parsers to it.

    Every call switches the thread's decimal context to `CONTEXT` and back (~150 ns);
    when the current context already is `CONTEXT` (a task that did
    `decimal.setcontext(CONTEXT)`; asyncio tasks copy the context they start with) it
    does not.
    """

    __slots__ = ("_param_slots", "_python", "_required", "exprs", "run")

    exprs: tuple[CompiledExpr, ...]
    run: Callable[[Snapshot, PreparedParams], list[Any]]

    def __init__(
        self,
        exprs: Sequence[CompiledExpr],
        *,
        optional: Iterable[str] = (),
        decimal_fields: frozenset[str] = frozenset(),
    ) -> None:
        self.exprs = tuple(exprs)
        gen = _Gen(frozenset(optional), decimal_fields)
        self.run, self._python = gen.build(
            [e._tree for e in self.exprs], single=False, name="<riskmon rules>"
        )
        self._param_slots = tuple(
            (index, slot if isinstance(slot, str) else _invariant_evaluator(slot))
            for index, slot, _ in gen.param_slots
        )
        # the slots that the fast block needs as Decimals
        self._required = tuple(var in gen.known for _, _, var in gen.param_slots)

    def prepare(self, params: Sequence[Mapping[str, Any]]) -> PreparedParams:
        """The values `run` reads from params[i] for exprs[i] (numbers as Decimal).

        A pair: the values for the fast block (None when one that it needs as a
        Decimal is not one), and each value with its is-a-Decimal flag for the slow
        function.
        """
        if len(params) != len(self.exprs):
            raise ValueError(f"{len(self.exprs)} expressions but {len(params)} params mappings")
        values: list[Any] = []
        flagged: list[Any] = []
        fast = True
        for (index, slot), required in zip(self._param_slots, self._required, strict=True):
            if isinstance(slot, str):
                value = _param_value(params[index], slot)
            else:
                value = slot(_NO_SNAPSHOT, params[index])
            is_decimal = type(value) is Decimal
            values.append(value)
            flagged += (value, is_decimal)
            fast = fast and (is_decimal or not required)
        return PreparedParams((tuple(values) if fast else None, tuple(flagged)))

    def __call__(self, snapshot: Snapshot, params: Sequence[Mapping[str, Any]]) -> list[Any]:
        return self.run(snapshot, self.prepare(params))

    def __len__(self) -> int:
        return len(self.exprs)


_NO_SNAPSHOT: Final = Snapshot(venue="", venue_kind="", account="", fields={}, taken_at=0.0)


def _invariant_evaluator(tree: _Node) -> Callable[[Snapshot, Mapping[str, Any]], Any]:
    run: Callable[[Snapshot, Mapping[str, Any]], Any]
    run, _ = _Gen().build([tree], single=True, name="<riskmon params>")
    return run


def _param_value(params: Mapping[str, Any], path: str) -> Any:
    return params if path == "params" else _norm(_dig(params, path[7:]))


# --------------------------------------------------------------------------- static analysis

#: Paths that always hold text: a comparison of a param with one is not numeric.
_TEXT_PATHS: Final = ("venue", "venue_kind", "account", "currency")


def param_uses(expr: CompiledExpr) -> dict[str, bool]:
    """The params an expression reads, by name (`params.floor` -> `floor`), each with
    whether it is used as a number somewhere: an operand of arithmetic or of
    `abs/min/max/round`, of an ordering (`<` ...) whose other side is not text, or of
    `==`/`!=` against a number. `coalesce` and `x if c else y` hand their use on to
    their operands. A param used so must hold a number, or the rule fails at every
    evaluation."""
    uses: dict[str, bool] = {}
    _param_uses(expr._tree, False, uses)
    return uses


def guarded_paths(expr: CompiledExpr) -> frozenset[str]:
    """The field paths whose absence the expression handles itself: the arguments of
    `present(...)` and `coalesce(...)`."""
    return frozenset(_optional_paths(expr._tree, set()))


@dataclass(frozen=True, slots=True)
class Comparison:
    """An ordering `value <op> threshold` inside an expression (either way round):
    `value` reads the snapshot, `threshold` only params and constants. The alert's state
    can change where value - threshold changes sign (the risk-aware schedule)."""

    value: CompiledExpr
    threshold: CompiledExpr


def comparisons(expr: CompiledExpr) -> list[Comparison]:
    """The orderings (`<`, `<=`, `>`, `>=`) of `expr` between something that reads the
    snapshot and a threshold of params and constants, wherever they are in it."""
    found: list[Comparison] = []
    _comparisons(expr._tree, expr, found)
    return found


def _comparisons(node: _Node, expr: CompiledExpr, out: list[Comparison]) -> None:
    if isinstance(node, _Compare):
        operands = (node.left, *node.rights)
        for i, op in enumerate(node.ops):
            if op not in _ORDER:
                continue
            pair = (operands[i], operands[i + 1])
            if any(_operand_kind(side) in ("string", "bool", "none") for side in pair):
                continue
            fixed = [_invariant(side) for side in pair]
            if fixed[0] == fixed[1]:
                continue
            value, threshold = (pair[1], pair[0]) if fixed[0] else pair
            text = f"{expr.source} (comparison {len(out) + 1})"
            out.append(
                Comparison(
                    CompiledExpr(text, value, expr.where),
                    CompiledExpr(text, threshold, expr.where),
                )
            )
    for child in _children(node):
        _comparisons(child, expr, out)


def _operand_kind(node: _Node) -> str:
    if isinstance(node, _Field):
        head = node.path.partition(".")[0]
        if node.path in _TEXT_PATHS or head == "labels":
            return "string"
        return "any"
    return _static_kind(node)


def _param_uses(node: _Node, numeric: bool, out: dict[str, bool]) -> None:
    if isinstance(node, _Field):
        if node.path.startswith("params."):
            name = node.path[len("params.") :].partition(".")[0]
            out[name] = out.get(name, False) or numeric
        return
    if isinstance(node, _Compare):
        operands = (node.left, *node.rights)
        flags = [False] * len(operands)
        for i, op in enumerate(node.ops):
            kinds = (_operand_kind(operands[i]), _operand_kind(operands[i + 1]))
            if op in _ORDER:
                used = not any(k in ("string", "bool", "none") for k in kinds)
            elif op in ("==", "!="):
                used = "number" in kinds
            else:
                used = False
            flags[i] = flags[i] or used
            flags[i + 1] = flags[i + 1] or used
        for operand, flag in zip(operands, flags, strict=True):
            _param_uses(operand, flag, out)
        return
    if _is_arith(node) or (isinstance(node, _Call) and node.name == "round"):
        child_numeric = True
    elif isinstance(node, _Call) and node.name == "coalesce":
        child_numeric = numeric
    elif isinstance(node, _Cond):
        _param_uses(node.test, False, out)
        _param_uses(node.body, numeric, out)
        _param_uses(node.orelse, numeric, out)
        return
    else:
        child_numeric = False
    for child in _children(node):
        _param_uses(child, child_numeric, out)


def compile_expression(text: str, *, where: Location | None = None) -> CompiledExpr:
    """Check and compile `text`; SourceError (located from `where`) if it is refused."""
    return CompiledExpr(text, _check(text, where), where)


def compile_rules(
    exprs: Sequence[CompiledExpr],
    *,
    optional: Iterable[str] = (),
    decimal_fields: frozenset[str] = frozenset(),
) -> CompiledRules:
    """One evaluator for many expressions (see `CompiledRules`). `optional`: fields that
    are often absent (a venue's deprecated ones): the fast path checks them where they
    are used instead of leaving every rule to the slow path when one is missing.
    `decimal_fields`: the venue's parser's guarantee (`FieldSchema.decimal_paths`); a
    snapshot that carries this very set as its `decimal_fields` skips the fast path's
    type checks of those fields."""
    return CompiledRules(exprs, optional=optional, decimal_fields=decimal_fields)


def _list(names: Sequence[str]) -> str:
    return "[" + "".join(f"{n}, " for n in names) + "]"
