"""No dangling references in the documentation.

- every relative Markdown link in README.md and docs/*.md points at a file that exists,
  and its ``#anchor``, if any, at a heading of that file (GitHub's heading ids);
- every ``docs/….md`` mention in README.md, docs/*.md and mlseal/**/*.py names a file
  that exists (and, written ``docs/x.md#anchor``, a heading in it);
- no file mentions the retired design notes by their old name: the contract is
  docs/design.md;
- every test a threat-model entry cites (``tests/test_x.py::test_name``) exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
SOURCES = sorted((REPO / "mlseal").rglob("*.py"))
#: the retired file's name, spelt so that this file does not mention it
OLD_NAME = "DESIGN" + ".md"

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_MENTION = re.compile(r"(?<![\w/.-])(docs/[\w./-]+?\.md)(#[\w-]+)?")
_TEST_REF = re.compile(r"(tests/test_\w+\.py)::(test_\w+)")


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def slug(heading: str) -> str:
    """GitHub's id for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    text = text.lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading id of a Markdown file, with GitHub's -1, -2 … for repeats."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for m in re.finditer(r"^#{1,6} (.+?)#*$", _FENCE.sub("", path.read_text()), re.M):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def check_target(source: Path, target: str, base: Path) -> str | None:
    """Why ``target`` (a path, maybe with #anchor) seen in ``source`` dangles, or None."""
    path_part, _, anchor = target.partition("#")
    dest = source if not path_part else (base / path_part)
    if not dest.exists():
        return f"{rel(source)}: {target} -> no file {path_part}"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"{rel(source)}: {target} -> {rel(dest.resolve())} has no heading #{anchor}"
    return None


def test_relative_markdown_links_resolve() -> None:
    problems = []
    for doc in DOCS:
        for m in _LINK.finditer(_FENCE.sub("", doc.read_text())):
            target = m.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, …
                continue
            why = check_target(doc, target, doc.parent)
            if why:
                problems.append(why)
    assert not problems, "dangling links:\n" + "\n".join(problems)


def test_docs_mentions_name_existing_files() -> None:
    problems = []
    for source in [*DOCS, *SOURCES]:
        for m in _MENTION.finditer(source.read_text()):
            why = check_target(source, m.group(1) + (m.group(2) or ""), REPO)
            if why:
                problems.append(why)
    assert not problems, "mentions of missing docs:\n" + "\n".join(problems)


def test_nothing_mentions_the_retired_design_notes() -> None:
    hits = [f"{rel(p)}:{i}" for p in [*DOCS, *SOURCES]
            for i, line in enumerate(p.read_text().splitlines(), 1) if OLD_NAME in line]
    assert not hits, f"these lines still name {OLD_NAME} (the contract is docs/design.md): {hits}"


def test_threat_model_cites_tests_that_exist() -> None:
    text = (REPO / "docs" / "threat-model.md").read_text()
    cited = set(_TEST_REF.findall(text))
    assert cited, "docs/threat-model.md cites no tests"
    missing = []
    for file, name in sorted(cited):
        path = REPO / file
        if not path.exists() or not re.search(rf"^\s*(async\s+)?def {name}\(", path.read_text(), re.M):
            missing.append(f"{file}::{name}")
    assert not missing, f"docs/threat-model.md cites tests that do not exist: {missing}"


@pytest.mark.parametrize(("heading", "expected"), [
    ("## `mlseal fetch`: the verifying model loader", "mlseal-fetch-the-verifying-model-loader"),
    ("### Gates (`mlseal.gates`)", "gates-mlsealgates"),
    ("## 2. Who may sign what: the trust file", "2-who-may-sign-what-the-trust-file"),
    ("## The webhook's HTTP interface", "the-webhooks-http-interface"),
    ("## Deploying (`infra/k8s/`, kustomize)", "deploying-infrak8s-kustomize"),
])
def test_slug_follows_github(heading: str, expected: str) -> None:
    assert slug(heading.lstrip("# ")) == expected


def test_the_checks_catch_what_they_guard(tmp_path: Path) -> None:
    doc = tmp_path / "a.md"
    doc.write_text("# Title\n\n## Second part\n")
    assert check_target(doc, "#second-part", tmp_path) is None
    assert check_target(doc, "#nowhere", tmp_path) is not None
    assert check_target(doc, "b.md", tmp_path) is not None
    assert _LINK.findall("see [the guide](docs/x.md#y) and ![img](pic.png)") == ["docs/x.md#y"]
    assert [m.group(1) for m in _MENTION.finditer("(docs/design.md, CLI) and mydocs/x.md")] == ["docs/design.md"]
