"""The README's benchmark figures are the committed JSON results, as benchmarks.figures
writes them."""

from __future__ import annotations

from pathlib import Path

from benchmarks import figures

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_figures_block_is_generated_from_the_committed_results():
    text = README.read_text()
    begin, end = text.index(figures.BEGIN), text.index(figures.END)
    shown = text[begin + len(figures.BEGIN):end].strip("\n")
    assert shown == figures.block(), "run `python -m benchmarks.figures` and commit README.md"


def test_every_results_file_the_block_reads_is_committed():
    import subprocess

    tracked = subprocess.run(["git", "ls-files", "benchmarks/results"], capture_output=True,
                             text=True, cwd=README.parent, check=True).stdout.split()
    on_disk = sorted(str(p.relative_to(README.parent)) for p in figures.RESULTS.glob("*.json"))
    assert on_disk and set(on_disk) <= set(tracked), on_disk


def test_the_results_name_no_folder_of_the_machine_that_ran_them():
    import re

    path = re.compile(r"(?<![\w<])/(?:tmp|home|root|work|Users|var/folders)/")
    found = {p.name: path.findall(p.read_text()) for p in figures.RESULTS.glob("*.json")}
    assert found and not any(found.values()), {k: v for k, v in found.items() if v}
