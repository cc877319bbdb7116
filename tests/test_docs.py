"""The docs name files and modules that exist, and quote no measured figures by hand.

Measured figures live in the README's block between ``<!-- figures:begin -->`` and
``<!-- figures:end -->``, written from the benchmarks' JSON by
``python -m benchmarks.figures``; nowhere else in the docs.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "benchmarks" / "README.md",
               *(ROOT / "docs").glob("*.md")])
#: a measured rate or duration: "16.3k events/s", "298.7 M/s", "~10–30 ms", "1 µs"
FIGURE = re.compile(r"\d[\d.,]*\s*(?:k|M)?\s*(?:events/s|rows/s|items/s|M/s|µs)\b"
                    r"|~\s*\d[\d.,–-]*\s*(?:ms|s)\b")
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"


def _outside_generated(text: str) -> str:
    while BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + rest.split(END, 1)[1]
    return text


@pytest.mark.parametrize("doc", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))],
                         ids=lambda p: p.name)
def test_no_typed_figures(doc):
    found = FIGURE.findall(_outside_generated(doc.read_text()))
    assert not found, f"{doc.name} quotes figures outside the generated block: {found}"


def test_the_figure_pattern_sees_figures():
    assert FIGURE.findall("parsed ~89k events/s; commits in ~10–30 ms; 298.7 M/s")
    assert not FIGURE.findall(_outside_generated(f"a {BEGIN} 12.5 k events/s {END} b"))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_source_files_exist(doc):
    text = doc.read_text()
    paths = set(re.findall(r"(?<![\w/])((?:streaming|sketches|benchmarks|dashboards|tests)"
                           r"/[\w/]+\.py)\b", text))
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"{doc.name} names files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_modules_exist(doc):
    text = doc.read_text()
    names = set(re.findall(r"python -m ((?:streaming|benchmarks)(?:\.\w+)*)", text))
    names |= set(re.findall(r"\bfrom ((?:streaming|sketches)(?:\.\w+)*) import", text))
    missing = sorted(n for n in names if importlib.util.find_spec(n) is None)
    assert not missing, f"{doc.name} names modules that do not exist: {missing}"
