"""What a scrape computes from the last published snapshot: sketch values of the newest
window (distinct estimates and bounds, top-k, quantiles, Bloom fill) and Delta log counts.

:class:`ScrapeCollector` is registered by
:class:`~streaming.observability.metrics.PipelineMetrics`; it takes no lock a batch holds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from streaming.units import US

NS = "streamsketch"
#: k of the HLL bounds: estimate -/+ k standard errors (k=2: about 95 %).
HLL_BOUND_K = 2.0
#: Longest item label a top-k series carries (longer items are cut).
MAX_ITEM_LABEL = 120
#: the quantiles exported per quantiles sketch (bounded label set)
WINDOW_QUANTILES = (0.5, 0.95, 0.99)


# -- the current window of one (window, sketch), all groups merged -----------------
@dataclass(frozen=True)
class WindowView:
    """The newest window of one (window name, sketch name), every group merged.

    Immutable once published; the values are computed on the first scrape that
    needs them and then cached.
    """

    query: str
    window: str
    sketch: str
    kind: str
    start_us: int
    groups: Mapping[str, Any]  # group key -> that group's merged sketch (not mutated)

    @cached_property
    def union(self) -> Any:
        import sketches

        return sketches.union(*self.groups.values())

    @cached_property
    def values(self) -> dict[str, Any]:
        s = self.union
        if self.kind in ("hll", "theta"):
            return {"estimate": s.estimate(), "lower": s.lower_bound(HLL_BOUND_K),
                    "upper": s.upper_bound(HLL_BOUND_K)}
        if self.kind == "cms":
            return {"items": s.total, "error_bound": s.error_bound(), "top": s.top()}
        if self.kind == "bloom":
            return {"fill": s.fill_ratio(), "fpr": s.expected_fpr()}
        if self.kind == "quantiles":
            if s.is_empty():
                return {"quantiles": []}
            qs = [float(v) for v in s.quantiles(WINDOW_QUANTILES)]
            return {"quantiles": list(zip(WINDOW_QUANTILES, qs, strict=True))}
        return {}


# -- Delta log, read incrementally --------------------------------------------------


class ScrapeCollector:
    """Values computed at scrape time from the last published snapshot (no batch lock)."""

    def __init__(self, m: Any) -> None:
        self._m = m

    def describe(self) -> Iterator[Metric]:
        return self._families({}, {}, {}, 0.0)

    def collect(self) -> Iterator[Metric]:
        views, delta, wms = self._m.published()
        return self._families(views, delta, wms, time.time())

    def _families(self, views: Mapping[tuple, WindowView],
                  delta: Mapping[tuple[str, str], tuple[int, int | None]],
                  watermarks: Mapping[str, float], now: float) -> Iterator[Metric]:
        wl = ["query", "window", "sketch"]

        def gauge(name: str, doc: str, labels: list[str] = wl) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{NS}_{name}", doc, labels=labels)

        lag = gauge("watermark_lag_seconds", "Now minus the event-time watermark", ["query"])
        start = gauge("window_start_timestamp_seconds",
                      "Start of the newest window the window_* series describe")
        est = gauge("window_distinct_estimate",
                    "Distinct count (HLL or Theta) of the newest window (groups merged)")
        lo = gauge("window_distinct_lower_bound",
                   f"Distinct estimate minus {HLL_BOUND_K:g} standard errors")
        hi = gauge("window_distinct_upper_bound",
                   f"Distinct estimate plus {HLL_BOUND_K:g} standard errors")
        items = gauge("window_cms_items",
                      "Items counted by the Count-Min sketch of the newest window")
        err = gauge("window_cms_error_bound_items",
                    "Most a Count-Min count can be over (epsilon x items)")
        top = gauge("window_top_item_count",
                    "Estimated count of the rank-th heavy hitter (k series at most)",
                    [*wl, "rank", "item"])
        quant = gauge("window_quantile",
                      "A quantile (0.5, 0.95, 0.99) of the quantiles sketch's field in the "
                      "newest window, groups merged, within the sketch's relative error",
                      [*wl, "quantile"])
        fill = gauge("window_bloom_fill_ratio", "Fraction of the Bloom filter's bits set")
        fpr = gauge("window_bloom_false_positive_ratio",
                    "Expected false-positive probability at the current fill")
        commits = CounterMetricFamily(f"{NS}_delta_commits", "Commits in the Delta table's log",
                                      labels=["query", "table"])
        files = gauge("delta_files", "Live data files of the Delta table", ["query", "table"])
        for q, wm in watermarks.items():
            lag.add_metric([q], max(0.0, now - wm))
        k = self._m.top_k_labels
        for v in views.values():
            labels = [v.query, v.window, v.sketch]
            if v.kind not in ("hll", "theta", "cms", "bloom", "quantiles"):
                continue
            try:
                vals = v.values
            except Exception:  # noqa: BLE001 - a broken sketch must not break the scrape
                self._m.errors.labels("scrape").inc()
                continue
            start.add_metric(labels, v.start_us / US)
            if v.kind in ("hll", "theta"):
                est.add_metric(labels, vals["estimate"])
                lo.add_metric(labels, vals["lower"])
                hi.add_metric(labels, vals["upper"])
            elif v.kind == "cms":
                items.add_metric(labels, vals["items"])
                err.add_metric(labels, vals["error_bound"])
                for rank, (item, count) in enumerate(vals["top"][:k], start=1):
                    top.add_metric([*labels, str(rank), str(item)[:MAX_ITEM_LABEL]], count)
            elif v.kind == "quantiles":
                for q, value in vals["quantiles"]:
                    quant.add_metric([*labels, f"{q:g}"], value)
            else:
                fill.add_metric(labels, vals["fill"])
                fpr.add_metric(labels, vals["fpr"])
        for (q, table), (n_commits, n_files) in delta.items():
            commits.add_metric([q, table], n_commits)
            if n_files is not None:
                files.add_metric([q, table], n_files)
        yield from (lag, start, est, lo, hi, items, err, top, quant, fill, fpr, commits, files)
