"""What the quantile benchmark's parts share: optional libraries, settings, timing, rows."""

from __future__ import annotations

import collections
import gc
import importlib
import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.sketch_bench.report import git_commit

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "quantiles.json"
ACCURACY = 0.01
KLL_K = 200
GROUPS = 1000
QS = [0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999]
UPDATE_FACTOR = 20.0
MERGE_MS = 50.0


def _try_import(name: str) -> tuple[Any, str | None]:
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # noqa: BLE001 - any failure means "unavailable"
        return None, f"{type(exc).__name__}: {exc}"


sketches, OURS_ERR = _try_import("sketches")
ddsketch, DD_ERR = _try_import("ddsketch")
datasketches, DS_ERR = _try_import("datasketches")
pa, PA_ERR = _try_import("pyarrow")


def time_calls(fn: Callable[[], Any], repeat: int) -> list[float]:
    """Wall time of ``fn()`` per repeat, garbage collector off while timing."""
    times = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return times


def consume(iterator: Any) -> None:
    collections.deque(iterator, maxlen=0)


def chunks(a: np.ndarray, size: int) -> list[np.ndarray]:
    return [a[i : i + size] for i in range(0, a.size, size)]


class Report:
    """The rows measured so far; each row is a median and a best over its repeats."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, key: str, what: str, unit: str, items: int, fn: Callable[[], Any], **kw: Any):
        row: dict[str, Any] = {"key": key, "what": what, "unit": unit, "items": items, **kw}
        try:
            times = time_calls(fn, kw.pop("repeat", 1))
            row["times_s"] = times
            if unit == "values/s":
                row["median"], row["best"] = items / statistics.median(times), items / min(times)
            else:  # ms per call
                row["median"], row["best"] = 1e3 * statistics.median(times), 1e3 * min(times)
        except Exception as exc:  # noqa: BLE001 - record and go on
            row["error"] = f"{type(exc).__name__}: {exc}"
        row.pop("repeat", None)
        self.rows.append(row)
        shown = row.get("error") or f"{row['median']:,.1f} {unit}"
        print(f"  {key:<34} {shown}", flush=True)
        return row

    def median(self, key: str) -> float | None:
        return self._stat(key, "median")

    def best(self, key: str) -> float | None:
        return self._stat(key, "best")

    def _stat(self, key: str, stat: str) -> float | None:
        for row in self.rows:
            if row["key"] == key and stat in row:
                return float(row[stat])
        return None


def exact_lower(values: np.ndarray, qs: list[float]) -> np.ndarray:
    ordered = np.sort(values)
    return ordered[np.floor(np.asarray(qs) * (ordered.size - 1)).astype(np.int64)]


def max_rel_error(estimates: Any, exact: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(estimates, dtype=np.float64) - exact) / exact))


def machine_info() -> dict[str, Any]:
    versions = {}
    for dist in ("numpy", "pyarrow", "ddsketch", "datasketches", "streamsketch"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    commit = git_commit()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": commit,
    }


def shown_path(path: Path) -> str:
    """``path`` relative to the repository when inside it (results name no machine paths)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return path.name
