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


_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"
_TAG_NAMES = {
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "true or false",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a date or timestamp",
    "tag:yaml.org,2002:binary": "base64 binary data",
}


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.doc = YamlDocument(file, None)
        self.problems: list[Problem] = []
        self.constructor = yaml.SafeLoader("")
        self._building: set[int] = set()  # ids of collection nodes on the current path

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.doc._value_locs[path] = _loc(self.file, node)
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            if id(node) in self._building:
                self.problems.append(
                    Problem(_loc(self.file, node), "an alias may not refer to its own anchor")
                )
                return None
            self._building.add(id(node))
            try:
                if isinstance(node, yaml.MappingNode):
                    return self._mapping(node, path)
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            finally:
                self._building.discard(id(node))
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        if node.tag == _VALUE_TAG:  # a plain `=` (YAML 1.1 value key): just text
            return node.value
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self.constructor.recursive_objects.clear()  # left behind by the failed node
            self.problems.append(Problem(_loc(self.file, node), f"invalid YAML: {exc.problem}"))
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            # e.g. `2024-13-45` (resolved as a timestamp) or `!!int abc`. The value is not
            # repeated: it may be a secret. Date errors ("month must be in 1..12") are not.
            self.constructor.recursive_objects.clear()
            what = _TAG_NAMES.get(node.tag, node.tag)
            timestamp = node.tag == "tag:yaml.org,2002:timestamp"
            reason = f" ({exc})" if timestamp and isinstance(exc, ValueError) else ""
            self.problems.append(
                Problem(
                    _loc(self.file, node),
                    f"invalid YAML: this value does not read as {what}{reason}; "
                    "put it in quotes to keep it as text",
                )
            )
        return None

    def _key(self, node: yaml.Node) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self.problems.append(
                Problem(_loc(self.file, node), "mapping keys must be plain scalars")
            )
            return None
        key = self._scalar(node)
        if not isinstance(key, str | int | float | bool):
            if key is not None or node.tag == "tag:yaml.org,2002:null":
                self.problems.append(
                    Problem(_loc(self.file, node), "mapping keys must be plain scalars")
                )
            return None
        return key if isinstance(key, str) else str(key)

    def _merged(self, node: yaml.Node, seen: set[int]) -> list[tuple[yaml.Node, yaml.Node]]:
        """The pairs a `<<` value brings in, lowest precedence first (later ones win)."""
        if id(node) in seen:
            self.problems.append(
                Problem(_loc(self.file, node), "an alias may not refer to its own anchor")
            )
            return []
        if isinstance(node, yaml.MappingNode):
            return self._flat_pairs(node, seen | {id(node)})
        if isinstance(node, yaml.SequenceNode):
            pairs: list[tuple[yaml.Node, yaml.Node]] = []
            # the first mapping in `<<: [*a, *b]` wins, so it goes last
            for item in reversed(node.value):
                if isinstance(item, yaml.MappingNode):
                    pairs.extend(self._merged(item, seen))
                else:
                    self.problems.append(
                        Problem(_loc(self.file, item), "`<<` merges only mappings")
                    )
            return pairs
        self.problems.append(Problem(_loc(self.file, node), "`<<` merges only mappings"))
        return []

    def _flat_pairs(
        self, node: yaml.MappingNode, seen: set[int]
    ) -> list[tuple[yaml.Node, yaml.Node]]:
        """All pairs of a mapping with `<<` merges expanded, lowest precedence first."""
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        own: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.extend(self._merged(value_node, seen))
            else:
                own.append((key_node, value_node))
        return merged + own

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        # Keys merged in by `<<` are overridden silently by later ones and by the
        # mapping's own keys (YAML merge semantics); a key written twice is an error.
        chosen: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            for mkey_node, mvalue_node in self._merged(value_node, {id(node)}):
                key = self._key(mkey_node)
                if key is not None:
                    chosen.pop(key, None)  # keep document order of the winner
                    chosen[key] = (mkey_node, mvalue_node)
        own: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._key(key_node)
            if key is None:
                continue
            if key in own:
                self.problems.append(Problem(_loc(self.file, key_node), f"duplicate key {key!r}"))
                continue
            own.add(key)
            chosen.pop(key, None)
            chosen[key] = (key_node, value_node)
        result: dict[str, Any] = {}
        for key, (key_node, value_node) in chosen.items():
            self.doc._key_locs[(*path, key)] = _loc(self.file, key_node)
            result[key] = self.build(value_node, (*path, key))
        return result


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
        builder.doc.value = builder.build(node, ())
    if builder.problems:
        # an alias repeats its anchor's problems at the same place: report each once
        raise SourceError(dict.fromkeys(builder.problems))
    return builder.doc


def read_source(path: str | Path) -> str:
    """A source file's text; a missing, unreadable or non-UTF-8 file is a SourceError."""
    name = str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SourceError([Problem(Location(name, 1, 1), f"cannot read: {reason}")]) from None
    except UnicodeDecodeError as exc:
        raise SourceError(
            [Problem(Location(name, 1, 1), f"not UTF-8 text: {exc.reason}")]
        ) from None


def load_yaml(path: str | Path) -> YamlDocument:
    """Read and parse a YAML file; a missing or unreadable file is a SourceError too."""
    return parse_yaml(read_source(path), str(path))
