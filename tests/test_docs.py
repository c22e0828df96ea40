"""The repository's markdown files point only at what the repository holds: every
relative link resolves, every `path/in/backticks` that starts at a folder of the
repository (or of the document's own folder) exists, and no absolute path leads to a
developer's machine (`/work/...`, `/home/...`)."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SKIPPED_DIRS = {"build", "dist", "node_modules", "__pycache__"}
_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE = re.compile(r"(`+)(.+?)\1")
_PATH = re.compile(r"[\w.-]+(?:/[\w.*-]+)+/?")
#: Where a developer's files live, never a deployment's (/etc, /run, /var ... are).
_MACHINE_ROOTS = ("/work/", "/home/", "/Users/", "/root/", "/mnt/", "/tmp/")


def markdown_files() -> list[Path]:
    return sorted(
        path
        for path in REPO.rglob("*.md")
        if not any(
            part.startswith(".") or part in _SKIPPED_DIRS or part.endswith(".egg-info")
            for part in path.relative_to(REPO).parts[:-1]
        )
    )


def _prose(text: str) -> str:
    """The text outside fenced code blocks (commands there name the reader's files)."""
    return _FENCE.sub("", text)


def _exists(base: Path, target: str) -> bool:
    if any(ch in target for ch in "*?["):
        return any(base.glob(target))
    return (base / target).exists()


def problems_of(doc: Path, repo: Path = REPO) -> list[str]:
    text = _prose(doc.read_text(encoding="utf-8"))
    name = doc.relative_to(repo)
    found: list[str] = []
    for match in _LINK.finditer(text):
        target = match[1]
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same page
        path = target.split("#", 1)[0]
        if path.startswith(_MACHINE_ROOTS) or path.startswith("/"):
            found.append(f"{name}: link to {target} outside the repository")
        elif not (doc.parent / path).exists() or not (
            (doc.parent / path).resolve().is_relative_to(repo.resolve())
        ):
            found.append(f"{name}: link to {target} does not resolve in the repository")
    for match in _CODE.finditer(text):
        code = match[2].strip()
        for token in code.split():
            if token.startswith(_MACHINE_ROOTS):
                found.append(f"{name}: `{code}` points outside the repository")
        word = code.split()[0] if code.split() else ""
        if not _PATH.fullmatch(word) or "{" in word or "<" in word:
            continue
        head = word.split("/", 1)[0]
        if head in (".", ".."):
            continue  # the reader's folder
        bases = [base for base in (repo, doc.parent) if (base / head).is_dir()]
        if bases and not any(_exists(base, word) for base in bases):
            found.append(f"{name}: `{word}` does not exist in the repository")
    return found


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_markdown_points_only_inside_the_repository(doc: Path) -> None:
    assert problems_of(doc) == []


def test_the_checker_finds_what_it_is_for(tmp_path: Path) -> None:
    for folder in ("monitor/simulator", "rules", "deploy"):
        (tmp_path / folder).mkdir(parents=True)
    for file in ("monitor/simulator/README.md", "monitor/simulator/templates.py"):
        (tmp_path / file).write_text("")
    (tmp_path / "rules" / "capital.yaml").write_text("")
    (tmp_path / "deploy" / "install.sh").write_text("")
    (tmp_path.parent / "SPEC.md").write_text("")  # beside the repository, not in it
    doc = tmp_path / "monitor" / "simulator" / "probe.md"
    doc.write_text(
        "See [the spec](../../../SPEC.md), [ok](README.md), [web](https://example.com), "
        "`/work/shared/VENUES.md`, `monitor/nothing_here.py`, `rules/*.yaml`, "
        "`templates.py`, `deploy/install.sh PREFIX`, `riskmon/events/{severity}`, "
        "`/etc/riskmon/riskmon.yaml`, `./secrets`.\n```sh\ncat /work/in/code/blocks\n```\n",
        encoding="utf-8",
    )
    assert problems_of(doc, tmp_path) == [
        "monitor/simulator/probe.md: link to ../../../SPEC.md does not resolve in the repository",
        "monitor/simulator/probe.md: `/work/shared/VENUES.md` points outside the repository",
        "monitor/simulator/probe.md: `monitor/nothing_here.py` does not exist in the repository",
    ]


# The README's rule-test series examples: in the README, and what `riskmon test` reads.
SERIES_EXAMPLES = {
    "`1+2x3` is 1 3 5 7": ("1+2x3", ["1", "3", "5", "7"]),
    "`10-1x2` is 10 9 8": ("10-1x2", ["10", "9", "8"]),
    "`24000x6` is seven": ("24000x6", ["24000"] * 7),
    "`5x0` one": ("5x0", ["5"]),
    "`_x2` three missing": ("_x2", [None] * 3),
    "`a+b` without `xN` | just a": ("1+2", ["1"]),
    '`"30000 28000 24000x6"` is nine snapshots: 30000, 28000, then 24000 seven times': (
        "30000 28000 24000x6",
        ["30000", "28000", *["24000"] * 7],
    ),
    "`true`, `false` | a boolean": ("true false", [True, False]),
    "`0.25` | that number, an exact decimal": ("0.25 -5", ["0.25", "-5"]),
}


def _shown(value: object) -> object:
    """A parsed value as the examples write it: a number's text, a bool, None for `_`."""
    if isinstance(value, bool):
        return value
    return str(value) if isinstance(value, Decimal) else None


@pytest.mark.parametrize(("text", "example"), SERIES_EXAMPLES.items())
def test_the_readmes_series_examples_are_what_riskmon_test_reads(
    text: str, example: tuple[str, list[object]]
) -> None:
    from monitor.engine.testing import parse_series

    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert text in readme
    series, values = example
    assert [_shown(v) for v in parse_series(series)] == values


@pytest.mark.parametrize("term", ["1e5", ".5", "1_000", "true+1"])
def test_the_terms_the_readme_rules_out_are_refused(term: str) -> None:
    from monitor.engine.testing import parse_series

    with pytest.raises(ValueError, match="bad series term"):
        parse_series(term)
