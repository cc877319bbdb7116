"""The merge stage without a JVM: column-built rows equal the one-by-one rows."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pyarrow as pa
import pytest

from streaming.engine.onepass import PassContext, run_pass
from streaming.engine.reduce import ReduceContext, sketch_rows
from streaming.engine.sketch_state import partial_record
from streaming.engine.tables import SKETCHES_SCHEMA
from streaming.spec.model import default_spec_path, load_spec

START = dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC)


BY_USER = """
[source]
topic = "t"
bootstrap_servers = "127.0.0.1:1"
[events]
time_field = "ts"
watermark = "2 minutes"
[events.fields]
user_id = "string"
page = "string"
amount = "double"
[[windows]]
name = "by_user"
size = "5 minutes"
group_by = ["user_id"]
metrics = ["count", "sum(amount)", "avg(amount)", "max(amount)"]
  [[windows.sketches]]
  name = "pages"
  kind = "hll"
  field = "page"
[sink]
path = "unused"
checkpoint = "unused"
"""


@pytest.fixture(scope="module", params=["bundled", "by_user"])
def passed(request):
    from streaming.kafka.generator import GeneratorConfig, generate
    from streaming.spec.model import parse_spec

    spec = (load_spec(default_spec_path()) if request.param == "bundled"
            else parse_spec(BY_USER))
    recs = list(generate(GeneratorConfig(seed=5, rate=5.0, start_time=START, users=3_000,
                                         pages=500, malformed=0.01), 6_000))
    n = len(recs)
    raw = pa.table({
        "_key": pa.array([r.key for r in recs], pa.binary()),
        "_value": pa.array([r.value for r in recs], pa.binary()),
        "_topic": pa.array(["t"] * n), "_partition": pa.array([i % 2 for i in range(n)],
                                                              pa.int32()),
        "_offset": pa.array(range(n), pa.int64()),
        "_source_ts": pa.nulls(n, pa.timestamp("us", tz="UTC"))})
    now_ms = int(START.timestamp() * 1000) + 3 * 3_600_000
    ctx = PassContext(spec, 0, now_ms)
    halves = [raw.filter(pa.compute.equal(raw.column("_partition"), p)) for p in (0, 1)]
    table = pa.concat_tables([pa.Table.from_batches([run_pass(h, ctx)]) for h in halves])
    return spec, table, now_ms


def test_column_built_partial_rows_equal_the_one_by_one_rows(passed):
    spec, table, now_ms = passed
    watermark_ms = int(START.timestamp() * 1000) + 10 * 60_000  # some windows final
    rctx = ReduceContext(spec, 3, now_ms, watermark_ms, {}, {})
    rows, views, open_state = sketch_rows(table, rctx)
    partial = rows[False].to_pylist()
    assert partial and rows[True].num_rows  # both kinds of cells are there
    schema = pa.schema([f for f in SKETCHES_SCHEMA if f.name != "final"])
    windows = {w.name: w for w in spec.windows}
    expected = []
    for r in partial:
        w = windows[r["window_name"]]
        sk = next(s for s in w.sketches if s.name == r["sketch_name"])
        start = (r["window_start"] - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
                 ) // dt.timedelta(microseconds=1)
        expected.append(partial_record(w, sk, start, r["group_key"], r["bytes"], 3,
                                       now_ms * 1000))
    assert pa.Table.from_pylist(expected, schema=schema).to_pylist() == partial
    # open windows: a partial row per cell, counted with its bytes
    assert sum(n for n, _ in open_state.values()) == len(partial)
    assert sum(b for _, b in open_state.values()) == sum(len(r["bytes"]) for r in partial)
    assert views  # the newest window of each (window, sketch)


def test_column_built_metric_rows_equal_the_one_by_one_rows(passed):
    from streaming.engine.aggregates import AggregateCells, parse_values
    from streaming.engine.reduce import aggregate_rows
    from streaming.engine.tables import aggregates_schema

    spec, table, now_ms = passed
    rctx = ReduceContext(spec, 3, now_ms, 0, {}, {})  # every window open
    got = aggregate_rows(table, rctx)
    assert got[True].num_rows == 0
    cells = AggregateCells(spec)
    parts: dict = {}
    m = table.filter(pa.compute.equal(table.column("kind"), "m"))
    for wi, ws, g, b in zip(*(m.column(c).to_pylist() for c in ("w", "ws", "g", "b")),
                            strict=True):
        parts.setdefault((wi, ws, g), []).append(parse_values(b))
    want = cells.rows()
    for (wi, ws, g), found in parts.items():
        want.add(spec.windows[wi], ws, g, cells.merge(found), 3)
    schema = pa.schema([f for f in aggregates_schema(spec) if f.name != "final"])

    def ordered(t):
        return sorted(t.to_pylist(), key=lambda r: (r["window_name"], r["window_start"],
                                                    r["group_key"]))

    assert ordered(got[False]) == ordered(want.table(schema, now_ms * 1000))
    assert any(len(v) > 1 for v in parts.values())
    if spec.windows[0].group_by == ("user_id",):  # cells seen once: the column-built path
        assert any(len(v) == 1 for v in parts.values())


def test_packed_stored_metrics_read_back_equal(passed):
    from decimal import Decimal

    from streaming.engine.stored_cells import pack_metrics, packed_columns, unpack_metrics

    spec, _, _ = passed
    cols = packed_columns(spec)
    n = 7
    data = {}
    for i, (name, typ) in enumerate(cols):
        if typ == "decimal":
            values = [Decimal("-12345678901234567890123.123456789"), None, Decimal("0.000000001"),
                      Decimal(i), Decimal("-1"), None, Decimal("99999999999999999999.5")]
            data[name] = pa.array(values, pa.decimal128(38, 9))
        elif typ == "double":
            data[name] = pa.array([1.5, None, -0.0, 1e300, float(i), None, -2.25], pa.float64())
        else:
            data[name] = pa.array([1, None, -(1 << 62), 0, i, 7, None], pa.int64())
    rows = pa.table(data)
    back = unpack_metrics(pack_metrics(rows, spec), spec)
    assert [n_ for n_, _ in cols] == list(back)
    for name, _ in cols:
        assert back[name].to_pylist() == rows.column(name).to_pylist(), name
    assert len(back[cols[0][0]]) == n


def test_final_rows_hold_the_merged_sketch_and_its_description(passed):
    import sketches
    from streaming.engine.sketch_state import describe, merge_cell

    spec, table, now_ms = passed
    watermark_ms = int(START.timestamp() * 1000) + 10 * 60_000
    rows, _, _ = sketch_rows(table, ReduceContext(spec, 3, now_ms, watermark_ms, {}, {}))
    final = rows[True].to_pylist()
    assert final
    s = table.filter(pa.compute.equal(table.column("kind"), "s"))
    parts: dict = {}
    for wi, ws, g, si, pane, b, items in zip(*(s.column(c).to_pylist() for c in (
            "w", "ws", "g", "s", "pane", "b", "items")), strict=True):
        w = spec.windows[wi]
        parts.setdefault((w.name, ws, g, w.sketches[si].name), []).append((pane, b, items))
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    for r in final:
        start = (r["window_start"] - epoch) // dt.timedelta(microseconds=1)
        want = merge_cell(parts[(r["window_name"], start, r["group_key"], r["sketch_name"])])
        assert r["bytes"] == want.to_bytes()
        est, lo, hi, top, stats = describe(r["kind"], sketches.from_bytes(r["bytes"]))
        assert (r["estimate"], r["lower_bound"], r["upper_bound"]) == (est, lo, hi)
        assert dict(r["stats"]) == stats


@pytest.mark.parametrize("seed", range(5))
def test_cell_ids_rank_rows_like_a_lexicographic_sort(seed: int) -> None:
    import numpy as np

    from streaming.engine.simple_cells import cell_ids

    rng = np.random.default_rng(seed)
    n = 5_000
    cols = [rng.integers(0, 3, n), rng.integers(-2**62, 2**62, 7)[rng.integers(0, 7, n)],
            rng.integers(0, 900, n)]
    owner, first = cell_ids(*cols)
    rows = list(zip(*(c.tolist() for c in cols), strict=True))
    distinct = sorted(set(rows))
    rank = {r: i for i, r in enumerate(distinct)}
    assert owner.tolist() == [rank[r] for r in rows]
    assert first.tolist() == [rows.index(r) for r in distinct]


@pytest.mark.parametrize("layout", ["one field", "none and one", "two fields"])
def test_group_column_parses_every_key_like_json(layout: str) -> None:
    import json
    import random

    import numpy as np

    from streaming.engine.simple_cells import group_column
    from streaming.spec.model import parse_spec

    by = {"one field": ([["user_id"]]), "none and one": [[], ["user_id"]],
          "two fields": [["user_id"], ["user_id", "page"]]}[layout]
    spec = parse_spec(BY_USER)
    windows = [replace(spec.windows[0], name=f"w{i}", group_by=tuple(g))
               for i, g in enumerate(by)]
    spec = replace(spec, windows=windows)
    rnd = random.Random(len(layout))
    pool = ["plain", "", 'a "quoted" one', "back\\slash", "ünï", "tab\there", None, "[x]"]
    w, keys = [], []
    for _ in range(500):
        wi = rnd.randrange(len(windows))
        w.append(wi)
        keys.append(json.dumps([rnd.choice(pool) for _ in by[wi]], ensure_ascii=False,
                               separators=(",", ":")))
    typ = pa.map_(pa.string(), pa.string())
    got = group_column(np.array(w, dtype=np.int64), pa.array(keys, pa.string()), spec, typ)
    want = [list(zip(by[wi], json.loads(k), strict=True)) for wi, k in zip(w, keys,
                                                                          strict=True)]
    assert got.to_pylist() == want
