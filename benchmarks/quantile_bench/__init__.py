"""The parts of ``benchmarks/bench_quantiles.py``: harness, update and merge rows, the
profile and ceilings, and the report."""
