"""The documentation: every relative link in README.md and docs/*.md leads somewhere, and the README's results
table is the one on the results page.

A link is checked as GitHub renders it: its file (or folder) must exist relative to the page, and its
``#anchor`` must be a heading of the page it names, slugged by GitHub's rule (lower case; every character but
letters, digits, ``_``, ``-`` and spaces dropped; spaces to hyphens; a repeated slug gets ``-1``, ``-2``, ...).
Links to web addresses are not fetched. Code (fenced blocks, inline spans) holds no links.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose(text: str) -> list[str]:
    """The page's lines outside fenced code, with inline code spans blanked."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else re.sub(r"`[^`]*`", "``", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())        # a link's text only
    text = re.sub(r"<[^>]+>", "", text).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page, repeated slugs numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        heading = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not heading:
            continue
        base = slug(heading.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in the page's prose."""
    return [(number, match.group(1))
            for number, line in enumerate(prose(page.read_text(encoding="utf-8")), start=1)
            for match in LINK.finditer(line)]


def test_the_slug_rule_matches_githubs_on_known_headings():
    assert slug("`make demo`: four conditions at the demo's budget") == "make-demo-four-conditions-at-the-demos-budget"
    assert slug("The paper's models and ours") == "the-papers-models-and-ours"
    assert slug("Results at a glance") == "results-at-a-glance"
    assert slug("Renewed values (`sets`)") == "renewed-values-sets"
    assert slug("Tests and benchmarks") == "tests-and-benchmarks"


def test_the_checker_finds_links_outside_code_only(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\nSee [a](b.md#c) and ![img](d.png \"t\").\n\n```\n[not](e.md)\n```\n"
                    "`[nor](f.md)` but [g](https://example.org) [h](#title)\n## Title\n")
    assert [target for _, target in links(page)] == ["b.md#c", "d.png", "https://example.org", "#title"]
    assert anchors(page) == {"title", "title-1"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for number, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):           # https:, mailto: ...: not fetched
            continue
        path, _, anchor = target.partition("#")
        goal = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(ROOT)}:{number}: {target}"
        if not goal.exists():
            broken.append(f"{where}: no such file")
        elif anchor and goal.suffix == ".md" and anchor not in anchors(goal):
            broken.append(f"{where}: no heading with that anchor in {goal.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_reached_from_the_readme_or_the_docs_index():
    linked = set()
    for page in (ROOT / "README.md", ROOT / "docs" / "README.md"):
        for _, target in links(page):
            path = target.partition("#")[0]
            if path:
                linked.add((page.parent / path).resolve())
    unreached = [p.name for p in PAGES[1:] if p.name != "README.md" and p.resolve() not in linked]
    assert not unreached, f"docs pages linked from neither README.md nor docs/README.md: {unreached}"


def _glance_table(page: Path) -> list[str]:
    lines = page.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| domain | compiled SmolLM2-135M"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return lines[start:end]


def test_the_readmes_results_table_is_the_results_pages():
    assert _glance_table(ROOT / "README.md") == _glance_table(ROOT / "docs" / "results.md")
