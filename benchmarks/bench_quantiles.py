#!/usr/bin/env python
"""Quantile sketches: ``sketches.QuantileSketch`` against ``ddsketch`` and DataSketches' KLL.

Run from the repository root::

    python -m benchmarks.bench_quantiles            # 5 M values, 9 or 3 repeats (~1 min)
    python -m benchmarks.bench_quantiles --quick    # 1 M values, 3 or 1 repeats

Rows of well under a second (batch updates, profile, prototype, ceilings) are
repeated ``--repeat-fast`` times, the others ``--repeat`` times; each reports the
median and the best.

One data set, built once from ``--seed`` and never timed: ``n`` log-normal float64
values (``mu=0, sigma=2``). Every library gets the same values:

* ours: ``QuantileSketch(relative_accuracy=0.01).update(array)`` on the NumPy array,
  and on the same values as a pyarrow array; ``from_groups`` into 1,000 groups.
* ``ddsketch.DDSketch(relative_accuracy=0.01)``: pure Python, one ``add`` per value,
  driven by ``map`` over a pre-built list (not timed); timed on the first
  ``--slow-n`` values and reported as values/s.
* DataSketches ``kll_doubles_sketch(k=200)``: its ``update`` takes a NumPy array
  (timed as "batch") or one float (timed through ``map`` over a pre-built list).

Whether the update goal can be met at all, on the same values (``--chunk``-value
chunks, reused buffers):

* ``profile.ours.*``: our update phase by phase (input checks and NaN test, bucket
  keys, ``np.bincount``, the whole counting pass); the ns/value left over are the key
  range and decoding, and assembling and merging the result.
* ``update.prototype.bits``: a cheaper mapping, in this file only (a new bucket layout
  would be a new format with its own bound): a value's cell is its top ``12 +
  --proto-bits`` bits (``raw >> (52 - bits)``: sign, exponent, top of the
  significand), counted chunk by chunk with ``np.add.at`` into an array of all cells;
  then, per cell, cells group into buckets of ratio at most ``(1 + a) / (1 - a)`` and
  the sorted (key, count) stores are built (timed too). Its accuracy is checked on
  these values and on mixed signs, zeros, subnormals, NaN and infinities.
* ``ceiling.*``: the least any log-bucket histogram does per value: read each value
  (``np.max``), one elementwise pass writing an int64 per value (the prototype's
  shift), counting precomputed small indices (``np.bincount``; ``np.add.at`` into a
  histogram allocated once), the pass with each count, and the pass with a table
  lookup per value and ``np.add.at`` (the least for buckets that are not whole cells
  of a power-of-two grid, as in ``sketches/``).
* ``alt.*``: what else was tried: ``np.log`` and DDSketch's logarithmic mapping, a
  float32 copy; counting with int32 indices, ``np.unique`` and
  ``pyarrow.compute.value_counts``.

Merge: ``--merge-sketches`` sketches of ``--merge-items`` values each (consecutive
slices of the data) are built untimed, then merged: ours with ``union(*sketches)``
and with repeated ``merge`` into an empty sketch, the baselines with their ``merge``
into an empty sketch.

Also measured, untimed: the largest relative error of each library's quantiles
against the exact lower quantile (``np.sort(values)[floor(q (n - 1))]``) at a few
``q``, and the serialised size. Targets (informational, never failing the run):
update >= 20x the fastest baseline row (also shown for the prototype and each
ceiling: a ceiling under 20x rules the goal out for any implementation that needs
that step), and merging 1,000 sketches < 50 ms.
Results go to ``benchmarks/results/quantiles.json``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import gc
import importlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).resolve().parent
_REPO_ROOT = _HERE.parent
if str(_REPO_ROOT) not in sys.path:  # ``python benchmarks/bench_quantiles.py`` without install
    sys.path.append(str(_REPO_ROOT))

DEFAULT_OUT = _HERE / "results" / "quantiles.json"
ACCURACY = 0.01
KLL_K = 200
GROUPS = 1000
QS = [0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999]
UPDATE_FACTOR = 20.0
# rows also set against the fastest baseline in the targets (prototype, then ceilings)
RATIO_ROWS = (
    "update.ours.arrow",
    "update.prototype.bits",
    "ceiling.one_pass+add_at",
    "ceiling.one_pass+lookup+add_at",
    "ceiling.one_pass+bincount",
    "ceiling.add_at",
    "ceiling.bincount",
    "ceiling.one_pass",
    "ceiling.read",
)
MERGE_MS = 50.0
PHASES = ("input", "keys", "bincount", "tally")  # profile.ours.* rows, tally last


def _try_import(name: str) -> tuple[Any, str | None]:
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # noqa: BLE001 - any failure means "unavailable"
        return None, f"{type(exc).__name__}: {exc}"


sketches, _OURS_ERR = _try_import("sketches")
ddsketch, _DD_ERR = _try_import("ddsketch")
datasketches, _DS_ERR = _try_import("datasketches")
pa, _PA_ERR = _try_import("pyarrow")


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


class Report:
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


def bench_update(x: np.ndarray, args: argparse.Namespace, rep: Report) -> dict[str, Any]:
    quality: dict[str, Any] = {}
    exact = exact_lower(x, QS)
    n, r, fast = x.size, args.repeat, args.repeat_fast
    if sketches is not None:
        qs_cls = sketches.QuantileSketch
        rep.add(
            "update.ours.numpy",
            "QuantileSketch.update(float64 array)",
            "values/s",
            n,
            lambda: qs_cls(ACCURACY).update(x),
            repeat=fast,
        )
        if pa is not None:
            arrow = pa.array(x)
            rep.add(
                "update.ours.arrow",
                "QuantileSketch.update(pyarrow array)",
                "values/s",
                n,
                lambda: qs_cls(ACCURACY).update(arrow),
                repeat=fast,
            )
        codes = np.random.default_rng(args.seed + 1).integers(0, GROUPS, n)
        rep.add(
            "from_groups.ours.numpy",
            f"QuantileSketch.from_groups, {GROUPS} groups",
            "values/s",
            n,
            lambda: qs_cls.from_groups(codes, x, GROUPS, relative_accuracy=ACCURACY),
            repeat=r,
        )
        ours = qs_cls(ACCURACY).update(x)
        quality["ours"] = {
            "max_rel_error": max_rel_error(ours.quantiles(QS), exact),
            "bytes": len(ours.to_bytes()),
            "buckets": ours.num_buckets,
        }
    if ddsketch is not None:
        subset = x[: args.slow_n].tolist()
        rep.add(
            "update.ddsketch.per_item",
            "DDSketch.add via map (subset)",
            "values/s",
            len(subset),
            lambda: consume(map(ddsketch.DDSketch(ACCURACY).add, subset)),
            repeat=r,
            note=f"first {len(subset):,} values",
        )
        dd = ddsketch.DDSketch(ACCURACY)
        consume(map(dd.add, x.tolist()))
        quality["ddsketch"] = {
            "max_rel_error": max_rel_error([dd.get_quantile_value(q) for q in QS], exact)
        }
    if datasketches is not None:
        kll = datasketches.kll_doubles_sketch
        rep.add(
            "update.kll.batch",
            "kll_doubles_sketch.update(float64 array)",
            "values/s",
            n,
            lambda: kll(KLL_K).update(x),
            repeat=fast,
        )
        values = x.tolist()
        rep.add(
            "update.kll.per_item",
            "kll_doubles_sketch.update via map",
            "values/s",
            n,
            lambda: consume(map(kll(KLL_K).update, values)),
            repeat=r,
        )
        sk = kll(KLL_K)
        sk.update(x)
        # KLL's own quantile definition is inclusive; both are compared to the same exact
        quality["kll"] = {
            "max_rel_error": max_rel_error([sk.get_quantile(q) for q in QS], exact),
            "normalized_rank_error": sk.normalized_rank_error(False),
            "bytes": len(sk.serialize()),
        }
    return quality


# ---------------------------------------------------------------- prototype and ceilings
#
# Not a format of ``sketches/``: a cheaper bucket mapping, to measure what the update
# could cost if the mapping were changed (a new format version with its own bound).


def proto_layout(bits: int, accuracy: float) -> tuple[np.ndarray, np.ndarray]:
    """Buckets made of whole cells of ``2**-bits`` of the significand, greedily grouped.

    Returns ``(bucket of each cell, bucket edges as significands in [1, 2])``: each
    bucket spans a ratio of at most ``(1 + a) / (1 - a)``, so its representative
    ``2 lo hi / (lo + hi)`` is within ``a`` of every value in it.
    """
    cells = 1 << bits
    gamma = (1.0 + accuracy) / (1.0 - accuracy) * (1.0 - 1e-12)
    edges, lo = [0], 0
    while lo < cells:
        hi = lo + 1  # one cell always fits: 2**-bits <= 2a for the bits chosen
        while hi < cells and (cells + hi + 1) / (cells + lo) <= gamma:
            hi += 1
        edges.append(hi)
        lo = hi
    bucket_of_cell = np.repeat(np.arange(len(edges) - 1), np.diff(edges))
    return bucket_of_cell, 1.0 + np.array(edges, dtype=np.float64) / cells


class BitsPrototype:
    """Log buckets from the float's bits: one shift and one ``np.add.at`` per value.

    A value's cell is its top ``12 + bits`` bits (sign, biased exponent, the top
    ``bits`` of the significand): ``raw >> (52 - bits)``, counted chunk by chunk with
    ``np.add.at`` into a dense array of all ``2**(12 + bits)`` cells (4 MiB of virtual
    memory for 7 bits; only the cells used are touched). Everything else is per cell,
    not per value: cells group into buckets (:func:`proto_layout`), exponent 2047 (NaN,
    inf) is skipped, exponent 0 (zeros, subnormals) is looked at again only when the
    input has any.
    """

    def __init__(self, accuracy: float, bits: int = 7, chunk: int = 1 << 18) -> None:
        self.bits, self.chunk = bits, chunk
        self.bucket_of_cell, self.edges = proto_layout(bits, accuracy)
        self.per_octave = int(self.bucket_of_cell[-1]) + 1
        self.cells = np.zeros(1 << (12 + bits), dtype=np.int64)  # by (sign, exponent, cell)
        self.subnormal: np.ndarray | None = None  # subnormals times 2**64, once met
        self.zeros = 0

    def update(self, x: np.ndarray) -> BitsPrototype:
        raw = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
        shift = np.uint64(52 - self.bits)
        buf = np.empty(min(self.chunk, raw.size), dtype=np.uint64)
        for a in range(0, raw.size, self.chunk):
            part = raw[a : a + self.chunk]
            cells = buf[: part.size]
            np.right_shift(part, shift, out=cells)
            np.add.at(self.cells, cells.view(np.int64), 1)
        width, negative = 1 << self.bits, 1 << (11 + self.bits)
        tiny = [self.cells[:width], self.cells[negative : negative + width]]  # exponent 0
        found = sum(int(t.sum()) for t in tiny)
        if found:  # rare: zeros, then subnormals
            for t in tiny:
                t[:] = 0
            zeros = int(np.count_nonzero(raw << np.uint64(1) == 0))
            self.zeros += zeros
            if zeros < found:
                sub = raw[(raw & np.uint64(0x7FF0 << 48) == 0) & (raw << np.uint64(1) != 0)]
                scaled = (sub.view(np.float64) * 2.0**64).view(np.uint64) >> shift
                if self.subnormal is None:
                    self.subnormal = np.zeros_like(self.cells)
                np.add.at(self.subnormal, scaled.view(np.int64), 1)
        return self

    def stores(self) -> tuple[dict[str, int], dict[str, tuple[np.ndarray, np.ndarray]]]:
        """``({count, skipped, zeros}, {"-"/"+": (keys, counts)})``, keys in increasing order.

        A key is ``per_octave * e + j`` for bucket ``j`` of the octave ``[2**e, 2**(e+1))``.
        """
        keys, counts, signs, skipped = [], [], [], 0
        grids = [(self.cells, 1023)]
        if self.subnormal is not None:
            grids.insert(0, (self.subnormal, 1023 + 64))
        for grid, offset in grids:
            used = np.flatnonzero(grid != 0)  # 10x faster than on the int64 counts
            exponent = (used >> self.bits) & 2047
            finite = exponent != 2047
            skipped += int(grid[used[~finite]].sum())
            used, exponent = used[finite], exponent[finite]
            cell = used & ((1 << self.bits) - 1)
            keys.append((exponent - offset) * self.per_octave + self.bucket_of_cell[cell])
            counts.append(grid[used])
            signs.append(used >> (11 + self.bits))
        key, count, sign = (np.concatenate(a) for a in (keys, counts, signs))
        by_sign = {}
        for name, s in (("+", 0), ("-", 1)):
            k, c = key[sign == s], count[sign == s]  # increasing: subnormals first
            starts = np.flatnonzero(np.diff(k, prepend=k[:1] - 1))
            by_sign[name] = (k[starts], np.add.reduceat(c, starts) if k.size else c)
        total = sum(int(c.sum()) for _, c in by_sign.values()) + self.zeros
        return {"count": total, "skipped": skipped, "zeros": self.zeros}, by_sign

    def quantiles(self, qs: list[float]) -> np.ndarray:
        """Representative of the bucket at rank ``floor(q (n - 1))`` (lower quantile)."""
        info, by_sign = self.stores()
        reps, counts = [], []
        for sign in ("-", "+"):
            keys, cnt = by_sign[sign]
            e, j = np.divmod(keys, self.per_octave)
            lo, hi = self.edges[j], self.edges[j + 1]
            rep = np.ldexp(2.0 * lo * hi / (lo + hi), e.astype(np.int32))
            if sign == "-":
                reps += [-rep[::-1], np.zeros(1)]
                counts += [cnt[::-1], np.array([info["zeros"]])]
            else:
                reps.append(rep)
                counts.append(cnt)
        cum = np.cumsum(np.concatenate(counts))
        rank = np.floor(np.asarray(qs) * (info["count"] - 1)).astype(np.int64)
        return np.concatenate(reps)[np.searchsorted(cum, rank, side="right")]


def chunks(a: np.ndarray, size: int) -> list[np.ndarray]:
    return [a[i : i + size] for i in range(0, a.size, size)]


def bench_profile(x: np.ndarray, args: argparse.Namespace, rep: Report) -> None:
    """Our update phase by phase, on its own 1 M-value chunks (internals, untouched)."""
    if sketches is None:
        return
    from sketches._bucketcount import _numeric_chunks, tally
    from sketches._columns import CHUNK_ROWS
    from sketches._logbuckets import combined_keys, get_layout

    layout, n, r = get_layout(ACCURACY), x.size, args.repeat_fast
    parts = chunks(x, CHUNK_ROWS)
    keys = [combined_keys(layout, p) for p in parts]
    shifted = [k - k.min() for k in keys]

    def keys_only() -> None:
        for p in parts:
            combined_keys(layout, p)

    def count_only() -> None:
        for k in shifted:
            np.bincount(k)

    rep.add(
        "profile.ours.input",
        "chunking, dtype check and NaN test (_numeric_chunks)",
        "values/s",
        n,
        lambda: consume(_numeric_chunks(x)),
        repeat=r,
    )
    rep.add(
        "profile.ours.keys",
        "bucket keys from the bits: 2 table lookups (combined_keys)",
        "values/s",
        n,
        keys_only,
        repeat=r,
    )
    rep.add("profile.ours.bincount", "np.bincount of the keys", "values/s", n, count_only, repeat=r)
    rep.add(
        "profile.ours.tally",
        "the whole counting pass (tally): the above + key range + decoding",
        "values/s",
        n,
        lambda: tally(layout, x, None, 1),
        repeat=r,
    )


def bench_prototype(x: np.ndarray, args: argparse.Namespace, rep: Report) -> dict[str, Any]:
    """The cheaper mapping (prototype only), then its accuracy on these and mixed values."""
    bits, size, n, r = args.proto_bits, args.chunk, x.size, args.repeat_fast
    rep.add(
        "update.prototype.bits",
        f"prototype: shift + np.add.at, {bits}-bit cells, {size:,}-value chunks; stores",
        "values/s",
        n,
        lambda: BitsPrototype(ACCURACY, bits, size).update(x).stores(),
        repeat=r,
    )
    proto = BitsPrototype(ACCURACY, bits, size).update(x)
    info, by_sign = proto.stores()
    ratio = float(np.max(proto.edges[1:] / proto.edges[:-1]))
    rng = np.random.default_rng(args.seed + 2)
    special = [0.0, -0.0, np.nan, np.inf, -np.inf, 5e-320, -3e-315, 1e300, -1e-300]
    mixed = np.concatenate(
        [rng.lognormal(0, 3, 50_000), -rng.lognormal(0, 3, 50_000), rng.uniform(-1, 1, 20_000)]
    )
    mixed = np.concatenate([mixed, special])
    rng.shuffle(mixed)
    finite = mixed[np.isfinite(mixed)]
    many_qs = list(np.linspace(0.0, 1.0, 1001))
    exact, est = exact_lower(finite, many_qs), BitsPrototype(ACCURACY, bits, 4096).update(mixed)
    got = est.quantiles(many_qs)
    zero = exact == 0.0
    mixed_info, _ = est.stores()
    return {
        "max_rel_error": max_rel_error(proto.quantiles(QS), exact_lower(x, QS)),
        "bound": (ratio - 1.0) / (ratio + 1.0),
        "buckets": sum(int(k.size) for k, _ in by_sign.values()),
        "per_octave": proto.per_octave,
        "count_ok": info["count"] == n and info["skipped"] == 0,
        "mixed_max_rel_error": float(
            np.max(np.abs(got[~zero] - exact[~zero]) / np.abs(exact[~zero]))
        ),
        "mixed_counts_ok": bool(
            np.all(got[zero] == 0.0)
            and mixed_info["count"] == finite.size
            and mixed_info["skipped"] == mixed.size - finite.size
            and mixed_info["zeros"] == int(np.count_nonzero(finite == 0.0))
        ),
    }


def bench_ceilings(x: np.ndarray, args: argparse.Namespace, rep: Report) -> None:
    """The least work any log-bucket histogram does per value, and the alternatives tried.

    Same chunks as the prototype. ``ceiling.*``: reading the array once; one elementwise
    pass writing one int64 per value (the prototype's shift); counting precomputed small
    int64 indices (the prototype's cells minus their minimum) with ``np.bincount`` and
    with ``np.add.at`` into a histogram allocated once; the pass and each count
    together (the pass and ``np.add.at`` is the prototype's per-value work); the pass, a
    table lookup and ``np.add.at``: the least a layout needs whose buckets are not whole
    cells of a power-of-two grid, like ``sketches/``' (which also compares each value
    with the boundary in its cell). ``alt.*``: other mappings and other ways to count
    the same indices.
    """
    n, r, size = x.size, args.repeat_fast, args.chunk
    shift = np.uint64(52 - args.proto_bits)
    raw = x.view(np.uint64)
    parts, xparts = chunks(raw, size), chunks(x, size)
    buf = np.empty(min(size, n), dtype=np.uint64)
    fbuf = np.empty(min(size, n), dtype=np.float64)
    f32 = np.empty(min(size, n), dtype=np.float32)
    cells = (raw >> shift).view(np.int64)
    small = cells - cells.min()
    small_parts, small32 = chunks(small, size), chunks(small.astype(np.int32), size)
    hist = np.zeros(int(small.max()) + 1, dtype=np.int64)
    dense = np.zeros(1 << (12 + args.proto_bits), dtype=np.int64)  # all cells, as the prototype
    inv_log_gamma = 1.0 / math.log((1.0 + ACCURACY) / (1.0 - ACCURACY))

    def one_pass() -> None:
        for p in parts:
            np.right_shift(p, shift, out=buf[: p.size])

    def bincount() -> None:
        for p in small_parts:
            np.bincount(p)

    def pass_and_count() -> None:
        for p in parts:
            out = buf[: p.size]
            np.right_shift(p, shift, out=out)
            np.bincount(out.view(np.int64))

    def pass_and_add_at() -> None:
        for p in parts:
            out = buf[: p.size]
            np.right_shift(p, shift, out=out)
            np.add.at(dense, out.view(np.int64), 1)

    lookup = np.arange(dense.size, dtype=np.int64) // 3  # any cell -> bucket table
    looked = np.empty(min(size, n), dtype=np.int64)

    def pass_lookup_add_at() -> None:
        for p in parts:
            out, key = buf[: p.size], looked[: p.size]
            np.right_shift(p, shift, out=out)
            np.take(lookup, out.view(np.int64), out=key)
            np.add.at(dense, key, 1)

    def log_pass() -> None:
        for p in xparts:
            np.log(p, out=fbuf[: p.size])

    def log_keys() -> None:  # DDSketch's logarithmic mapping, vectorised
        for p in xparts:
            f = fbuf[: p.size]
            np.log(p, out=f)
            np.multiply(f, inv_log_gamma, out=f)
            np.ceil(f, out=f)
            np.copyto(buf[: p.size].view(np.int64), f, casting="unsafe")

    def to_float32() -> None:
        for p in xparts:
            np.copyto(f32[: p.size], p, casting="same_kind")

    def add_at() -> None:
        for p in small_parts:
            np.add.at(hist, p, 1)

    def count32() -> None:
        for p in small32:
            np.bincount(p)

    def unique() -> None:
        for p in small_parts:
            np.unique(p, return_counts=True)

    rows = [
        (
            "ceiling.read",
            "np.max of each chunk: every value read once",
            lambda: consume(map(np.max, xparts)),
        ),
        (
            "ceiling.one_pass",
            "one elementwise pass: right_shift into a reused int64 buffer",
            one_pass,
        ),
        ("ceiling.bincount", "np.bincount of precomputed small int64 indices", bincount),
        ("ceiling.add_at", "np.add.at(hist, same indices, 1), hist allocated once", add_at),
        ("ceiling.one_pass+bincount", "the shift, then np.bincount", pass_and_count),
        (
            "ceiling.one_pass+add_at",
            "the shift, then np.add.at into all cells (the prototype's per-value work)",
            pass_and_add_at,
        ),
        (
            "ceiling.one_pass+lookup+add_at",
            "the shift, one table lookup per value (np.take), np.add.at",
            pass_lookup_add_at,
        ),
        ("alt.map.np_log", "np.log into a reused buffer (one pass)", log_pass),
        ("alt.map.log_keys", "ceil(log(x) / log(gamma)) as int64: DDSketch's mapping", log_keys),
        ("alt.map.float32", "float64 to float32 copy (one pass)", to_float32),
        ("alt.count.bincount_int32", "np.bincount of int32 indices (cast inside)", count32),
        ("alt.count.unique", "np.unique(indices, return_counts=True): sort based", unique),
    ]
    for key, what, fn in rows:
        rep.add(key, what, "values/s", n, fn, repeat=r, note=f"{size:,}-value chunks")
    if pa is not None:
        import pyarrow.compute as pc

        arrow_small = pa.array(small)
        rep.add(
            "alt.count.arrow_value_counts",
            "pyarrow.compute.value_counts of the int64 indices (hash based)",
            "values/s",
            n,
            lambda: pc.value_counts(arrow_small),
            repeat=r,
            note="whole array",
        )


def bench_merge(x: np.ndarray, args: argparse.Namespace, rep: Report) -> None:
    k, m = args.merge_sketches, args.merge_items
    parts = [x[(i * m) % (x.size - m) :][:m] for i in range(k)]
    label = f"merge {k:,} sketches of {m:,}"
    if sketches is not None:
        cls = sketches.QuantileSketch
        ours = [cls(ACCURACY).update(p) for p in parts]

        def loop() -> None:
            acc = cls(ACCURACY)
            for s in ours:
                acc.merge(s)

        rep.add(
            "merge.ours.union",
            f"{label}: union(*sketches)",
            "ms",
            k,
            lambda: sketches.union(*ours),
            repeat=args.repeat,
        )
        rep.add("merge.ours.loop", f"{label}: repeated merge", "ms", k, loop, repeat=args.repeat)
    if ddsketch is not None:
        dds = []
        for p in parts:
            d = ddsketch.DDSketch(ACCURACY)
            consume(map(d.add, p.tolist()))
            dds.append(d)

        def dd_loop() -> None:
            acc = ddsketch.DDSketch(ACCURACY)
            for d in dds:
                acc.merge(d)

        rep.add(
            "merge.ddsketch.loop", f"{label}: DDSketch.merge", "ms", k, dd_loop, repeat=args.repeat
        )
    if datasketches is not None:
        klls = []
        for p in parts:
            s = datasketches.kll_doubles_sketch(KLL_K)
            s.update(p)
            klls.append(s)

        def kll_loop() -> None:
            acc = datasketches.kll_doubles_sketch(KLL_K)
            for s in klls:
                acc.merge(s)

        rep.add("merge.kll.loop", f"{label}: kll merge", "ms", k, kll_loop, repeat=args.repeat)


def targets(rep: Report) -> list[dict[str, Any]]:
    out = []
    ours = rep.median("update.ours.numpy")
    base = {
        k: rep.median(k)
        for k in ("update.ddsketch.per_item", "update.kll.batch", "update.kll.per_item")
    }
    known = {k: v for k, v in base.items() if v}
    if ours and known:
        fastest = max(known, key=lambda k: known[k])
        ratio = ours / known[fastest]
        out.append(
            {
                "target": f"update >= {UPDATE_FACTOR:g}x the fastest baseline",
                "status": "PASS" if ratio >= UPDATE_FACTOR else "MISS",
                "measured": ratio,
                "detail": f"{ratio:.1f}x {fastest} "
                f"({ours:,.0f} vs {known[fastest]:,.0f} values/s); "
                + ", ".join(f"{ours / v:.1f}x {k}" for k, v in known.items()),
            }
        )
        budget = 1e9 / (UPDATE_FACTOR * known[fastest])
        base_best = rep.best(fastest) or math.nan
        for key in ("update.ours.numpy", *RATIO_ROWS):
            value = rep.median(key)
            if value is None:
                continue
            ratio = value / known[fastest]
            best = (rep.best(key) or math.nan) / base_best
            out.append(
                {
                    "target": f"{key} >= {UPDATE_FACTOR:g}x {fastest}",
                    "status": "PASS" if ratio >= UPDATE_FACTOR else "MISS",
                    "measured": ratio,
                    "measured_best": best,
                    "detail": f"{ratio:.1f}x, best to best {best:.1f}x ({value:,.0f} values/s, "
                    f"{1e9 / value:.2f} ns/value; the goal leaves {budget:.2f} ns/value)",
                }
            )
    else:
        out.append({"target": "update vs baselines", "status": "N/A", "detail": "not measured"})
    merge = rep.median("merge.ours.union")
    out.append(
        {
            "target": f"merge of 1,000 sketches < {MERGE_MS:g} ms",
            "status": "N/A" if merge is None else ("PASS" if merge < MERGE_MS else "MISS"),
            "measured": merge,
            "detail": "not measured"
            if merge is None
            else f"union {merge:.1f} ms, repeated merge "
            f"{rep.median('merge.ours.loop') or math.nan:.1f} ms",
        }
    )
    return out


def profile(rep: Report) -> dict[str, float]:
    """ns per value of each phase of our update, from the best of the ``profile.*`` rows
    (the best: a busy machine slows the phases unevenly, and the rest is a difference)."""
    ns = {}
    for key in ("update.ours.numpy", *(f"profile.ours.{k}" for k in PHASES)):
        value = rep.best(key)
        if value is None:
            return {}
        ns[key] = 1e9 / value
    out = {f"{k.removeprefix('profile.ours.')}": ns[f"profile.ours.{k}"] for k in PHASES[:-1]}
    parts = sum(out.values())
    out["range and decode (tally - the above)"] = ns["profile.ours.tally"] - parts
    out["assemble and merge (update - tally)"] = ns["update.ours.numpy"] - ns["profile.ours.tally"]
    out["update"] = ns["update.ours.numpy"]
    return out


def machine_info() -> dict[str, Any]:
    versions = {}
    for dist in ("numpy", "pyarrow", "ddsketch", "datasketches", "streamsketch"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    commit = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=_REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": commit,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=None, help="values (default 5 M; --quick: 1 M)")
    p.add_argument(
        "--repeat", type=int, default=None, help="repeats of the other rows (default 3; --quick: 1)"
    )
    p.add_argument(
        "--repeat-fast",
        type=int,
        default=None,
        help="repeats of the rows of well under a second: batch updates, profile, prototype, "
        "ceilings (default 9; --quick: 3)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: --n 1000000 --repeat 1")
    p.add_argument("--slow-n", type=int, default=200_000, help="subset for pure-Python ddsketch")
    p.add_argument("--merge-sketches", type=int, default=1000)
    p.add_argument("--merge-items", type=int, default=10_000)
    p.add_argument(
        "--proto-bits",
        type=int,
        default=7,
        choices=range(6, 11),
        help="significand bits of the prototype's cells (default 7)",
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=1 << 18,
        help="values per chunk of the prototype and the ceilings (default 262,144)",
    )
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON output path")
    args = p.parse_args(argv)
    args.n = args.n or (1_000_000 if args.quick else 5_000_000)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.repeat_fast = args.repeat_fast or (3 if args.quick else 9)
    if args.n <= args.merge_items or min(args.repeat, args.repeat_fast, args.chunk) < 1:
        p.error("--n must exceed --merge-items; --repeat, --repeat-fast, --chunk be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    unavailable = {
        k: v
        for k, v in {
            "sketches": _OURS_ERR,
            "ddsketch": _DD_ERR,
            "datasketches": _DS_ERR,
            "pyarrow": _PA_ERR,
        }.items()
        if v
    }
    for lib, err in unavailable.items():
        print(f"note: {lib} unavailable ({err}); its rows are skipped")
    meta = {
        "benchmark": "bench_quantiles",
        "schema_version": 1,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "args": vars(args),
        "machine": machine_info(),
        "unavailable": unavailable,
        "data": f"{args.n:,} log-normal(0, 2) float64 values, numpy default_rng({args.seed})",
    }
    x = np.random.default_rng(args.seed).lognormal(0.0, 2.0, args.n)
    rep = Report()
    print(f"[update] {args.n:,} values, {args.repeat} repeat(s)")
    quality = bench_update(x, args, rep)
    print("[profile] our update, phase by phase")
    bench_profile(x, args, rep)
    print(f"[prototype and ceilings] {args.chunk:,}-value chunks")
    quality["prototype"] = bench_prototype(x, args, rep)
    bench_ceilings(x, args, rep)
    print(f"[merge] {args.merge_sketches:,} sketches of {args.merge_items:,} values")
    bench_merge(x, args, rep)
    goals = targets(rep)
    meta["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    meta["machine"]["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    print(f"\n{'row':<34} {'median':>20} {'best':>20} {'ns/value':>9}  what")
    for row in rep.rows:
        if "error" in row:
            print(f"{row['key']:<34} {row['error']}")
            continue
        unit = row["unit"]
        per = f"{1e9 / row['median']:9.2f}" if unit == "values/s" else " " * 9
        print(
            f"{row['key']:<34} {row['median']:>11,.1f} {unit:<8} {row['best']:>11,.1f} "
            f"{unit:<8} {per}  {row['what']}"
        )
    meta["profile"] = profile(rep)
    if meta["profile"]:
        print("\nwhere our update's time goes (ns per value, best of the repeats)")
        for phase, ns in meta["profile"].items():
            print(f"  {phase:<44} {ns:6.2f}")
    print("\nquality (max relative error of the quantiles at " + ", ".join(map(str, QS)) + ")")
    for lib, q in quality.items():
        print(f"  {lib:<10} " + ", ".join(f"{k}={v:.4g}" for k, v in q.items()))
    print("\ntargets (informational)")
    for goal in goals:
        print(f"  {goal['status']:<4} {goal['target']}: {goal['detail']}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {**meta, "rows": rep.rows, "quality": quality, "targets": goals}
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out} ({meta['elapsed_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
