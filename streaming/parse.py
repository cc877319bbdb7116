"""Parse and validate raw records against the spec's event schema, in Spark SQL.

Input: a streaming DataFrame of raw records with the provenance columns
``_key`` (binary), ``_value`` (binary), ``_topic``, ``_partition``, ``_offset``,
``_source_ts`` (Kafka timestamp, or null). Output: the same columns plus
``_reason`` (null for a valid record, else why it is quarantined),
``event_time`` (null unless valid) and one typed column per declared field.

Everything runs in the JVM (no Python per row). Every reason is stable text so
quarantine rows can be grouped by it; the metric label is the part before ':'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streaming.spec import Spec

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

PROVENANCE = ("_key", "_value", "_topic", "_partition", "_offset", "_source_ts")

#: reason codes (label values of the quarantine metric)
REASONS = ("null_value", "too_large", "invalid_utf8", "invalid_json", "wrong_type",
           "missing_time", "bad_time", "future_time", "late",
           # a backfill's log lost data (a cut gzip stream, a corrupt file)
           "truncated", "corrupt", "unsendable")

#: optional column of a backfill's raw records: a reason found while reading the log
READER_REASON = "_reader_reason"

_SPARK_TYPES = {"string": "string", "long": "bigint", "int": "int", "double": "double",
                "boolean": "boolean"}


def _sql_str(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _event_time(spec: Spec) -> Column:
    from pyspark.sql import functions as F

    fmt = spec.events.time_format
    if fmt == "iso8601":
        return F.expr("try_to_timestamp(_raw_time)")
    scale = 1000 if fmt == "epoch_ms" else 1_000_000
    return F.expr(f"timestamp_micros(try_cast(try_cast(_raw_time AS double) * {scale} AS bigint))")


def _typed(name: str, typ: str) -> Column:
    from pyspark.sql import functions as F

    text = F.col(f"_as_text.`{name}`")
    if typ == "string":
        return text
    return F.expr(f"try_cast(`_as_text`.`{name}` AS {_SPARK_TYPES[typ]})")


def parse_records(raw: DataFrame, spec: Spec, *, now_ms: int | None = None) -> DataFrame:
    """Typed, validated events with a quarantine reason column (see module docstring).

    ``now_ms`` is the batch time that ``future_time`` is judged against; by
    default Spark's ``current_timestamp()`` (a streaming batch's own timestamp).
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    ev = spec.events
    fields = list(ev.fields)
    names = [n for n, _ in fields]
    text_schema = StructType(
        [StructField(ev.time_field, StringType())]
        + [StructField(n, StringType()) for n in names]
        + [StructField("_corrupt", StringType())])
    opts = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"}

    # One JSON parse, every field as text; typed values come from try_cast, so a
    # value that does not convert (text in a double) is caught as wrong_type.
    df = raw.withColumn("_text", F.col("_value").cast("string"))
    df = df.withColumn("_as_text", F.from_json("_text", text_schema, opts))
    df = df.withColumn("_raw_time", F.col(f"_as_text.`{ev.time_field}`"))
    df = df.withColumn("_parsed_time", _event_time(spec))

    wrong_type = None
    for n, t in fields:
        if t == "string":
            continue
        cond = F.col(f"_as_text.`{n}`").isNotNull() & _typed(n, t).isNull()
        label = F.lit(f"wrong_type: field {n} is not {t}")
        wrong_type = F.when(cond, label) if wrong_type is None else wrong_type.when(cond, label)

    reason = F.when(F.col("_value").isNull(), F.lit("null_value: the record has no value"))
    if READER_REASON in raw.columns:
        reason = F.when(F.col(READER_REASON).isNotNull(), F.col(READER_REASON)).when(
            F.col("_value").isNull(), F.lit("null_value: the record has no value"))
    now = F.current_timestamp() if now_ms is None else F.timestamp_millis(F.lit(now_ms))
    reason = (
        reason
        .when(F.length("_value") > ev.max_record_bytes,
              F.concat(F.lit("too_large: "), F.length("_value").cast("string"),
                       F.lit(f" bytes > max_record_bytes {ev.max_record_bytes}")))
        .when(~F.expr("is_valid_utf8(_text)"), F.lit("invalid_utf8: the value is not UTF-8"))
        .when(F.col("_as_text").isNull() | F.col("_as_text._corrupt").isNotNull(),
              F.lit("invalid_json: the value is not a JSON object"))
    )
    if wrong_type is not None:
        reason = reason.when(wrong_type.isNotNull(), wrong_type)
    reason = (
        reason.when(F.col("_raw_time").isNull(),
                    F.lit(f"missing_time: no {ev.time_field} field"))
        .when(F.col("_parsed_time").isNull(),
              F.lit(f"bad_time: {ev.time_field} is not {ev.time_format}"))
        # current_timestamp() is the micro-batch's timestamp, recorded in the offset
        # log, so a re-run of the batch decides the same way.
        .when(F.col("_parsed_time") > now
              + F.expr(f"make_dt_interval(0, 0, 0, {ev.max_future_s})"),
              F.lit("future_time: event time is more than max_future ahead of now"))
    )
    df = df.withColumn("_reason", reason)
    valid = F.col("_reason").isNull()
    out_cols = [F.col(c) for c in PROVENANCE] + [F.col("_reason")]
    out_cols.append(F.when(valid, F.col("_parsed_time")).alias("event_time"))
    out_cols += [F.when(valid, _typed(n, t)).alias(n) for n, t in fields]
    return df.select(*out_cols)


def with_watermark(parsed: DataFrame, spec: Spec) -> DataFrame:
    """Attach the spec's event-time watermark (invalid rows carry a null event time)."""
    seconds = spec.events.watermark_s
    return parsed.withWatermark("event_time", f"{int(seconds * 1000)} milliseconds")
