"""The pipeline against exact ground truth: real Kafka, real Spark, real Delta.

One generated clickstream (out-of-order, late and malformed records included) is
produced once and processed once per module; each test checks one promise:
every record is accounted for exactly once, metrics equal a pandas recomputation,
sketch bytes equal sketches built directly from the ground-truth rows, and the
query layer answers from the stored windows.

Which records are late is derived from the generated events, not read from the
pipeline (``lateness.py``): a short lead-in run first sets the watermark, then the
clickstream, whose in-order and out-of-order events all lie within the watermark
delay of its latest one, is read in batches of its own; the generator's late
events are hours older than any watermark of those batches.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from dataclasses import replace
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from cells_read import spark_cells
from lateness import Runs, event_ms

pytestmark = pytest.mark.integration

N_EVENTS = 4_000
START = dt.datetime(2026, 11, 23, 10, 0, 0, tzinfo=dt.UTC)
LEAD_IN = 200  # in-order events half an hour before START, read by a run of their own
# generator reason -> quarantine reason code
REASON_CODE = {"invalid_json": "invalid_json", "invalid_utf8": "invalid_utf8",
               "wrong_type": "wrong_type", "missing_time": "missing_time",
               "null_value": "null_value", "empty_value": "invalid_json",
               "bad_time": "bad_time"}


def generator_config():
    from streaming.kafka.generator import GeneratorConfig

    # 80 s of events, out of order by up to 30 s: within the bundled spec's 2-minute delay
    return GeneratorConfig(seed=7, rate=50.0, start_time=START, users=3_000, pages=400,
                           out_of_order=0.1, max_disorder=30.0, late=0.03, malformed=0.03)


def lead_in_config():
    from streaming.kafka.generator import GeneratorConfig

    return GeneratorConfig(seed=8, rate=20.0, start_time=START - dt.timedelta(minutes=30),
                           users=3_000, pages=400)


def pipeline_spec(topic, bootstrap, root, *, per_trigger=700):
    from streaming.spec.model import default_spec_path, load_spec

    spec = load_spec(default_spec_path())
    return replace(spec,
                   source=replace(spec.source, topic=topic, bootstrap_servers=bootstrap,
                                  max_offsets_per_trigger=per_trigger),
                   sink=replace(spec.sink, path=str(root / "delta"),
                                checkpoint=str(root / "checkpoints")))


def consume_all(bootstrap, topic, expected):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=10_000)
    out = []
    for msg in consumer:
        out.append((msg.partition, msg.offset, msg.value))
        if len(out) >= expected:
            break
    consumer.close()
    return out


def derive_late(spec, consumed, by_value, lead_in: set) -> tuple[set, tuple[int, int]]:
    """The positions of the late records, from the events alone; the watermark bounds of
    the clickstream's batches."""
    def parsed(in_lead_in: bool) -> list[tuple[tuple[int, int], int]]:
        return [((p, o), event_ms(by_value[v]["ts"])) for p, o, v in consumed
                if v in by_value and (v in lead_in) == in_lead_in]

    runs = Runs(spec.events.watermark_s)
    assert not any(runs.add((pos[0], ms) for pos, ms in parsed(True)))
    stream = parsed(False)
    flags = runs.add((pos[0], ms) for pos, ms in stream)
    late = {pos for (pos, _), is_late in zip(stream, flags, strict=True) if is_late}
    return late, (runs.low_ms, runs.high_ms)


@pytest.fixture(scope="module")
def run(kafka, spark, tmp_path_factory):
    """Produce the stream, run the pipeline over it (available-now), gather ground truth."""
    from streaming.engine.pipeline import Pipeline
    from streaming.kafka.generator import generate
    from streaming.kafka.producer import produce

    topic = f"pipeline-truth-{id(spark) % 100000}"
    root = tmp_path_factory.mktemp("pipeline")
    spec = pipeline_spec(topic, kafka.bootstrap_servers, root)
    summaries = []
    # two runs: the lead-in, then the clickstream
    for config, count in ((lead_in_config(), LEAD_IN), (generator_config(), N_EVENTS)):
        produce(kafka.bootstrap_servers, topic, config, count=count, partitions=2)
        pipeline = Pipeline(spark, spec, on_batch=summaries.append)
        pipeline.run(available_now=True, timeout=600)
        assert pipeline.query.exception() is None
    lead_in = list(generate(lead_in_config(), LEAD_IN))
    records = lead_in + list(generate(generator_config(), N_EVENTS))
    consumed = consume_all(kafka.bootstrap_servers, topic, LEAD_IN + N_EVENTS)
    assert len(consumed) == LEAD_IN + N_EVENTS

    by_value: dict = {}
    bad_code: dict = {}
    for r in records:
        if r.event is not None:
            by_value[r.value] = r.event
        else:
            code = REASON_CODE[r.kind.split(":", 1)[1]]
            assert bad_code.setdefault(r.value, code) == code
    late, bounds = derive_late(spec, consumed, by_value, {r.value for r in lead_in})
    # the generator's own labels agree: its late events, and nothing else
    designed = {r.value for r in records if r.kind == "late"}
    assert {v for p, o, v in consumed if (p, o) in late} == designed
    return {"spec": spec, "consumed": consumed, "by_value": by_value, "bad_code": bad_code,
            "summaries": summaries, "topic": topic, "pipeline": pipeline, "late": late,
            "watermark_bounds": bounds}


def _quarantine(spark, spec):
    rows = spark.read.format("delta").load(f"{spec.sink.path}/quarantine").collect()
    return {(r["partition"], r["offset"]): r for r in rows}, len(rows)


def _truth_frame(run):
    rows = []
    for part, off, value in run["consumed"]:
        event = run["by_value"].get(value)
        if event is None or (part, off) in run["late"]:
            continue
        ts = pd.Timestamp(event["ts"])
        rows.append({"et_us": ts.value // 1000, **{k: event[k] for k in
                     ("user_id", "page", "amount", "country")}})
    return pd.DataFrame(rows)


def test_every_record_is_accounted_for_exactly_once(spark, run):
    quarantined, n_rows = _quarantine(spark, run["spec"])
    assert n_rows == len(quarantined), "a record was quarantined twice"
    malformed = {(p, o): run["bad_code"][v] for p, o, v in run["consumed"]
                 if v not in run["by_value"]}
    assert malformed, "the generator made no malformed records"
    not_late = {k: r["reason_code"] for k, r in quarantined.items() if r["reason_code"] != "late"}
    assert not_late == malformed
    late = run["late"]
    assert late, "no record was late: the test would not exercise the watermark"
    assert {k for k, r in quarantined.items() if r["reason_code"] == "late"} == late
    valid_positions = {(p, o) for p, o, v in run["consumed"] if v in run["by_value"]}
    for key in late:
        row = quarantined[key]
        assert row["event_time"] is not None and row["reason"].startswith("late: ")
    total = sum(s.rows for s in run["summaries"])
    assert total == LEAD_IN + N_EVENTS
    assert sum(s.valid for s in run["summaries"]) == len(valid_positions) - len(late)
    # quarantine keeps raw bytes and provenance
    for (p, o, v) in run["consumed"]:
        if (p, o) in quarantined:
            got = quarantined[(p, o)]
            assert (bytes(got["value"]) if got["value"] is not None else None) == v
            assert got["topic"] == run["topic"]


def _expected_aggregates(truth, window):
    size, slide = window.size_s * 1_000_000, window.slide_s * 1_000_000
    pane = truth["et_us"] - truth["et_us"] % slide
    parts = []
    for i in range(size // slide):
        part = truth.assign(ws=pane - i * slide)
        parts.append(part)
    frame = pd.concat(parts)
    keys = ["ws"] + list(window.group_by)
    out = {}
    for key, g in frame.groupby(keys):
        key = key if isinstance(key, tuple) else (key,)
        gk = json.dumps([str(v) for v in key[1:]], separators=(",", ":"))
        amounts = [Decimal(repr(a)) for a in g["amount"] if a is not None and not pd.isna(a)]
        out[(int(key[0]), gk)] = {
            "count": len(g),
            "sum_amount": sum(amounts, Decimal(0)) if amounts else None,
            "n_amount": len(amounts),
            "max_amount": max((float(a) for a in amounts), default=None),
            "min_amount": min((float(a) for a in amounts), default=None),
        }
    return out


def test_windowed_metrics_equal_exact_ground_truth(spark, run):

    spec = run["spec"]
    truth = _truth_frame(run)
    for window in spec.windows:
        expected = _expected_aggregates(truth, window)
        rows = spark_cells(spark, f"{spec.sink.path}/aggregates", window.name)
        got = {(r["ws"], r["group_key"]): r for r in rows}
        assert set(got) == set(expected), window.name
        for key, exp in expected.items():
            row = got[key]
            assert row["count"] == exp["count"], (window.name, key)
            assert row["window_end"] - row["window_start"] == dt.timedelta(seconds=window.size_s)
            if "sum(amount)" in [m.text for m in window.metrics]:
                got_sum = row["sum_amount"]
                assert (got_sum if got_sum is None else got_sum.normalize()) == \
                    (exp["sum_amount"] if exp["sum_amount"] is None
                     else exp["sum_amount"].normalize()), (window.name, key)
            if "max(amount)" in [m.text for m in window.metrics]:
                assert row["max_amount"] == exp["max_amount"]
            if "min(amount)" in [m.text for m in window.metrics]:
                assert row["min_amount"] == exp["min_amount"]
            if "avg(amount)" in [m.text for m in window.metrics]:
                assert row["n_amount"] == exp["n_amount"]
                if exp["n_amount"]:
                    assert row["avg_amount"] == pytest.approx(
                        float(exp["sum_amount"]) / exp["n_amount"], rel=1e-12)


def test_final_flag_follows_the_last_watermark(spark, run):

    spec = run["spec"]
    wm_ms = run["summaries"][-1].watermark_ms
    low, high = run["watermark_bounds"]
    assert 0 < low <= wm_ms <= high
    # the run's end compacts what its last batch closed: final up to its closing watermark
    closing_ms = run["summaries"][-1].closing_ms
    assert closing_ms >= wm_ms
    for name in ("aggregates", "sketches"):
        rows = spark_cells(spark, f"{spec.sink.path}/{name}")
        assert rows
        for r in rows:
            assert r["final"] == (r["end_ms"] <= closing_ms), name
        assert any(r["final"] for r in rows) and not all(r["final"] for r in rows)


def test_sketch_bytes_equal_sketches_built_from_ground_truth(spark, run):

    import sketches

    spec = run["spec"]
    truth = _truth_frame(run)
    stored = spark_cells(spark, f"{spec.sink.path}/sketches")
    assert stored
    values = defaultdict(list)
    for window in spec.windows:
        slide = window.slide_s * 1_000_000
        pane = truth["et_us"] - truth["et_us"] % slide
        for i in range(window.size_s // window.slide_s):
            ws = pane - i * slide
            for idx in range(len(truth)):
                row = truth.iloc[idx]
                gk = json.dumps([str(row[g]) for g in window.group_by], separators=(",", ":"))
                values[(window.name, int(ws.iloc[idx]), gk)].append(row)
    checked = Counter()
    for r in stored:
        window = spec.window(r["window_name"])
        sk_spec = next(s for s in window.sketches if s.name == r["sketch_name"])
        rows = values[(r["window_name"], r["ws"], r["group_key"])]
        field_values = [row[sk_spec.field] for row in rows]
        expected = sk_spec.new().update(field_values)
        got = sketches.from_bytes(bytes(r["bytes"]))
        if sk_spec.kind == "cms":
            assert np.array_equal(got.counters, expected.counters)
            assert got.total == expected.total == len(field_values)
            true_counts = Counter(field_values)
            for item, count in got.top():
                assert true_counts[item] <= count <= true_counts[item] + got.error_bound()
        else:
            assert bytes(r["bytes"]) == expected.to_bytes(), (r["window_name"], sk_spec.name)
        if sk_spec.kind == "quantiles":
            amounts = np.sort([v for v in field_values if v is not None and not pd.isna(v)])
            if amounts.size:
                for q in (0.5, 0.95, 0.99):
                    exact = amounts[int(np.floor(q * (amounts.size - 1)))]
                    assert abs(got.quantile(q) - exact) <= got.relative_error() * abs(exact)
        if sk_spec.kind == "hll":
            true_distinct = len(set(field_values))
            sigma = got.relative_error() * max(true_distinct, 1)
            assert abs(r["estimate"] - true_distinct) <= 4 * sigma + 1
            assert r["lower_bound"] <= r["estimate"] <= r["upper_bound"]
        checked[sk_spec.kind] += 1
    assert checked["hll"] and checked["cms"] and checked["bloom"] and checked["quantiles"]


def test_query_answers_from_stored_windows(spark, run):
    from streaming.query import questions as q

    spec = run["spec"]
    truth = _truth_frame(run)
    window = spec.window("minutely")
    sel = q.Selection(window, None, None, {})
    true_users = truth["user_id"].nunique()
    d = q.distinct(spark, spec, sel, None)
    assert d["lower_bound"] - 1 <= true_users <= d["upper_bound"] + 1
    top = q.topk(spark, spec, sel, None, 5)
    true_pages = Counter(truth["page"])
    assert top["total"] == len(truth)
    assert top["top"][0]["item"] == true_pages.most_common(1)[0][0]
    for t in top["top"]:
        assert true_pages[t["item"]] <= t["count"] <= true_pages[t["item"]] + top["error_bound"]
    some_user = truth["user_id"].iloc[0]
    assert q.contains(spark, spec, sel, None, some_user)["probably_present"] is True
    agg = q.aggregate(spark, spec, sel)
    (row,) = agg["rows"]
    assert row["count"] == len(truth)
    hourly = spec.window("hourly_by_country")
    by_country = q.aggregate(spark, spec, q.Selection(hourly, None, None, {"country": "US"}))
    (us,) = by_country["rows"]
    # sliding windows: only the tiling (non-overlapping) windows count, so each event once
    assert us["count"] == int((truth["country"] == "US").sum())


def test_rerun_on_the_same_checkpoint_changes_nothing(spark, run):
    from streaming.engine.pipeline import Pipeline
    from streaming.query.digest import digest

    spec = run["spec"]
    before = digest(spark, spec)
    again = Pipeline(spark, spec)
    again.run(available_now=True, timeout=300)
    assert digest(spark, spec) == before
