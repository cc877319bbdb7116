"""Sketches per window x group: partials from the one pass, merged into Delta ``sketches``.

Per micro-batch:

1. the engine's one pass (:mod:`streaming.engine.onepass`) builds, in every input
   partition, one partial sketch per (window, pane, group, sketch) with the
   vectorised grouped builders of the ``sketches`` package. Raw rows never leave
   the partition; only these small partials reach the driver;
2. the driver merges the partials of each pane (for a Count-Min with top-k, then
   offers it every distinct item the partitions saw, so its candidates are those of
   a one-pass build over the whole batch: the bytes do not depend on how the batch
   was split), then merges panes into every window containing them, in a fixed
   order, then merges the open row's sketch (:mod:`streaming.engine.window_state`) into
   that (the row itself stays as it is until the batch commits), unless the row already
   holds this batch id (a re-run after a crash);
3. one Delta overwrite of the changed windows writes absolute bytes.

Merging is exact for HLL registers, Count-Min counters and Bloom bits, so the
stored bytes do not depend on how events were split into batches or partitions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from streaming.engine.aggregates import group_map
from streaming.engine.onepass import SketchPartial
from streaming.engine.tables import SKETCHES_SCHEMA, commit, read_table
from streaming.engine.window_state import (
    BatchWrite,
    Key,
    OpenRow,
    OpenWindows,
    SketchKey,
    closed_predicate,
    epoch_us,
    record_of,
    rows_table,
    windows_predicate,
)
from streaming.spec.model import Spec
from streaming.spec.windows import SketchSpec, WindowSpec
from streaming.units import US

#: the percentiles a quantiles sketch's row carries in ``stats`` (p50, p95, p99)
QUANTILES = (0.5, 0.95, 0.99)


@dataclass
class MergedSketch:
    window: WindowSpec
    sketch_spec: SketchSpec
    window_start_us: int
    group_key: str
    sketch: Any


def iter_merged(rows: Iterable[SketchPartial],
                spec: Spec) -> Iterator[tuple[SketchKey, MergedSketch]]:
    """Sketch partials of the one pass (``kind = "s"``) -> this batch's sketch per window.

    A tumbling window's sketch is yielded as soon as its partials are merged (its pane
    is the window), a sliding window's once all its panes are: a batch spanning months
    holds the live sketches of one window at a time, not of all.
    """
    import sketches

    panes: dict[tuple[int, int, str, int], list[SketchPartial]] = {}
    for r in rows:
        panes.setdefault((r.window, r.pane, r.group, r.sketch), []).append(r)
    sliding: dict[SketchKey, MergedSketch] = {}
    for pane_key in sorted(panes):
        wi, pane, g, si = pane_key
        parts = panes.pop(pane_key)
        w = spec.windows[wi]
        sk = w.sketches[si]
        sketch = sketches.from_bytes(parts[0].data)
        for p in parts[1:]:
            sketch.merge(sketches.from_bytes(p.data))
        if parts[0].items is not None and len(parts) > 1:
            items: list[Any] = []
            for p in parts:
                items += orjson.loads(p.items)
            sketch.rerank(items)
        n = w.size_s // w.slide_s
        if n == 1:
            yield SketchKey(w.name, pane, g, sk.name), MergedSketch(w, sk, pane, g, sketch)
            continue
        given = False  # the pane's own sketch starts one window; the others get copies
        for i in range(n):
            ws = pane - i * w.slide_s * US
            key = SketchKey(w.name, ws, g, sk.name)
            entry = sliding.get(key)
            if entry is None:
                sliding[key] = MergedSketch(w, sk, ws, g, sketch.copy() if given else sketch)
                given = True
            else:
                entry.sketch.merge(sketch)
    yield from sliding.items()


def merge_partials(rows: Iterable[SketchPartial], spec: Spec) -> dict[SketchKey, MergedSketch]:
    """:func:`iter_merged`, all at once."""
    return dict(iter_merged(rows, spec))


def partial_keys(rows: Iterable[SketchPartial], spec: Spec) -> set[SketchKey]:
    """The keys :func:`iter_merged` yields for ``rows``, without merging anything."""
    keys = set()
    for r in rows:
        w = spec.windows[r.window]
        name = w.sketches[r.sketch].name
        for i in range(w.size_s // w.slide_s):
            keys.add(SketchKey(w.name, r.pane - i * w.slide_s * US, r.group, name))
    return keys


def newest_windows(keys: Iterable[SketchKey], now_us: int) -> set[SketchKey]:
    """Of each (window, sketch), the keys of the newest window starting by ``now_us``:
    the ones the metrics show."""
    newest: dict[tuple[str, str], int] = {}
    for k in keys:
        if k.start_us <= now_us and k.start_us > newest.get((k.window, k.sketch), -(1 << 62)):
            newest[(k.window, k.sketch)] = k.start_us
    return {k for k in keys if newest.get((k.window, k.sketch)) == k.start_us}


def describe(kind: str, sketch: Any) -> tuple[float | None, float | None, float | None,
                                              list | None, dict[str, float]]:
    """(estimate, lower bound, upper bound, top-k, stats) of a sketch, as stored."""
    if kind == "hll":
        est, lo, hi = sketch.estimate_with_bounds(2)
        return (float(est), float(lo), float(hi), None,
                {"relative_error": float(sketch.relative_error())})
    if kind == "cms":
        top = [(str(item), int(count)) for item, count in sketch.top()]
        return (float(sketch.total), None, None, top,
                {"total": float(sketch.total), "error_bound": float(sketch.error_bound())})
    if kind == "bloom":
        return (float(sketch.estimate()), None, None, None,
                {"fill_ratio": float(sketch.fill_ratio()),
                 "expected_fpr": float(sketch.expected_fpr())})
    if kind == "quantiles":
        # estimate: the median, with its certain bounds; stats: the usual percentiles
        est, lo, hi = sketch.quantiles_with_bounds((0.5, *QUANTILES))
        stats = {f"p{round(q * 100):d}": float(v)
                 for q, v in zip(QUANTILES, est[1:].tolist(), strict=True)}
        stats.update(count=float(sketch.count), relative_error=float(sketch.relative_error()))
        return float(est[0]), float(lo[0]), float(hi[0]), None, stats
    return (float(sketch.estimate()), float(sketch.lower_bound(2)),
            float(sketch.upper_bound(2)), None, {})


def _top_pairs(top: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """A row's ``top_k`` read back, as the (item, count) pairs a record holds (a pair
    takes a third of a dict's memory, and a batch may keep 100,000s of records)."""
    return [(t["item"], t["count"]) for t in top]


def _record(m: MergedSketch, last_batch: int, updated_us: int) -> tuple:
    est, lo, hi, top, stats = describe(m.sketch_spec.kind, m.sketch)
    return record_of({"window_name": m.window.name, "window_start": m.window_start_us,
            "window_end": m.window_start_us + m.window.size_s * US, "group_key": m.group_key,
            "group": group_map(m.window.group_by, m.group_key),
            "sketch_name": m.sketch_spec.name, "kind": m.sketch_spec.kind,
            "field": m.sketch_spec.field, "bytes": m.sketch.to_bytes(), "estimate": est,
            "lower_bound": lo, "upper_bound": hi,
            "top_k": top,
            "stats": list(stats.items()), "last_batch": last_batch, "updated_at": updated_us},
        SKETCHES_SCHEMA)


class SketchState:
    """The open rows of ``sketches`` and how a batch's partial sketches fold into them."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.open = OpenWindows(spec)

    def _rows(self, path: str, where: str) -> dict[Key, OpenRow]:
        import sketches

        windows = {w.name: w for w in self.spec.windows}
        out = {}
        for r in read_table(path, where).to_pylist():
            w = windows[r["window_name"]]
            sk = next(s for s in w.sketches if s.name == r["sketch_name"])
            ws = epoch_us(r["window_start"])
            key = SketchKey(r["window_name"], ws, r["group_key"], r["sketch_name"])
            m = MergedSketch(w, sk, ws, r["group_key"], sketches.from_bytes(r["bytes"]))
            if r["top_k"] is not None:
                r["top_k"] = _top_pairs(r["top_k"])
            out[key] = OpenRow(m, int(r["last_batch"]), record_of(r, SKETCHES_SCHEMA))
        return out

    def load(self, path: str) -> None:
        self.open.rows = self._rows(path, "NOT final")

    def load_closed(self, path: str, windows: set[tuple[str, int]]) -> dict[Key, OpenRow]:
        """The final rows of ``windows``, for late rows to update (``late = "update"``)."""
        return self._rows(path, closed_predicate(windows)) if windows else {}

    def fold(self, partials: Iterable[tuple[SketchKey, MergedSketch]], batch_id: int,
             batch_ts_ms: int, closed: dict[Key, OpenRow] | None = None, *,
             closing_ms: int | None = None,
             keep_live: set[SketchKey] | None = None) -> dict[Key, OpenRow]:
        """New rows for the keys this batch touches (the memory copy is not changed).

        ``partials``: (key, merged sketch) pairs, taken one at a time (see
        :func:`iter_merged`). ``closed`` holds rows of closed windows read back for late
        rows. With ``closing_ms``, a row the batch makes final keeps only its stored
        record, not the live sketch, unless its key is in ``keep_live``.
        """
        updates: dict[Key, OpenRow] = {}
        updated_us = batch_ts_ms * 1000
        for key, part in partials:
            current = self.open.get(key) or (closed or {}).get(key)
            if current is not None and current.last_batch >= batch_id:
                continue  # already holds this batch: a re-run after a crash
            if current is not None:
                # the batch's sketch is this key's own (see iter_merged): the open row's
                # merges into it, and stays as it is until the batch commits. Merging
                # is commutative down to the bytes (the sketches' laws), so this is
                # the row's sketch merged with the batch's.
                part.sketch.merge(current.value.sketch)
            record = _record(part, batch_id, updated_us)
            final = (closing_ms is not None
                     and key.start_us + part.window.size_s * US <= closing_ms * 1000)
            updates[key] = OpenRow(None if final and key not in (keep_live or ()) else part,
                                   batch_id, record)
        return updates

    def write(self, path: str, write: BatchWrite, app_id: str, batch_id: int) -> None:
        table = rows_table(write, SKETCHES_SCHEMA)
        commit(path, table, app_id=app_id, batch_id=batch_id,
               predicate=windows_predicate(write.windows))
        self.open.commit(write)
