"""Label and annotation templates: Jinja2 in its immutable sandbox, compiled once at load.

A template sees `render_context(snapshot, params)`: every top-level snapshot field (nested
ones through their parents: `{{ margin_details.usage.used }}`), `venue`, `venue_kind`,
`account`, `currency`, `labels` and `params`. Annotations see two names more
(`alert_context`, `ALERT_FIELDS`): `resolved`, true when the text is rendered for a
resolved event (with the values that resolved it), and `firing_values`, the values the
alert fired with as text (`{{ firing_values.buying_power }}`; empty while pending), so
one template can read true in both states. Decimals print as their exact text
(`24000.00`, never `2.4E+4`), booleans as `true`/`false`, a missing field as
`<missing: name>`.

Rendering never raises: a template that fails (a missing field used in arithmetic, a
filter given the wrong type) or goes past a bound renders `<template error: ...> {source}`,
logs the failure once, with the template's location, and counts it
(`template_failures()`, `riskmon_template_failures_total`). Output is capped at
`MAX_OUTPUT_CHARS`. Templates are written by the rule authors, so the sandbox is a guard
against mistakes (no attribute internals, no mutation), not a jail for hostile input;
but a mistake must not stall the daemon, so a render is bounded in steps, time and the
size of every value it builds (`monitor.engine.template_limits`), and what cannot be
bounded is refused at load with its place (`monitor.engine.template_check`).
"""

from __future__ import annotations

import decimal
import itertools
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, Final

import jinja2
import structlog
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from monitor.engine.decimal_text import decimal_text
from monitor.engine.expr import decimal_error_text
from monitor.engine.template_check import UNBOUNDED_METHODS, bound_tree, template_problems
from monitor.engine.template_limits import (
    RenderBudget,
    bounded_filters,
    bounded_range,
    check_binop,
    check_call,
    check_call_result,
    check_format,
    tick,
)
from monitor.snapshot import Snapshot
from monitor.yamlsource import Location, Problem, SourceError

__all__ = [
    "ALERT_FIELDS",
    "MAX_OUTPUT_CHARS",
    "CompiledTemplate",
    "alert_context",
    "compile_template",
    "render_context",
    "template_failures",
]

#: The names annotation templates see besides the snapshot's (`alert_context`).
ALERT_FIELDS: Final = frozenset({"resolved", "firing_values"})
#: Longest rendered text; longer output is cut and ends with "...".
MAX_OUTPUT_CHARS: Final = 4096
_MAX_LOGGED_ERRORS: Final = 8  # distinct failure messages logged per template

_log = structlog.get_logger("riskmon.rules")


class _Missing(jinja2.ChainableUndefined):
    """A field that is not there: prints `<missing: name>`; attribute chains keep going."""

    __slots__ = ()

    def __str__(self) -> str:
        return f"<missing: {self._undefined_name or 'value'}>"

    @property
    def _undefined_message(self) -> str:  # why using it (in arithmetic, ...) failed
        return f"{self._undefined_name or 'a value'} is missing"

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__":
            raise AttributeError(name)
        return self._child(name)

    def __getitem__(self, key: Any) -> _Missing:  # type: ignore[override]
        return self._child(str(key))

    def _child(self, name: str) -> _Missing:
        parent = self._undefined_name
        return _Missing(name=f"{parent}.{name}" if parent else name)


def _finalize(value: Any) -> Any:
    if type(value) is Decimal:
        return decimal_text(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value


class _Environment(ImmutableSandboxedEnvironment):
    """The immutable sandbox with every operator, lookup and call counted as a step of
    the render's budget and held to the size bounds of `template_limits`."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        tick()
        check_binop(op, left, right)
        return self.binop_table[op](left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        return super().getitem(obj, argument)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return attr not in UNBOUNDED_METHODS and super().is_safe_attribute(obj, attr, value)

    def call(
        __self,
        __context: jinja2.runtime.Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        tick()
        check_call(__obj)
        return check_call_result(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Any:
        format_ = super().wrap_str_format(value)
        if format_ is None:
            return None
        text: str = value.__self__

        def bounded(*args: Any, **kwargs: Any) -> str:
            check_format(text, (*args, kwargs), percent=False)
            return str(format_(*args, **kwargs))

        return bounded


_ENV: Final = _Environment(
    autoescape=False,
    undefined=_Missing,
    finalize=_finalize,
    keep_trailing_newline=True,
    auto_reload=False,
    cache_size=0,
    optimized=False,  # no constant folding: nothing of a template runs outside a render
)
_ENV.filters = bounded_filters(_ENV.filters)
_ENV.globals["range"] = bounded_range
del _ENV.globals["lipsum"]  # lipsum(n=10**6) writes megabytes of text
_GLOBALS: Final = frozenset(_ENV.globals)
_failed_renders = 0


class CompiledTemplate:
    """A checked, compiled template (the `monitor.engine.model.Template` protocol)."""

    __slots__ = ("_logged", "_template", "fields", "source", "where")

    source: str
    fields: frozenset[str]
    where: Location | None

    def __init__(
        self, source: str, template: jinja2.Template | None, fields: frozenset[str], where: Location
    ) -> None:
        self.source = source
        self.fields = fields
        self.where = where
        self._template = template  # None: constant text, no `{` in it
        self._logged: set[str] = set()

    def render(self, context: Mapping[str, Any]) -> str:
        """The text; never raises (a failing template renders a readable fallback)."""
        if self._template is None:
            return _cap(self.source)
        try:
            with RenderBudget():
                return _cap_stream(self._template.generate(context))
        except Exception as exc:
            message = _error_text(exc)
            self._failed(message)
            return _cap(f"<template error: {message}> {self.source}")

    def _failed(self, message: str) -> None:
        global _failed_renders
        _failed_renders += 1
        if message in self._logged or len(self._logged) >= _MAX_LOGGED_ERRORS:
            return
        self._logged.add(message)
        _log.warning(
            "template failed",
            location=str(self.where),
            template=self.source[:200],
            error=message,
        )

    def __repr__(self) -> str:
        return f"CompiledTemplate({self.source!r})"


def template_failures() -> int:
    """Renders that failed or went past a bound, in this process."""
    return _failed_renders


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, decimal.DecimalException):
        return decimal_error_text(exc)
    text = str(exc) if isinstance(exc, jinja2.TemplateError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


def _cap(text: str) -> str:
    return text if len(text) <= MAX_OUTPUT_CHARS else text[: MAX_OUTPUT_CHARS - 3] + "..."


def _cap_stream(chunks: Iterator[str]) -> str:
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            break  # stop generating: an endless loop of output ends here
    return _cap("".join(parts))


# ------------------------------------------------------------------------- compiling


def compile_template(source: str, *, where: Location) -> CompiledTemplate:
    """Check and compile a template; SourceError at `where` on a syntax error."""
    if "{" not in source:  # plain text: nothing to compile, nothing to fail
        return CompiledTemplate(source, None, frozenset(), where)
    try:
        tree = _ENV.parse(source)
        problems = template_problems(tree, source)
        if problems:
            raise SourceError(
                [Problem(_offset_location(where, source, at), message) for at, message in problems]
            )
        fields = _template_fields(tree)
        template = _ENV.from_string(bound_tree(tree))
    except jinja2.TemplateSyntaxError as exc:
        raise SourceError([Problem(_line_location(where, exc.lineno), _syntax(exc))]) from None
    except (RecursionError, MemoryError, ValueError) as exc:  # absurdly nested or long input
        raise SourceError([Problem(where, f"invalid template: {_error_text(exc)}")]) from None
    return CompiledTemplate(source, template, fields, where)


def _syntax(exc: jinja2.TemplateSyntaxError) -> str:
    return f"invalid template: {' '.join(str(exc.message or exc).split())}"


def _line_location(where: Location, lineno: int) -> Location:
    if lineno <= 1:
        return where
    return Location(where.file, where.line + lineno - 1, 1)


def _offset_location(where: Location, source: str, offset: int) -> Location:
    """Where the character at `offset` of the template stands, as `_line_location` and
    the rule file's relocation count: columns from `where` on the first line."""
    line = source.count("\n", 0, offset)
    column = offset - (source.rfind("\n", 0, offset) + 1)
    if line == 0:
        return Location(where.file, where.line, where.col + column)
    return Location(where.file, where.line + line, column + 1)


def _template_fields(tree: nodes.Template) -> frozenset[str]:
    """Every dotted path the template reads from its context."""
    free = meta.find_undeclared_variables(tree) - _GLOBALS
    found: set[str] = set()
    _collect(tree, found)
    return frozenset(p for p in found if p.partition(".")[0] in free)


def _chain(node: nodes.Node) -> list[str] | None:
    """`a.b['c'].d` as ["a", "b", "c", "d"]; None if it is not a plain path."""
    if isinstance(node, nodes.Name):
        return [node.name] if node.ctx == "load" else None
    if isinstance(node, nodes.Getattr):
        base = _chain(node.node)
        return None if base is None else [*base, node.attr]
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        key = node.arg.value
        if isinstance(key, str | int) and not isinstance(key, bool):
            base = _chain(node.node)
            return None if base is None else [*base, str(key)]
    return None


def _collect(node: nodes.Node, out: set[str]) -> None:
    if isinstance(node, nodes.Getattr | nodes.Getitem | nodes.Name):
        path = _chain(node)
        if path is not None:
            out.add(".".join(path))
            return
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
        # `securities.items()`: a method of `securities`, not a field `securities.items`
        base = _chain(node.node.node)
        if base is not None:
            out.add(".".join(base))
            for child in itertools.chain(node.args, node.kwargs):
                _collect(child, out)
            for extra in (node.dyn_args, node.dyn_kwargs):
                if extra is not None:
                    _collect(extra, out)
            return
    for child in node.iter_child_nodes():
        _collect(child, out)


# ------------------------------------------------------------------------- context


def render_context(snapshot: Snapshot, params: Mapping[str, Any]) -> dict[str, Any]:
    """What templates see for one snapshot and the rule's params (after overrides).

    Top-level fields by name (nested ones through their parents); the snapshot's
    flattened dotted keys come along but no template name can reach them.
    """
    context = dict(snapshot.fields)
    context["venue"] = snapshot.venue
    context["venue_kind"] = snapshot.venue_kind
    context["account"] = snapshot.account
    if snapshot.currency is not None:
        context["currency"] = snapshot.currency
    context["labels"] = dict(snapshot.labels)
    context["params"] = dict(params)
    return context


def alert_context(*, resolved: bool, firing_values: Mapping[str, str]) -> dict[str, Any]:
    """What annotation templates see of the alert itself (`ALERT_FIELDS`), added to
    `render_context`: whether it is resolving and the values it fired with."""
    return {"resolved": resolved, "firing_values": dict(firing_values)}
