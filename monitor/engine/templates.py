"""Label and annotation templates: Jinja2 in its immutable sandbox, compiled once at load.

A template sees `render_context(snapshot, params)`: every top-level snapshot field (nested
ones through their parents: `{{ margin_details.usage.used }}`), `venue`, `venue_kind`,
`account`, `currency`, `labels` and `params`. Decimals print as their exact text
(`24000.00`, never `2.4E+4`), booleans as `true`/`false`, a missing field as
`<missing: name>`.

Rendering never raises: a template that fails (a missing field used in arithmetic, a
filter given the wrong type) renders `<template error: ...> {source}` and logs the
failure once, with the template's location. Output is capped at `MAX_OUTPUT_CHARS`.
Templates are written by the rule authors, so the sandbox is a guard against mistakes
(no attribute internals, no mutation, bounded `range`, `*` and `**`), not a jail for
hostile input.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, Final, NoReturn

import jinja2
import structlog
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from monitor.snapshot import Snapshot
from monitor.yamlsource import Location, Problem, SourceError

__all__ = [
    "MAX_OUTPUT_CHARS",
    "CompiledTemplate",
    "compile_template",
    "render_context",
]

#: Longest rendered text; longer output is cut and ends with "...".
MAX_OUTPUT_CHARS: Final = 4096
#: Largest operand of `**` and largest repetition of `*` on text or lists.
_MAX_POWER: Final = 1000
_MAX_REPEAT: Final = MAX_OUTPUT_CHARS
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
        return format(value, "f")
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value


def _refuse(message: str) -> NoReturn:
    raise SecurityError(message)


class _Environment(ImmutableSandboxedEnvironment):
    """The immutable sandbox with `*` and `**` bounded (no `"x" * 10**9`)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        if op == "**":
            if _is_number(right) and abs(right) > _MAX_POWER:
                _refuse(f"exponent {right} is too large (at most {_MAX_POWER})")
            if _is_number(left) and abs(left) > 10**_MAX_POWER:
                _refuse("base of ** is too large")
            return operator.pow(left, right)
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and _is_number(count) and count > _MAX_REPEAT:
                _refuse(f"repeating {count} times is too many (at most {_MAX_REPEAT})")
        return operator.mul(left, right)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


_ENV: Final = _Environment(
    autoescape=False,
    undefined=_Missing,
    finalize=_finalize,
    keep_trailing_newline=True,
    auto_reload=False,
    cache_size=0,
)
_GLOBALS: Final = frozenset(_ENV.globals)


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
            return _cap_stream(self._template.generate(context))
        except Exception as exc:
            message = _error_text(exc)
            self._log_failure(message)
            return _cap(f"<template error: {message}> {self.source}")

    def _log_failure(self, message: str) -> None:
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


def _error_text(exc: BaseException) -> str:
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
        template = _ENV.from_string(tree)
    except jinja2.TemplateSyntaxError as exc:
        raise SourceError([Problem(_line_location(where, exc.lineno), _syntax(exc))]) from None
    except (RecursionError, MemoryError) as exc:  # absurdly nested input
        raise SourceError([Problem(where, f"invalid template: {type(exc).__name__}")]) from None
    return CompiledTemplate(source, template, _template_fields(tree), where)


def _syntax(exc: jinja2.TemplateSyntaxError) -> str:
    return f"invalid template: {' '.join(str(exc.message or exc).split())}"


def _line_location(where: Location, lineno: int) -> Location:
    if lineno <= 1:
        return where
    return Location(where.file, where.line + lineno - 1, 1)


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
