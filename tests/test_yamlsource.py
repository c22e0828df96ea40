"""YAML documents that remember where every key and value came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.yamlsource import Location, Problem, SourceError, load_yaml, parse_yaml


def problems(text: str) -> list[str]:
    with pytest.raises(SourceError) as info:
        parse_yaml(text, "f.yaml")
    return [str(p) for p in info.value.problems]


def test_values_and_locations() -> None:
    doc = parse_yaml("a: 1\nb:\n  - x\n  - {c: true}\n", "f.yaml")
    assert doc.value == {"a": 1, "b": ["x", {"c": True}]}
    assert doc.at(("a",)) == Location("f.yaml", 1, 4)
    assert doc.at(("b", 0)) == Location("f.yaml", 3, 5)
    assert doc.at(("b", 1, "c")) == Location("f.yaml", 4, 9)
    assert doc.key_at(("b", 1, "c")) == Location("f.yaml", 4, 6)
    assert doc.key_at(("b",)) == Location("f.yaml", 2, 1)


def test_at_falls_back_to_the_nearest_ancestor() -> None:
    doc = parse_yaml("a:\n  b: 1\n", "f.yaml")
    assert doc.at(("a", "missing", 3)) == doc.at(("a",)) == Location("f.yaml", 2, 3)
    assert doc.key_at(("a", "missing")) == Location("f.yaml", 2, 3)
    assert parse_yaml("", "f.yaml").at(("x",)) == Location("f.yaml", 1, 1)


def test_problem_and_its_text() -> None:
    doc = parse_yaml("a:\n  b: 1\n", "f.yaml")
    assert str(doc.problem(("a", "b"), "too small")) == "f.yaml:2:6: too small"
    assert str(doc.problem(("a", "b"), "bad key", key=True)) == "f.yaml:2:3: bad key"
    warning = Problem(Location("f.yaml", 1, 2), "old", severity="warning")
    assert str(warning) == "f.yaml:1:2: warning: old"


def test_source_error_holds_every_problem() -> None:
    error = SourceError([Problem(Location("f", 1, 1), "one"), Problem(Location("f", 2, 1), "two")])
    assert len(error.problems) == 2
    assert str(error) == "f:1:1: one\nf:2:1: two"


def test_sub_lists_locations_under_a_prefix() -> None:
    doc = parse_yaml("a: {b: 1, c: [2]}\nd: 3\n", "f.yaml")
    assert {path for path, _ in doc.sub(("a",))} == {("a",), ("a", "b"), ("a", "c"), ("a", "c", 0)}


# The wording of syntax errors depends on whether PyYAML uses libyaml; the place does not.
def test_syntax_error_is_located() -> None:
    [message] = problems("a: [1, 2\nb: 3\n")
    assert message.startswith("f.yaml:2:2: invalid YAML: ")
    assert "','" in message


def test_tab_indentation_is_a_located_error() -> None:
    [message] = problems("a:\n\tb: 1\n")
    assert message.startswith("f.yaml:2:1: invalid YAML: found character")


def test_duplicate_keys_are_all_reported() -> None:
    assert problems("a: 1\nb: 2\na: 3\nb: 4\n") == [
        "f.yaml:3:1: duplicate key 'a'",
        "f.yaml:4:1: duplicate key 'b'",
    ]


def test_keys_become_text() -> None:
    assert parse_yaml("1: a\ntrue: b\n1.5: c\n", "f.yaml").value == {
        "1": "a",
        "True": "b",
        "1.5": "c",
    }


def test_complex_and_null_keys_are_errors() -> None:
    assert problems("? [1, 2]\n: 3\n~: 4\n") == [
        "f.yaml:1:3: mapping keys must be plain scalars",
        "f.yaml:3:1: mapping keys must be plain scalars",
    ]


def test_more_than_one_document_is_an_error() -> None:
    [message] = problems("a: 1\n---\nb: 2\n")
    assert message.startswith("f.yaml:2:1: invalid YAML: ")


def test_unsafe_tags_are_refused() -> None:
    [message] = problems("a: !!python/object:os.system x\n")
    assert message.startswith("f.yaml:1:4: invalid YAML: could not determine a constructor")


def test_values_that_do_not_read_as_their_type_are_located_errors() -> None:
    assert problems("when: 2024-13-45\nn: !!int abc\n") == [
        "f.yaml:1:7: invalid YAML: this value does not read as a date or timestamp "
        "(month must be in 1..12); put it in quotes to keep it as text",
        "f.yaml:2:4: invalid YAML: this value does not read as an integer; "
        "put it in quotes to keep it as text",
    ]


def test_merge_keys_are_overridden_by_the_mapping_own_keys() -> None:
    text = """\
defaults: &defaults {poll_interval: 2s, timeout: 5s}
venue:
  <<: *defaults
  timeout: 1s
"""
    doc = parse_yaml(text, "f.yaml")
    assert doc.value["venue"] == {"poll_interval": "2s", "timeout": "1s"}
    assert doc.at(("venue", "timeout")) == Location("f.yaml", 4, 12)
    assert doc.at(("venue", "poll_interval")) == Location("f.yaml", 1, 37)


def test_merge_of_several_mappings_the_first_wins() -> None:
    text = "a: &a {k: 1}\nb: &b {k: 2, j: 3}\nc: {<<: [*a, *b]}\n"
    assert parse_yaml(text, "f.yaml").value["c"] == {"k": 1, "j": 3}


def test_an_anchor_used_twice_keeps_its_merges() -> None:
    text = "base: &base {a: 1}\nmid: &mid {<<: *base, a: 2}\nx: *mid\ny: *mid\n"
    value = parse_yaml(text, "f.yaml").value
    assert value["x"] == value["y"] == {"a": 2}


def test_recursive_alias_is_an_error_not_a_crash() -> None:
    assert problems("a: &x [1, *x]\n") == ["f.yaml:1:4: an alias may not refer to its own anchor"]
    assert problems("a: &x {b: 1, <<: *x}\n") == [
        "f.yaml:1:4: an alias may not refer to its own anchor"
    ]


def test_a_problem_repeated_through_an_alias_is_reported_once() -> None:
    assert len(problems("a: &x 2024-13-45\nb: *x\nc: *x\n")) == 1


def test_merging_a_scalar_is_an_error() -> None:
    assert problems("a: {<<: 1}\n") == ["f.yaml:1:9: `<<` merges only mappings"]


def test_empty_document() -> None:
    assert parse_yaml("# nothing\n", "f.yaml").value is None


def test_load_yaml_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("a: 1\n")
    doc = load_yaml(path)
    assert doc.value == {"a": 1}
    assert doc.at(("a",)) == Location(str(path), 1, 4)


def test_load_yaml_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        load_yaml(tmp_path / "nope.yaml")
    assert (
        str(info.value) == f"{tmp_path / 'nope.yaml'}:1:1: cannot read: No such file or directory"
    )


def test_load_yaml_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_bytes(b"a: \xff\n")
    with pytest.raises(SourceError) as info:
        load_yaml(path)
    assert str(info.value) == f"{path}:1:1: not UTF-8 text: invalid start byte"
