"""YAML documents that remember where every key and value came from.

Config, rule and scenario files are parsed into plain Python values plus a table of
locations, so every later validation error can say `path:line:col: message`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

try:  # the C loader is much faster on large scenario files
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a source file; line and column count from 1."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class Problem:
    location: Location
    message: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.location}: {prefix}{self.message}"


class SourceError(Exception):
    """One or more problems found in a source file, each with its location."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(slots=True)
class YamlDocument:
    """A parsed YAML document: its value and where each part of it stands."""

    file: str
    value: Any
    _value_locs: dict[KeyPath, Location] = field(default_factory=dict)
    _key_locs: dict[KeyPath, Location] = field(default_factory=dict)

    def at(self, path: KeyPath) -> Location:
        """Where the value at `path` stands, or its nearest existing ancestor."""
        for i in range(len(path), -1, -1):
            loc = self._value_locs.get(path[:i])
            if loc is not None:
                return loc
        return Location(self.file, 1, 1)

    def key_at(self, path: KeyPath) -> Location:
        """Where the mapping key that ends `path` stands (for unknown-key errors)."""
        return self._key_locs.get(path) or self.at(path)

    def problem(self, path: KeyPath, message: str, *, key: bool = False) -> Problem:
        return Problem(self.key_at(path) if key else self.at(path), message)

    def sub(self, prefix: KeyPath) -> Iterator[tuple[KeyPath, Location]]:
        """Every recorded value location under `prefix` (for re-basing documents)."""
        n = len(prefix)
        for path, loc in self._value_locs.items():
            if path[:n] == prefix:
                yield path, loc


def _loc(file: str, node: yaml.Node) -> Location:
    mark = node.start_mark
    return Location(file, mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.doc = YamlDocument(file, None)
        self.problems: list[Problem] = []
        self.constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.doc._value_locs[path] = _loc(self.file, node)
        if isinstance(node, yaml.MappingNode):
            self.constructor.flatten_mapping(node)  # resolves `<<` merge keys
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.constructor.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool) or key is None:
                    self.problems.append(
                        Problem(_loc(self.file, key_node), "mapping keys must be plain scalars")
                    )
                    continue
                key = str(key) if not isinstance(key, str) else key
                if key in result:
                    self.problems.append(
                        Problem(_loc(self.file, key_node), f"duplicate key {key!r}")
                    )
                    continue
                self.doc._key_locs[(*path, key)] = _loc(self.file, key_node)
                result[key] = self.build(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.constructor.construct_object(node, deep=True)


def parse_yaml(text: str, file: str) -> YamlDocument:
    """Parse one YAML document; raise SourceError with locations on any problem."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        raise SourceError([Problem(loc, f"invalid YAML: {exc.problem or exc}")]) from None
    except yaml.YAMLError as exc:
        raise SourceError([Problem(Location(file, 1, 1), f"invalid YAML: {exc}")]) from None
    builder = _Builder(file)
    if node is not None:
        try:
            builder.doc.value = builder.build(node, ())
        except yaml.constructor.ConstructorError as exc:
            mark = exc.problem_mark
            loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
            raise SourceError([Problem(loc, f"invalid YAML: {exc.problem}")]) from None
    if builder.problems:
        raise SourceError(builder.problems)
    return builder.doc


def load_yaml(path: str | Path) -> YamlDocument:
    """Read and parse a YAML file; a missing or unreadable file is a SourceError too."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SourceError([Problem(Location(name, 1, 1), f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise SourceError(
            [Problem(Location(name, 1, 1), f"not UTF-8 text: {exc.reason}")]
        ) from None
    return parse_yaml(text, name)
