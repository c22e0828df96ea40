"""Load-time bounds of templates: what cannot be bounded is refused, with its place.

`template_problems` lists, as (offset in the source, message), the constructs a rule's
template may not use: `**`, `range` over more than `MAX_LOOP_ITEMS` numbers or over
bounds that are not literal, loops nested more than `MAX_LOOP_DEPTH` deep, recursive
loops, macros, call/filter/set blocks, includes and imports, methods that build large
text from small arguments (`"x".ljust(10**9)`), and literal repetitions past
`MAX_VALUE_CHARS`. `bound_tree` then routes every loop's items and every `~` result
through the run-time checks of `monitor.engine.template_limits`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from jinja2 import nodes
from jinja2.visitor import NodeTransformer

from monitor.engine.template_limits import (
    LOOP_FILTER,
    MAX_LOOP_ITEMS,
    MAX_VALUE_CHARS,
    TEXT_FILTER,
)

__all__ = ["MAX_LOOP_DEPTH", "UNBOUNDED_METHODS", "bound_tree", "template_problems"]

MAX_LOOP_DEPTH: Final = 2

#: Methods that build large values from small arguments; the `replace` and `join`
#: filters do the useful ones within bounds.
UNBOUNDED_METHODS: Final = frozenset(
    {
        "center",
        "ljust",
        "rjust",
        "zfill",
        "expandtabs",
        "replace",
        "join",
        "translate",
        "as_integer_ratio",
        "to_bytes",
    }
)

#: Statements a template may not use: (node type, how it is written, what to search for).
_UNSUPPORTED: Final[tuple[tuple[type[nodes.Node], str, str], ...]] = (
    (nodes.Macro, "{% macro %}", "macro"),
    (nodes.CallBlock, "{% call %}", "call"),
    (nodes.Include, "{% include %}", "include"),
    (nodes.Import, "{% import %}", "import"),
    (nodes.FromImport, "{% from ... import %}", "from"),
    (nodes.Extends, "{% extends %}", "extends"),
    (nodes.Block, "{% block %}", "block"),
    (nodes.FilterBlock, "{% filter %} blocks (apply the filter to a value)", "filter"),
    (nodes.AssignBlock, "{% set %}...{% endset %} blocks (use {% set x = ... %})", "set"),
)

_Found = tuple[int, str]  # (offset in the source, message)


def template_problems(tree: nodes.Template, source: str) -> list[_Found]:
    """What in the template cannot be bounded, in source order."""
    lines = source.split("\n")
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)

    def at(node: nodes.Node, needle: str) -> int:
        index = min(max(node.lineno, 1), len(lines)) - 1
        column = lines[index].find(needle)
        return starts[index] + max(column, 0)

    found = [(at(node, needle), message) for node, needle, message in _walk(tree, 0)]
    return sorted(found)


def _walk(node: nodes.Node, loops: int) -> Iterator[tuple[nodes.Node, str, str]]:
    for kind, written, needle in _UNSUPPORTED:
        if isinstance(node, kind):
            yield node, needle, f"{written} is not supported in riskmon templates"
    if isinstance(node, nodes.For):
        loops += 1
        if loops > MAX_LOOP_DEPTH:
            yield node, "for", f"loops nested more than {MAX_LOOP_DEPTH} deep"
        if node.recursive:
            yield node, "recursive", "recursive loops are not supported in riskmon templates"
    elif isinstance(node, nodes.Pow):
        yield (
            node,
            "**",
            "** is not supported in templates: a power can take unbounded time and memory",
        )
    elif isinstance(node, nodes.Mul):
        yield from _literal_repeat(node)
    elif isinstance(node, nodes.Call):
        yield from _range_call(node)
    elif isinstance(node, nodes.Getattr) and node.attr in UNBOUNDED_METHODS:
        name = node.attr
        hint = f"; use the {name} filter" if name in ("replace", "join") else ""
        message = f"{name}() is not supported in templates: it can build unbounded text{hint}"
        yield node, name, message
    for child in node.iter_child_nodes():
        yield from _walk(child, loops)


def _literal_repeat(node: nodes.Mul) -> Iterator[tuple[nodes.Node, str, str]]:
    for seq, count in ((node.left, node.right), (node.right, node.left)):
        if not (isinstance(count, nodes.Const) and type(count.value) is int):
            continue
        size: int | None = None
        if isinstance(seq, nodes.Const) and isinstance(seq.value, str):
            size = len(seq.value)
        elif isinstance(seq, nodes.List | nodes.Tuple):
            size = len(seq.items)
        if size is not None and size * count.value > MAX_VALUE_CHARS:
            yield node, "*", f"this * builds more than {MAX_VALUE_CHARS} characters or items"


def _range_call(node: nodes.Call) -> Iterator[tuple[nodes.Node, str, str]]:
    if not (isinstance(node.node, nodes.Name) and node.node.name == "range"):
        return
    bounds = [arg.value for arg in node.args if isinstance(arg, nodes.Const)]
    literal = (
        len(bounds) == len(node.args)
        and 1 <= len(bounds) <= 3
        and all(type(b) is int for b in bounds)
        and not node.kwargs
        and node.dyn_args is None
        and node.dyn_kwargs is None
    )
    if not literal:
        yield node, "range", "range() needs literal whole numbers (range(5), range(1, 10))"
        return
    try:
        size = len(range(*bounds))
    except (ValueError, OverflowError):  # a step of 0; more numbers than fit in memory
        size = MAX_LOOP_ITEMS + 1
    if size > MAX_LOOP_ITEMS:
        yield node, "range", f"range() over more than {MAX_LOOP_ITEMS} numbers"


class _Bounder(NodeTransformer):
    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _filtered(node.iter, LOOP_FILTER)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _filtered(node, TEXT_FILTER)


def _filtered(node: nodes.Node, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


def bound_tree(tree: nodes.Template) -> nodes.Template:
    """The tree with each loop's items and each `~` result checked as the render runs."""
    bounded = _Bounder().visit(tree)
    assert isinstance(bounded, nodes.Template)
    return bounded
