"""The groups of ``benchmarks/bench_sketches.py``, one module each, and their harness."""
