"""The README and the docs/ pages render as written: every markdown table keeps one cell count, and every
relative link of the README points at a file (and heading) that exists.

`mkdocs build --strict` (run by scripts/test.sh) checks the links of the docs/ pages and the API references; it
does not see the README, which GitHub renders, and it does not see a table row whose cells outnumber the header's
(GitHub then prints the row as literal pipes, as happened when a paragraph was spliced into the README's stage
table). These tests cover both.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PAGES = sorted([REPO / "README.md", REPO / "configs" / "recipes" / "README.md", *(REPO / "docs").rglob("*.md")])
DELIMITER = re.compile(r"^\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def cells(row: str) -> int:
    """The number of cells of a table row, as GitHub counts them: split on pipes not escaped by a backslash
    (a pipe inside a code span splits too), the outer pipes being optional."""
    body = row.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return len(re.split(r"(?<!\\)\|", body))


def table_errors(text: str, name: str = "page") -> list[str]:
    """`name:line: ...` for every table row (and delimiter row) whose cell count differs from its header's, and
    for every row-like line (starting with a pipe) that belongs to no table."""
    lines = text.splitlines()
    errors, fenced, i = [], False, 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            fenced = not fenced
        elif not fenced and "|" in lines[i] and i + 1 < len(lines) and DELIMITER.match(lines[i + 1]):
            want = cells(lines[i])
            j = i + 1
            while j < len(lines) and lines[j].strip() and "|" in lines[j]:
                if cells(lines[j]) != want:
                    errors.append(f"{name}:{j + 1}: {cells(lines[j])} cells, the header has {want}: {lines[j][:80]!r}")
                j += 1
            i = j
            continue
        elif not fenced and lines[i].lstrip().startswith("|"):
            errors.append(f"{name}:{i + 1}: a table row outside any table (GitHub shows its pipes): {lines[i][:80]!r}")
        i += 1
    return errors


def test_a_spliced_row_is_found() -> None:
    good = "| a | b |\n|---|---|\n| 1 | 2 |\n"
    assert table_errors(good) == []
    assert table_errors("```\n| a | b |\n|---|---|\n| 1 |\n```\n") == []  # code blocks are not tables
    assert table_errors("| a | b |\n|---|---|\n| x \\| y | 2 |\n") == []  # an escaped pipe is text
    spliced = good + "| 3 | 4 | a paragraph that lost its blank line | more |\n"
    assert table_errors(spliced, "R.md") == [
        "R.md:4: 4 cells, the header has 2: '| 3 | 4 | a paragraph that lost its blank line | more |'"
    ]
    assert table_errors("| a | b |\n|---|---|---|\n| 1 | 2 |\n", "R.md")[0].startswith("R.md:2: 3 cells")
    # the README's stage table once had a paragraph spliced into a row: that row lost a cell, and the rows after
    # the paragraph belonged to no table
    broken = "| stage | command | module |\n|---|---|---|\n| info | **HumanOmni.** loads\nthe paper's checkpoints.\n\n"
    broken += "`ecr model info` | `ecr.models.info` |\n| check | `ecr model check` | `ecr.models.layout` |\n"
    broken += "| label | `ecr label` | `ecr.teachers` |\n"
    assert [e.split(":")[1] for e in table_errors(broken)] == ["3", "7", "8"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_table_keeps_its_cell_count(page: Path) -> None:
    errors = table_errors(page.read_text(), str(page.relative_to(REPO)))
    assert not errors, "\n".join(errors)


def slug(heading: str) -> str:
    """The anchor GitHub and mkdocs give a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def test_the_readme_links_point_at_files_and_headings() -> None:
    text = re.sub(r"```.*?```", "", (REPO / "README.md").read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = REPO / path
        if not file.exists():
            broken.append(target)
        elif anchor:
            headings = re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)
            if anchor not in {slug(h) for h in headings}:
                broken.append(target)
    assert not broken, f"README.md links to missing files or headings: {broken}"


def test_the_readme_is_a_front_door() -> None:
    """Short, the two commands as they are, and the own-data section holding only its markers (a test of the
    lead's fills it)."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "\n./scripts/demo.sh\n" in text and "\n./scripts/test.sh\n" in text
    section = text.split("## Your own data\n", 1)[1].split("\n## ", 1)[0]
    assert "<!-- own-data:begin -->" in section and "<!-- own-data:end -->" in section
    assert ".venv/bin/mkdocs serve" in text
