"""The benchmarks' memory sampler (``benchmarks.bench_memory.run_measured``) against a
process tree of known size."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from benchmarks.bench_memory import run_measured

MIB = 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_a_parent_and_its_child_are_counted_together(tmp_path):
    """A parent holding 150 MiB starts a child holding 150 MiB and waits for it: the
    tree's peak RSS and PSS hold both, and no more than a few tens of MiB besides."""
    script = tmp_path / "hold.py"
    script.write_text(textwrap.dedent("""
        import subprocess, sys, time
        held = bytearray(150 * 2**20)
        for i in range(0, len(held), 4096):
            held[i] = 1  # touched: resident
        if len(sys.argv) == 1:
            subprocess.run([sys.executable, __file__, "child"], check=True)
        else:
            time.sleep(0.6)
    """))
    r = run_measured([sys.executable, str(script)], dict(os.environ))
    assert r["returncode"] == 0
    assert 300 * MIB <= r["peak_tree_rss_bytes"] <= 380 * MIB, r["peak_tree_rss_bytes"] / MIB
    assert 290 * MIB <= r["peak_tree_pss_bytes"] <= r["peak_tree_rss_bytes"]
    assert set(r["peak_rss_bytes_by_role"]) == {"driver"}
