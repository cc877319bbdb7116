"""What every sketch group shares: optional baselines, results, timing, data, our sketches."""

from __future__ import annotations

import collections
import gc
import importlib
import importlib.metadata
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
GROUPS = ("hash", "hll", "cms", "bloom", "merge", "estimate", "memory", "datasketches")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "sketches.json"
HLL_P = 14
CMS_EPSILON = 0.001
CMS_DELTA = 0.01
CMS_TOP_K = 20
FREQ_LG_MAX_K = 10
BLOOM_FPR = 0.01
MERGE_SKETCHES = 1000
MERGE_ITEMS_EACH = 10_000
ESTIMATE_COPIES = 200
QUERY_N = 1_000_000
FPR_PROBE_N = 1_000_000
STRING_DISTINCT = 1_000_000
PROBE_N = 1_000_000


def _try_import(name: str) -> tuple[Any, str | None]:
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # noqa: BLE001 - any failure means "unavailable"
        return None, f"{type(exc).__name__}: {exc}"


def _load_ours() -> tuple[Any, str | None]:
    mod, err = _try_import("sketches")
    if mod is None:
        return None, err
    try:
        mod.HyperLogLog(HLL_P).update(np.array([1, 2], dtype=np.int64))
    except Exception as exc:  # noqa: BLE001
        return (
            None,
            f"sketches imported but HyperLogLog is not usable yet: {type(exc).__name__}: {exc}",
        )
    return mod, None


pa, PA_ERR = _try_import("pyarrow")
datasketch, DATASKETCH_ERR = _try_import("datasketch")
ds, DS_ERR = _try_import("datasketches")
rbloom, RBLOOM_ERR = _try_import("rbloom")
ours, OURS_ERR = _load_ours()


@dataclass
class Row:
    key: str  # stable id used for ratios, e.g. "hll.int64.ours"
    group: str
    name: str
    impl: str
    data: str
    input: str
    unit: str  # "items/s", "ms", "us/call", "MiB"
    items: int = 0  # items processed per timed call (throughput rows)
    times_s: list[float] = field(default_factory=list)
    median: float | None = None  # in ``unit``
    best: float | None = None  # in ``unit``; the best of the repeats
    note: str = ""
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Results:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        status = row.error if row.error else f"{fmt_value(row.median, row.unit)}"
        print(f"  [{row.group}] {row.name} / {row.impl} / {row.data}: {status}", flush=True)
        return row

    def get(self, key: str) -> Row | None:
        for row in self.rows:
            if row.key == key and row.error is None and row.median is not None:
                return row
        return None


def _time_calls(
    fn: Callable[[Any], Any], setup: Callable[[], Any] | None, repeat: int
) -> list[float]:
    """Wall time of ``fn(setup())`` ``repeat`` times; setup is never timed; GC off while timing."""
    times = []
    for _ in range(repeat):
        state = setup() if setup is not None else None
        gc.collect()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            t0 = time.perf_counter()
            fn(state)
            t1 = time.perf_counter()
        finally:
            if was_enabled:
                gc.enable()
        times.append(t1 - t0)
        del state
    return times


def consume(iterator: Any) -> None:
    collections.deque(iterator, maxlen=0)


def per_item_update(items: list[Any]) -> Callable[[Any], None]:
    """The timed call of a baseline with no batch API: ``update`` item by item."""
    return lambda sk: consume(map(sk.update, items))


def measure_throughput(
    results: Results,
    *,
    key: str,
    group: str,
    name: str,
    impl: str,
    data: str,
    input_desc: str,
    items: int,
    fn: Callable[[Any], Any],
    setup: Callable[[], Any] | None,
    repeat: int,
    note: str = "",
    extra: dict[str, Any] | None = None,
) -> Row:
    row = Row(
        key=key,
        group=group,
        name=name,
        impl=impl,
        data=data,
        input=input_desc,
        unit="items/s",
        items=items,
        note=note,
        extra=dict(extra or {}),
    )
    return _timed(results, row, fn, setup, repeat, lambda t: items / t)


def _timed(
    results: Results,
    row: Row,
    fn: Callable[[Any], Any],
    setup: Callable[[], Any] | None,
    repeat: int,
    value: Callable[[float], float],
) -> Row:
    """Time ``fn`` into ``row`` (``value`` turns seconds into the row's unit) and add it."""
    try:
        times = _time_calls(fn, setup, repeat)
        row.times_s = times
        row.median = value(statistics.median(times))
        row.best = value(min(times))
    except Exception as exc:  # noqa: BLE001 - record and go on
        row.error = f"{type(exc).__name__}: {exc}"
    return results.add(row)


def skipped(
    results: Results,
    *,
    key: str,
    group: str,
    name: str,
    impl: str,
    data: str,
    reason: str,
    unit: str = "items/s",
) -> Row:
    return results.add(
        Row(
            key=key,
            group=group,
            name=name,
            impl=impl,
            data=data,
            input="-",
            unit=unit,
            error=f"skipped: {impl} unavailable",
            extra={"reason": reason},
        )
    )


def skipped_each(
    results: Results,
    *,
    key: str,
    group: str,
    name: str,
    impl: str,
    reason: str,
    datas: tuple[str, ...] = ("int64", "strings"),
) -> None:
    """One :func:`skipped` row per data kind; ``key`` holds ``{d}`` for the kind."""
    for d in datas:
        skipped(
            results, key=key.format(d=d), group=group, name=name, impl=impl, data=d, reason=reason
        )


class Data:
    """Seeded inputs, built once; baseline-friendly views are built lazily and never timed."""

    def __init__(self, n: int, seed: int, slow_n: int) -> None:
        t0 = time.perf_counter()
        self.n = n
        self.seed = seed
        self.slow_n = min(slow_n, n)
        rng = np.random.default_rng(seed)
        info = np.iinfo(np.int64)
        self.ints = rng.integers(info.min, info.max, size=n, dtype=np.int64, endpoint=True)
        # 1 M distinct "user-<id>" strings; ids log-uniform in [1e5, 1e11) so lengths spread
        # over 11-16 bytes; the n values are uniform draws from that pool.
        raw_ids = np.floor(10.0 ** rng.uniform(5.0, 11.0, size=STRING_DISTINCT * 6 // 5))
        pool_ids = np.unique(raw_ids.astype(np.int64))
        rng.shuffle(pool_ids)
        pool_ids = pool_ids[:STRING_DISTINCT]
        pool = np.array([f"user-{i}" for i in pool_ids.tolist()], dtype=object)
        idx = rng.integers(0, len(pool), size=n)
        self.str_obj = pool[idx]  # object array sharing the pool's str objects
        self.str_arrow = (
            pa.array(pool.tolist(), type=pa.string()).take(pa.array(idx)) if pa else None
        )
        self.distinct_strings = int(np.unique(idx).size)
        lengths = np.array([len(s) for s in pool.tolist()])
        self.string_len = (int(lengths.min()), float(lengths.mean()), int(lengths.max()))
        self.build_s = time.perf_counter() - t0
        self._lists: dict[str, list[Any]] = {}

    def int_list(self) -> list[int]:
        if "int" not in self._lists:
            self._lists["int"] = self.ints.tolist()
        return self._lists["int"]

    def str_list(self) -> list[str]:
        if "str" not in self._lists:
            self._lists["str"] = self.str_obj.tolist()
        return self._lists["str"]

    def strings(self, form: str) -> Any:
        return self.str_arrow if form == "arrow" else self.str_obj

    def describe(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "seed": self.seed,
            "int64": "uniform random over the full int64 range (numpy default_rng)",
            "strings": {
                "format": "'user-<id>'",
                "distinct_in_pool": STRING_DISTINCT,
                "distinct_present": self.distinct_strings,
                "length_bytes_min_mean_max": list(self.string_len),
                "distribution": "uniform draws from the pool",
                "forms": ["numpy object array", "pyarrow StringArray"]
                if pa
                else ["numpy object array"],
            },
            "slow_subset_n": self.slow_n,
            "build_seconds": round(self.build_s, 3),
        }


FORM_LABEL = {"arrow": "pyarrow StringArray", "object": "numpy object array"}


def pick_string_form(
    data: Data, op: Callable[[Any], Any], probes: dict[str, Any], label: str
) -> str:
    """Time ``op`` once on each string form (first ``PROBE_N`` items) and return the faster one."""
    forms = ["object"] + (["arrow"] if data.str_arrow is not None else [])
    m = min(PROBE_N, data.n)
    rates: dict[str, Any] = {}
    for form in forms:
        sample = data.strings(form)[:m]
        try:
            op(data.strings(form)[:1000])  # warm-up
            t = min(_time_calls(lambda _s, s=sample: op(s), None, 1))
            rates[form] = m / t
        except Exception as exc:  # noqa: BLE001
            rates[form] = f"{type(exc).__name__}: {exc}"
    usable = {f: r for f, r in rates.items() if isinstance(r, float)}
    chosen = max(usable, key=usable.get) if usable else forms[0]
    probes[label] = {"probe_items": m, "items_per_s": rates, "chosen": chosen}
    return chosen


def form_desc(form: str, probes: dict[str, Any], label: str) -> str:
    p = probes.get(label, {})
    rates = p.get("items_per_s", {})
    others = ", ".join(
        f"{f} {fmt_rate(r)}" if isinstance(r, float) else f"{f} failed" for f, r in rates.items()
    )
    return f"{FORM_LABEL[form]} (fastest; probe on {p.get('probe_items', 0):,}: {others})"


def measure_ours_update(
    data: Data,
    res: Results,
    probes: dict[str, Any],
    *,
    key: str,
    group: str,
    name: str,
    setup: Callable[[], Any],
    repeat: int,
    label: str,
    note: str = "",
) -> None:
    """Rows of our ``update`` on the int64 array and on the faster string form (picked
    under ``label``); ``key`` holds ``{d}`` for the data kind."""
    setup().update(data.ints[:1000])  # warm-up
    measure_throughput(
        res,
        key=key.format(d="int64"),
        group=group,
        name=name,
        impl="sketches",
        data="int64",
        input_desc="numpy int64 array",
        items=data.n,
        fn=lambda sk: sk.update(data.ints),
        setup=setup,
        repeat=repeat,
        note=note,
    )
    form = pick_string_form(data, lambda s: setup().update(s), probes, label)
    strings = data.strings(form)
    measure_throughput(
        res,
        key=key.format(d="strings"),
        group=group,
        name=name,
        impl="sketches",
        data="strings",
        input_desc=form_desc(form, probes, label),
        items=data.n,
        fn=lambda sk: sk.update(strings),
        setup=setup,
        repeat=repeat,
        note=note,
    )


def measure_ms(
    res: Results,
    *,
    key: str,
    group: str,
    name: str,
    impl: str,
    data: str,
    input_desc: str,
    fn: Callable[[Any], Any],
    setup: Callable[[], Any] | None,
    repeat: int,
    note: str = "",
    per_call: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Row:
    """Latency row: ``ms`` total, or ``us/call`` when ``per_call`` calls happen per timed run."""
    unit = "us/call" if per_call else "ms"
    row = Row(
        key=key,
        group=group,
        name=name,
        impl=impl,
        data=data,
        input=input_desc,
        unit=unit,
        note=note,
        extra=dict(extra or {}),
    )
    scale = 1e6 / per_call if per_call else 1e3
    return _timed(res, row, fn, setup, repeat, lambda t: t * scale)


def fmt_rate(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1e9:
        return f"{v / 1e9:.2f} G/s"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M/s"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k/s"
    return f"{v:.1f} /s"


def fmt_ratio(v: float) -> str:
    if v >= 10:
        return f"{v:.1f}x"
    if v >= 0.1:
        return f"{v:.2f}x"
    return f"{v:.3g}x"


def fmt_fpr(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "items/s":
        return fmt_rate(v)
    if unit == "ms":
        return f"{v:.2f} ms"
    if unit == "us/call":
        return f"{v:.1f} us"
    if unit == "MiB":
        return f"{v:.1f} MiB"
    return f"{v:g} {unit}"
