"""Where an update's time goes, and the least any bucket histogram can spend per value.

``profile.ours.*``: the log mapping's update phase by phase, and the cells mapping's
whole counting pass. ``ceiling.*``: reading the array once; one elementwise pass
writing one int64 per value (the cells mapping's shift); counting precomputed small
int64 indices (the cells minus their minimum) with ``np.bincount`` and with
``np.add.at`` into a histogram allocated once; the pass and each count together (the
pass and ``np.add.at`` is the cells mapping's per-value work); the pass, a table
lookup and ``np.add.at``: the least a layout needs whose buckets are not whole cells of
a power-of-two grid, like the log mapping's (which also compares each value with the
boundary in its cell). ``alt.*``: other mappings and other ways to count the same
indices.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from benchmarks.quantile_bench.harness import ACCURACY, Report, chunks, consume, pa, sketches

PHASES = ("input", "keys", "bincount", "tally")  # profile.ours.* rows, tally last


def bench_profile(x: np.ndarray, args: argparse.Namespace, rep: Report) -> None:
    """Our update phase by phase, on its own 1 M-value chunks (internals, untouched)."""
    if sketches is None:
        return
    from sketches._bucketcount import numeric_chunks, tally
    from sketches._cells import get_cells, tally_cells
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
        "chunking, dtype check and NaN test (numeric_chunks)",
        "values/s",
        n,
        lambda: consume(numeric_chunks(x)),
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
    cells = get_cells(ACCURACY)
    rep.add(
        "profile.ours.cells.tally",
        "the cells mapping's counting pass (tally_cells): shift + np.add.at, no NaN test",
        "values/s",
        n,
        lambda: tally_cells(cells, x, None, 1),
        repeat=r,
    )


def bench_ceilings(x: np.ndarray, args: argparse.Namespace, rep: Report) -> None:
    """The least work any log-bucket histogram does per value, and the alternatives tried
    (see the module doc), on ``--chunk``-value chunks with reused buffers."""
    n, r, size = x.size, args.repeat_fast, args.chunk
    shift = np.uint64(52 - args.cell_bits)
    raw = x.view(np.uint64)
    parts, xparts = chunks(raw, size), chunks(x, size)
    buf = np.empty(min(size, n), dtype=np.uint64)
    fbuf = np.empty(min(size, n), dtype=np.float64)
    f32 = np.empty(min(size, n), dtype=np.float32)
    cells = (raw >> shift).view(np.int64)
    small = cells - cells.min()
    small_parts, small32 = chunks(small, size), chunks(small.astype(np.int32), size)
    hist = np.zeros(int(small.max()) + 1, dtype=np.int64)
    dense = np.zeros(1 << (12 + args.cell_bits), dtype=np.int64)  # all cells, as the cells mapping
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
            "the shift, then np.add.at into all cells (the cells mapping's per-value work)",
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


