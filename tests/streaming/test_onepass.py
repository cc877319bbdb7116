"""The engine's one pass, without a JVM: split-independent partials and exact merges.

The same batch split into 1 or N input partitions (as Spark splits a Kafka batch by
topic-partition, or ``minPartitions`` splits a partition further) must give the same
window values and byte-identical sketches once the driver merges the partials.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from streaming.engine.onepass import PassContext, run_pass, scaled_decimal
from streaming.engine.reduce import ReduceContext, aggregate_rows, sketch_rows
from streaming.spec.model import default_spec_path, load_spec

START = dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def spec():
    from dataclasses import replace

    from streaming.spec.windows import SketchSpec

    base = load_spec(default_spec_path())
    # plus a Count-Min over a near-uniform field with few candidates, where merging
    # the parts' candidate lists alone would depend on the split
    users = SketchSpec("users_cms", "cms", "user_id",
                       (("width", 64), ("depth", 3), ("top_k", 2)))
    minutely = base.windows[0]
    windows = (replace(minutely, sketches=(*minutely.sketches, users)), *base.windows[1:])
    return replace(base, windows=windows)


@pytest.fixture(scope="module")
def raw():
    from streaming.kafka.generator import GeneratorConfig, generate

    # few pages and users, so a Count-Min's candidates are far fewer than the distinct
    # items in some windows only if the split mattered
    cfg = GeneratorConfig(seed=3, rate=200.0, start_time=START, users=5_000, pages=2_000,
                          out_of_order=0.1, max_disorder=60.0, late=0.01, malformed=0.01)
    recs = list(generate(cfg, 12_000))
    n = len(recs)
    return pa.table({
        "_key": pa.array([r.key for r in recs], pa.binary()),
        "_value": pa.array([r.value for r in recs], pa.binary()),
        "_topic": pa.array(["t"] * n), "_partition": pa.array([i % 3 for i in range(n)],
                                                              pa.int32()),
        "_offset": pa.array(range(n), pa.int64()),
        "_source_ts": pa.nulls(n, pa.timestamp("us", tz="UTC"))}), recs


def _merged(spec, tables, ctx):
    parts = pa.concat_tables([pa.Table.from_batches([run_pass(t, ctx)]) for t in tables])
    # the merge stage, as one task would run it over every key
    rctx = ReduceContext(spec, 0, ctx.now_ms, ctx.watermark_ms, {}, {})
    aggs = {(r["window_name"], r["window_start"], r["group_key"]):
            {k: v for k, v in r.items() if k not in ("updated_at",)}
            for rows in aggregate_rows(parts, rctx).values() for r in rows.to_pylist()}
    sks = {(r["window_name"], r["window_start"], r["group_key"], r["sketch_name"]): r["bytes"]
           for rows in sketch_rows(parts, rctx)[0].values() for r in rows.to_pylist()}
    quarantine = parts.filter(pa.compute.equal(parts.column("kind"), "q"))
    return aggs, sks, quarantine


def _ctx(spec, watermark_ms=0):
    return PassContext(spec, watermark_ms, int(START.timestamp() * 1000) + 86_400_000)


@pytest.mark.parametrize("seed", range(3))
def test_any_split_gives_the_same_windows_and_bytes(spec, raw, seed):
    table, _ = raw
    ctx = _ctx(spec, int(START.timestamp() * 1000) + 20 * 60_000)
    whole = _merged(spec, [table], ctx)
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(table.num_rows, size=4, replace=False)).tolist()
    bounds = list(zip([0, *cuts], [*cuts, table.num_rows], strict=True))
    split = _merged(spec, [table.slice(a, b - a) for a, b in bounds], ctx)
    assert whole[0] == split[0]
    assert whole[1] == split[1]
    assert sorted(whole[2].column("off").to_pylist()) == sorted(split[2].column("off")
                                                                .to_pylist())
    assert whole[2].num_rows > 0


def test_the_pass_over_kafka_source_rows_equals_the_pass_over_raw_records(spec, raw):
    """Spark's Kafka rows go to the pass as they are; it renames what it reads and
    leaves out the topic (the spec's) and the timestamp type."""
    from streaming.engine.onepass import make_pass

    table, _ = raw
    n = table.num_rows
    source_ts = pa.array([1_700_000_000_000_000 + i for i in range(n)],
                         pa.timestamp("us", tz="UTC"))
    records = table.drop(["_topic", "_source_ts"]).append_column("_source_ts", source_ts)
    kafka = pa.table({
        "key": table.column("_key"), "value": table.column("_value"),
        "topic": pa.array(["other"] * n), "partition": table.column("_partition"),
        "offset": table.column("_offset"), "timestamp": source_ts,
        "timestampType": pa.array([0] * n, pa.int32())})
    ctx = _ctx(spec, int(START.timestamp() * 1000) + 20 * 60_000)
    via_kafka = list(make_pass(ctx, kafka_rows=True)(iter(kafka.to_batches(3_000))))
    via_records = list(make_pass(ctx)(iter(records.to_batches(3_000))))
    got, want = pa.Table.from_batches(via_kafka), pa.Table.from_batches(via_records)
    # the per-partition stats name the worker; everything else must match
    not_stats = pa.compute.not_equal(got.column("kind"), "p")
    assert got.filter(not_stats).equals(
        want.filter(pa.compute.not_equal(want.column("kind"), "p")))
    quarantined = got.filter(pa.compute.equal(got.column("kind"), "q"))
    assert quarantined.num_rows > 0
    assert set(quarantined.column("topic").to_pylist()) == {spec.source.topic}
    offsets = quarantined.column("off").to_pylist()
    assert quarantined.column("src_ts").to_pylist() == source_ts.take(offsets).to_pylist()


def test_window_values_equal_an_independent_recomputation(spec, raw):
    table, recs = raw
    late_before = int(START.timestamp() * 1000) + 20 * 60_000
    aggs, _, quarantine = _merged(spec, [table], _ctx(spec, late_before))
    late = {o for o, r in zip(quarantine.column("off").to_pylist(),
                              quarantine.column("reason").to_pylist(), strict=True)
            if r.startswith("late: ")}
    minutely = spec.window("minutely")
    truth: dict = {}
    n_late = 0
    for off, r in enumerate(recs):
        if r.event is None:
            continue
        t_us = int(dt.datetime.fromisoformat(r.event["ts"]).timestamp() * 1_000_000)
        if t_us < late_before * 1000:
            n_late += 1
            assert off in late
            continue
        ws = t_us - t_us % (minutely.size_s * 1_000_000)
        e = truth.setdefault(ws, {"count": 0, "sum": Decimal(0), "max": None})
        e["count"] += 1
        if r.event["amount"] is not None:
            e["sum"] += Decimal(repr(r.event["amount"]))
            e["max"] = max(e["max"] or -1e300, r.event["amount"])
    assert n_late == len(late) > 0
    got = {k[1]: v for k, v in aggs.items() if k[0] == "minutely"}
    assert set(got) == set(truth)
    for ws, e in truth.items():
        assert got[ws]["count"] == e["count"]
        assert (got[ws]["sum_amount"] or Decimal(0)) == e["sum"]
        assert got[ws]["max_amount"] == e["max"]


def test_group_keys_are_canonical_json(spec, raw):
    table, recs = raw
    aggs, _, _ = _merged(spec, [table], _ctx(spec))
    countries = {json.loads(k[2])[0] for k in aggs if k[0] == "hourly_by_country"}
    assert countries == {r.event["country"] for r in recs if r.event is not None}


@pytest.mark.parametrize("typ,values,keys", [
    # a long group stays "3" in a partition that also holds a null (it once became "3.0")
    (pa.int64(), [[3, None, 3], [3, 4]], ['["3"]', "[null]", '["4"]']),
    # a NaN and a null are one missing value; -0.0 is 0.0, whichever comes first
    (pa.float64(), [[-0.0, float("nan"), 2.5], [0.0, None]], ['["0.0"]', "[null]", '["2.5"]']),
    (pa.bool_(), [[True, None], [False]], ['["true"]', "[null]", '["false"]']),
    # strings, as Arrow may hand them over dictionary-encoded
    (pa.dictionary(pa.int32(), pa.string()), [["b", None, "b"], ["a"]],
     ['["b"]', "[null]", '["a"]']),
])
def test_a_group_has_one_key_in_every_partition(typ, values, keys):
    from streaming.engine.group_keys import group_keys

    class Window:
        group_by = ("g",)

    got: set[str] = set()
    for part in values:
        codes, part_keys = group_keys(Window, {"g": pa.array(part, typ)}, len(part))
        assert len(set(part_keys)) == len(part_keys)  # one code per key
        got |= {part_keys[c] for c in codes.tolist()}
    assert got == set(keys)


def test_scaled_decimal_rounds_half_up_from_the_shortest_form():
    assert scaled_decimal(0.1) == 100_000_000
    assert scaled_decimal(1e-10) == 0
    assert scaled_decimal(5e-10) == 1
    assert scaled_decimal(-5e-10) == -1
    assert scaled_decimal(123456789.123456789) == int(Decimal(repr(123456789.123456789))
                                                      .scaleb(9).quantize(Decimal(1),
                                                                          "ROUND_HALF_UP"))


def test_an_item_heavy_only_across_partitions_makes_the_candidates(spec):
    # Each partition holds 64 items three times and X twice: X ranks 65th in each (out
    # of their 64 candidates) but first in the whole batch, as a one-pass build finds.
    from dataclasses import replace

    from streaming.spec.windows import SketchSpec, WindowSpec

    cms = SketchSpec("pages", "cms", "page", (("width", 4096), ("depth", 4), ("top_k", 16)))
    window = WindowSpec("w", 60, 60, (), spec.windows[0].metrics, (cms,))
    one = replace(spec, windows=(window,))

    def records(prefix):
        pages = [f"{prefix}{i}" for i in range(64)] * 3 + ["X", "X"]
        return [json.dumps({"ts": "2026-11-23T10:00:30Z", "page": p}).encode() for p in pages]

    def table(values, part):
        n = len(values)
        return pa.table({"_key": pa.nulls(n, pa.binary()), "_value": pa.array(values,
                                                                              pa.binary()),
                         "_topic": pa.array(["t"] * n), "_partition": pa.array([part] * n,
                                                                              pa.int32()),
                         "_offset": pa.array(range(n), pa.int64()),
                         "_source_ts": pa.nulls(n, pa.timestamp("us", tz="UTC"))})

    a, b = records("a"), records("b")
    whole = _merged(one, [table(a + b, 0)], _ctx(one))[1]
    split = _merged(one, [table(a, 0), table(b, 1)], _ctx(one))[1]
    assert whole == split
    import sketches

    [(_, data)] = whole.items()
    assert sketches.from_bytes(data).top(1) == [("X", 4)]


def test_freed_memory_goes_back_to_the_system():
    """A pass frees what it built; on glibc the process's resident size falls back."""
    import sys

    from streaming.engine.memory import release_freed_memory

    if not sys.platform.startswith("linux"):
        pytest.skip("malloc_trim is glibc's (Linux)")

    def rss_mb() -> int:
        with open("/proc/self/status") as fh:
            return next(int(x.split()[1]) for x in fh if x.startswith("VmRSS:")) // 1024

    before = rss_mb()
    # blocks above pymalloc's 512 bytes and below the mmap threshold: glibc's heap
    junk = [bytes(1000) for _ in range(330_000)]
    junk.append(bytes(1000))  # the last block stays: the heap cannot shrink from its top
    high = rss_mb()
    del junk[:-1]
    if not release_freed_memory():
        pytest.skip("this C library has no malloc_trim")
    after = rss_mb()
    assert high - before > 250
    assert after - before < (high - before) / 2, (before, high, after)



def test_after_allocate_returnably_arrow_s_freed_buffers_go_back_with_a_trim():
    """Arrow's buffers come from malloc, so the trim after a task returns them too
    (mimalloc, pyarrow's default pool, keeps freed segments of its own)."""
    import sys

    import numpy as np

    from streaming.engine.memory import allocate_returnably, release_freed_memory

    if not sys.platform.startswith("linux"):
        pytest.skip("malloc_trim is glibc's (Linux)")
    allocate_returnably()
    assert pa.default_memory_pool().backend_name == "system"

    def rss_mb() -> int:
        with open("/proc/self/status") as fh:
            return next(int(x.split()[1]) for x in fh if x.startswith("VmRSS:")) // 1024

    values = np.arange(20_000, dtype=np.int64)
    for _ in range(3):
        before = rss_mb()
        arrays = [pa.array(values + i) for i in range(2_000)]  # 2,000 x 160 KB via Arrow
        keep = [bytes(2000) for _ in range(2_000)]  # small live blocks among them
        high = rss_mb()
        del arrays
        release_freed_memory()
        after = rss_mb()
        assert high - before > 250, (before, high)
        assert after - before < (high - before) / 3, (before, high, after)
        del keep


LIST_SPEC = """
[source]
topic = "issues"
[events]
time_field = "ts"
[events.fields]
repo = "string"
"payload.labels" = "list<string>"
"payload.scores" = "list<double>"
[[windows]]
name = "hourly"
size = "1 hour"
group_by = ["repo"]
  [[windows.sketches]]
  name = "labels"
  kind = "hll"
  field = "payload.labels"
  [[windows.sketches]]
  name = "top_labels"
  kind = "cms"
  field = "payload.labels"
  epsilon = 0.01
  delta = 0.05
  top_k = 3
  [[windows.sketches]]
  name = "seen_labels"
  kind = "bloom"
  field = "payload.labels"
  capacity = 1000
  error_rate = 0.01
  [[windows.sketches]]
  name = "scores"
  kind = "quantiles"
  field = "payload.scores"
[sink]
path = "./d"
checkpoint = "./c"
"""


def test_a_sketch_over_a_list_field_is_the_sketch_of_its_elements():
    """Each element counts once, in its record's cell, whatever the split; the same
    bytes as a sketch updated with the elements directly."""
    from streaming.spec.model import parse_spec

    spec = parse_spec(LIST_SPEC)
    rng = np.random.default_rng(5)
    events = []
    for i in range(3000):
        n = int(rng.integers(0, 5))
        labels = [f"l{int(rng.integers(40))}" for _ in range(n)] + ([None] if i % 97 == 0
                                                                      else [])
        event = {"ts": (START + dt.timedelta(seconds=3 * i)).isoformat(),
                 "repo": f"r{i % 3}",
                 "payload": {"labels": labels,
                             "scores": [float(x) for x in rng.uniform(0, 100, size=n)]}}
        if i % 50 == 0:
            del event["payload"]["labels"]  # a missing list: nothing to add
        events.append(event)
    n = len(events)
    table = pa.table({"_key": pa.nulls(n, pa.binary()),
                      "_value": pa.array([json.dumps(e).encode() for e in events]),
                      "_topic": pa.array(["t"] * n), "_partition": pa.array([0] * n, pa.int32()),
                      "_offset": pa.array(range(n), pa.int64()),
                      "_source_ts": pa.nulls(n, pa.timestamp("us", tz="UTC"))})
    ctx = _ctx(spec)
    _, whole, quarantine = _merged(spec, [table], ctx)
    _, split, _ = _merged(spec, [table.slice(0, 1234), table.slice(1234)], ctx)
    assert quarantine.num_rows == 0 and whole == split
    window = spec.window("hourly")
    for sk in window.sketches:
        cells: dict = {}
        for e in events:
            t = dt.datetime.fromisoformat(e["ts"])
            start = t.replace(minute=0, second=0, microsecond=0)
            key = (start, json.dumps([e["repo"]], separators=(",", ":")))
            cells.setdefault(key, []).extend(
                v for v in e["payload"].get(sk.field.split(".")[1], []) if v is not None)
        for (start, group), values in cells.items():
            got = whole.get(("hourly", start, group, sk.name))
            want = sk.new().update(values) if values else None
            if want is None or want.is_empty():
                assert got is None or sketches_from(got).is_empty()
                continue
            assert got == want.to_bytes(), (sk.name, start, group)


def sketches_from(data: bytes):
    import sketches

    return sketches.from_bytes(data)
