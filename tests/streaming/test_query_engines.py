"""The JVM-free query path gives the Spark path's answers, on tables either engine wrote.

The same generated rows are written twice: by delta-spark (``DataFrame.write``,
what the pipeline does today) and by delta-rs (what it is moving to). Every
subcommand, over ranges, groups and a sliding window, is answered three ways:
Spark reading the delta-spark tables (the reference), delta-rs reading those,
and delta-rs reading its own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from query_tables import aggregates_schema, make_events, window_batches
from test_query_delta import SPEC, T0

from streaming.query import questions as q
from streaming.spec.model import parse_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def specs(spark, tmp_path_factory):
    import pyarrow as pa
    from deltalake import write_deltalake

    root = tmp_path_factory.mktemp("engines")
    spec = parse_spec(SPEC.replace("SINK", str(root / "spark")).replace("CK", str(root / "ck")))
    events = make_events(start=T0, hours=2, per_hour=1500, countries=3, users=800, pages=40)
    aggs, sks = [], []
    for window in spec.windows:
        a, s = window_batches(spec, window, events)
        aggs.append(a)
        sks.append(s)
    agg, sk = pa.concat_tables(aggs), pa.concat_tables(sks)
    assert agg.schema == aggregates_schema(spec)
    # delta-spark writes the tables with the pipeline's own schemas
    from pyspark.sql.pandas.types import from_arrow_schema

    for name, table in (("aggregates", agg), ("sketches", sk)):
        ddl = from_arrow_schema(table.schema)
        rows = table.to_pylist()
        for r in rows:  # Arrow maps come back as lists of pairs
            r["group"] = dict(r["group"])
            if r.get("stats") is not None:
                r["stats"] = dict(r["stats"])
        df = spark.createDataFrame(rows, schema=ddl)
        df.write.format("delta").save(str(root / "spark" / name))
        write_deltalake(str(root / "rs" / name), table)
    by_rs = replace(spec, sink=replace(spec.sink, path=str(root / "rs")))
    return spec, by_rs


H = dt.timedelta(hours=1)
QUESTIONS = [
    ("distinct", "minutely", None, None, None),
    ("distinct", "hourly_by_country", T0, T0 + 2 * H, ["country=C01"]),
    ("topk", "minutely", T0 + dt.timedelta(minutes=13), T0 + dt.timedelta(minutes=77), None),
    ("topk", "hourly_by_country", None, None, None),
    ("topk", "hourly_by_country", T0, T0 + 2 * H, ["country=C02"]),
    ("contains", "minutely", T0, T0 + H, None),
    ("similarity", "minutely", T0, T0 + H, None),
    ("aggregate", "minutely", T0 + dt.timedelta(minutes=5), T0 + dt.timedelta(minutes=65), None),
    ("aggregate", "hourly_by_country", None, None, None),
    ("aggregate", "hourly_by_country", T0, T0 + 2 * H, ["country=C00"]),
]


def iso(t):
    return None if t is None else t.isoformat()


@pytest.mark.parametrize("what, window, start, end, groups", QUESTIONS)
def test_both_engines_answer_alike(spark, specs, what, window, start, end, groups):
    by_spark, by_rs = specs
    question = q.question(by_spark, what, window=window, start=iso(start), end=iso(end),
                          groups=groups, k=5, value="u0000007",
                          vs_start=iso(T0 + H), vs_end=iso(T0 + 2 * H))
    reference = q.ask(q.SparkSource(spark, by_spark), by_spark, question)
    assert q.ask(q.DeltaSource(by_spark), by_spark, question) == reference
    assert q.ask(q.DeltaSource(by_rs), by_rs, question) == reference


def test_an_empty_range_is_the_same_error(spark, specs):
    by_spark, _ = specs
    question = q.question(by_spark, "aggregate", window="minutely", start="2030-01-01",
                          end="2030-01-02")
    for source in (q.SparkSource(spark, by_spark), q.DeltaSource(by_spark)):
        with pytest.raises(q.NoDataError):
            q.ask(source, by_spark, question)
