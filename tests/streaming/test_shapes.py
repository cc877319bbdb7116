"""The nested shape of the clickstream: the same events, the same answers.

``produce --shape nested`` sends the generator's events with their fields one level
down; ``streaming/specs/clickstream-nested.toml`` declares them by path. The pass over
them must give the windows the flat shape gives with the bundled spec: the same sketch
bytes, the same metrics (their columns named by path), the same quarantine reasons.
"""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa

from streaming.kafka.shapes import NESTED_PATHS, nest_event, nested_spec_text, nested_values
from streaming.spec.model import default_spec_path, load_spec, parse_spec
from streaming.spec.windows import column_part

START = dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC)


def test_the_shipped_nested_spec_is_the_bundled_one_by_path():
    bundled = default_spec_path().read_text()
    shipped = load_spec(default_spec_path().with_name("clickstream-nested.toml"))
    made = parse_spec(nested_spec_text(bundled))
    assert shipped.events == made.events and shipped.windows == made.windows
    assert shipped.source.topic == "clickstream-nested"
    assert set(dict(shipped.events.fields)) == {NESTED_PATHS.get(f, f) for f, _ in
                                                 load_spec(default_spec_path()).events.fields}


def test_records_that_are_not_objects_go_as_they_are():
    values = pa.array([None, b"", b'{"ts":', b"\xff\xfe", b"[1]",
                       b'{"user_id":"u1","amount":"N/A"}'], pa.binary())
    out = nested_values(values).to_pylist()
    assert out[:5] == values.to_pylist()[:5]
    assert json.loads(out[5]) == {"user": {"id": "u1"}, "page": {"amount": "N/A"}}
    assert nest_event({"ts": 1, "other": {"x": 1}}) == {"ts": 1, "other": {"x": 1}}


def _pass(spec, values):
    from streaming.engine.onepass import PassContext, run_pass
    from streaming.engine.reduce import ReduceContext, aggregate_rows, sketch_rows

    n = len(values)
    table = pa.table({"_key": pa.nulls(n, pa.binary()), "_value": values,
                      "_topic": pa.array(["t"] * n), "_partition": pa.array([0] * n, pa.int32()),
                      "_offset": pa.array(range(n), pa.int64()),
                      "_source_ts": pa.nulls(n, pa.timestamp("us", tz="UTC"))})
    now_ms = int(START.timestamp() * 1000) + 86_400_000
    parts = pa.Table.from_batches([run_pass(table, PassContext(spec, 0, now_ms))])
    rctx = ReduceContext(spec, 0, now_ms, 0, {}, {})
    aggs = {(r["window_name"], r["window_start"], r["group_key"]): r
            for rows in aggregate_rows(parts, rctx).values() for r in rows.to_pylist()}
    sks = {(r["window_name"], r["window_start"], r["group_key"], r["sketch_name"]): r["bytes"]
           for rows in sketch_rows(parts, rctx)[0].values() for r in rows.to_pylist()}
    quarantined = parts.filter(pa.compute.equal(parts.column("kind"), "q"))
    reasons = sorted(zip(quarantined.column("off").to_pylist(),
                         [r.split(":")[0] for r in quarantined.column("reason").to_pylist()],
                         strict=True))
    return aggs, sks, reasons


def test_the_nested_shape_gives_the_flat_shape_s_windows():
    from streaming.kafka.generator import GeneratorConfig, wire_chunks

    config = GeneratorConfig(seed=4, rate=100.0, start_time=START, users=3_000, pages=500,
                             out_of_order=0.05, malformed=0.02)
    flat = next(iter(wire_chunks(config))).values
    flat_spec = load_spec(default_spec_path())
    nested_spec = parse_spec(nested_spec_text(default_spec_path().read_text()))
    f_aggs, f_sks, f_bad = _pass(flat_spec, flat)
    n_aggs, n_sks, n_bad = _pass(nested_spec, nested_values(flat))
    assert f_sks == n_sks and len(f_sks) > 10
    assert f_bad == n_bad and len(f_bad) > 0
    assert f_aggs.keys() == n_aggs.keys()
    # the metric columns are named by path: sum_amount is sum_page_amount
    renamed = {f"{func}_{column_part(flat)}": f"{func}_{column_part(path)}"
               for flat, path in NESTED_PATHS.items() for func in ("sum", "n", "min", "max",
                                                                    "avg")}
    for key, row in f_aggs.items():
        other = n_aggs[key]
        for col, value in row.items():
            if col in ("updated_at", "group"):
                continue
            assert other[renamed.get(col, col)] == value, (key, col)


def test_avro_values_give_the_json_values_windows():
    """``produce --format avro``'s values and ``clickstream-avro.toml``: the windows of
    the same events as JSON with the bundled spec; the malformed records are quarantined
    at the same offsets (as invalid_avro where Avro cannot hold them)."""
    from streaming.kafka.generator import GeneratorConfig, wire_chunks
    from streaming.kafka.shapes import avro_values

    config = GeneratorConfig(seed=6, rate=100.0, start_time=START, users=3_000, pages=500,
                             out_of_order=0.05, malformed=0.02)
    flat = next(iter(wire_chunks(config))).values
    json_spec = load_spec(default_spec_path())
    avro_spec = load_spec(default_spec_path().with_name("clickstream-avro.toml"))
    assert avro_spec.events.format == "avro" and avro_spec.events.fields == \
        json_spec.events.fields
    j_aggs, j_sks, j_bad = _pass(json_spec, flat)
    a_aggs, a_sks, a_bad = _pass(avro_spec, avro_values(flat))
    assert j_sks == a_sks and len(j_sks) > 10
    assert [o for o, _ in j_bad] == [o for o, _ in a_bad] and j_bad
    assert {r for _, r in a_bad} <= {"invalid_avro", "null_value", "missing_time", "bad_time"}
    assert {k: {c: v for c, v in r.items() if c != "updated_at"} for k, r in j_aggs.items()} \
        == {k: {c: v for c, v in r.items() if c != "updated_at"} for k, r in a_aggs.items()}
