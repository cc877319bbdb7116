"""Spark's Python worker daemon, with the engine imported once, before it forks.

Spark starts one daemon per executor (``python -m pyspark.daemon``), which forks a
worker per concurrent task; each worker then imports what its task needs. For the
engine that is NumPy, Arrow (and pandas, which Arrow imports), msgspec and the pass and
merge modules: about 0.7 s per worker, paid again by every new worker (the first batch,
a worker that died), and about 110 MB of module data in each. Spark's setting
``spark.python.daemon.module`` names the daemon to start instead; this one imports the
engine, then runs Spark's own daemon loop. The workers it forks start with the engine
imported and with the allocator settings of :func:`streaming.engine.memory.allocate_returnably`.

Forking after an import is safe only if the import left no thread holding a lock:
OpenBLAS (under NumPy) starts a thread pool unless told otherwise, so the daemon asks
it for one thread (the engine does no linear algebra). Arrow's jemalloc starts a
background thread, which jemalloc's own fork handlers account for.
"""

from __future__ import annotations

import os


def preload() -> None:
    """Import what every task of the engine imports (the pass, the merge stage, the
    Parquet writer and Spark's worker), so that forked workers start with it."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # pyarrow imports pandas at its first conversion of a Python value (a scalar in a
    # compute call will do): 0.2 s and 37 MB, in every worker, unless the daemon has
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import pyspark.worker  # noqa: F401

    import streaming.engine.reduce  # noqa: F401 (the pass, the merge stage, the sketches)
    from streaming.engine.memory import allocate_returnably

    allocate_returnably()


if __name__ == "__main__":
    preload()
    from pyspark.daemon import manager

    manager()
