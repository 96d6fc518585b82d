"""The README and docs/ link only to files that exist inside the repo, and the README opens
with the two commands CI and a new user run."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_point_to_files_in_the_repo(doc: Path):
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(REPO), f"{doc.name} links outside the repo: {target}"
        assert path.exists(), f"{doc.name} links to a missing file: {target}"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    head = (REPO / "README.md").read_text(encoding="utf-8").splitlines()[:6]
    assert any(line.startswith("make chat") for line in head) and any(line.startswith("make test") for line in head)
    assert "make test" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
