"""Every citation of the project's method notes points at a section that exists in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "docs" / "method.md"
CITATION = re.compile(r"(?<![\w/])((?:docs/)?method\.md)(?: §(\d+))?")


def _sources() -> list[Path]:
    files = [ROOT / "README.md", *ROOT.glob("circuit_transfer/**/*.py"), *ROOT.glob("analyses/**/*.py")]
    files += ROOT.glob("analyses/results/**/*.md")
    return [f for f in files if f.is_file()]


def test_method_notes_exist_and_every_citation_names_one_of_their_sections():
    sections = set(re.findall(r"^## (\d+)\. ", NOTES.read_text(encoding="utf-8"), flags=re.M))
    assert sections >= {str(n) for n in range(1, 8)}
    cited = 0
    for path in _sources():
        for name, section in CITATION.findall(path.read_text(encoding="utf-8")):
            where = path.relative_to(ROOT)
            assert name == "docs/method.md", f"{where} cites {name!r}, which is not a path in the repository"
            assert section == "" or section in sections, f"{where} cites docs/method.md §{section}"
            cited += 1
    assert cited >= 20
