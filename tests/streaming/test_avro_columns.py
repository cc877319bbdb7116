"""Avro read a column at a time (streaming/engine/avro_columns.py) gives exactly what
fastavro a record at a time gives: every value, null, reason and refused record, on
random records of rich schemas, framed and bare, whole and damaged."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastavro import parse_schema, schemaless_writer

from streaming.engine.avro_columns import plan
from streaming.engine.avro_decode import AvroDecoder
from streaming.spec.model import parse_spec

NOW_MS = int(dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC).timestamp() * 1000)
T0 = dt.datetime(2026, 11, 23, 8, tzinfo=dt.UTC)

RICH = {"type": "record", "name": "Rich", "fields": [
    {"name": "id", "type": "long"},
    {"name": "ts", "type": ["null", "string"]},
    {"name": "user", "type": {"type": "record", "name": "User", "fields": [
        {"name": "name", "type": ["string", "null"]},  # null second: branch 1 is null
        {"name": "age", "type": "int"}]}},
    {"name": "score", "type": ["null", "double"]},
    {"name": "ratio", "type": "float"},
    {"name": "ok", "type": "boolean"},
    {"name": "color", "type": {"type": "enum", "name": "Color",
                               "symbols": ["RED", "GREEN", "BLUE"]}},
    {"name": "blob", "type": "bytes"},
    {"name": "note", "type": "string"},
]}

SPEC = """
[source]
topic = "t"
[events]
time_field = "ts"
format = "avro"
[events.fields]
id = "long"
"user.name" = "string"
"user.age" = "int"
score = "double"
ratio = "double"
ok = "boolean"
color = "string"
[events.avro]
{avro}
[[windows]]
name = "hourly"
size = "1 hour"
metrics = ["count"]
[sink]
path = "./d"
checkpoint = "./c"
"""


def _record(rng: np.random.Generator, i: int) -> dict:
    at = T0 + dt.timedelta(seconds=int(rng.integers(0, 7200)))
    text = "".join(rng.choice(list("abcé日 z"), size=int(rng.integers(0, 20))))
    return {"id": int(rng.integers(-2**62, 2**62)) if i % 7 else i,
            "ts": None if i % 23 == 0 else at.isoformat().replace("+00:00", "Z"),
            "user": {"name": None if i % 5 == 0 else text, "age": int(rng.integers(-99, 99))},
            "score": None if i % 3 == 0 else float(rng.normal()),
            "ratio": float(np.float32(rng.random())), "ok": bool(i % 2),
            "color": ["RED", "GREEN", "BLUE"][i % 3], "blob": bytes(int(rng.integers(0, 9))),
            "note": text * 3}


def _encode(record: dict, framed: bool) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(RICH), record)
    return (b"\x00" + (1).to_bytes(4, "big") if framed else b"") + buf.getvalue()


def _damage(rng: np.random.Generator, value: bytes) -> bytes:
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return value[: int(rng.integers(0, len(value)))]  # cut
    if kind == 1:
        return value + bytes(rng.integers(0, 256, int(rng.integers(1, 4)), dtype=np.uint8))
    raw = bytearray(value)
    for _ in range(int(rng.integers(1, 4))):
        raw[int(rng.integers(0, len(raw)))] = int(rng.integers(0, 256))
    return bytes(raw)


def _decoders(tmp_path: Path, framed: bool) -> tuple[AvroDecoder, AvroDecoder]:
    (tmp_path / "rich.avsc").write_text(json.dumps(RICH))
    avro = 'schemas = { 1 = "rich.avsc" }' if framed else 'schema = "rich.avsc"'
    events = parse_spec(SPEC.format(avro=avro), origin=str(tmp_path / "s.toml")).events
    columns, records = AvroDecoder(events), AvroDecoder(events)
    records._plans = {}  # the reference: fastavro, a record at a time
    assert all(p is not None for p in columns._plans.values())
    return columns, records


@pytest.mark.parametrize("framed", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_column_wise_equals_record_at_a_time(tmp_path, framed, seed):
    rng = np.random.default_rng(seed)
    values: list[bytes | None] = [_encode(_record(rng, i), framed) for i in range(400)]
    for i in rng.choice(400, size=60, replace=False).tolist():
        values[i] = _damage(rng, values[i])
    values[17] = None
    if framed:
        values[30] = b"\x01" + values[30][1:]  # no Confluent header
        values[31] = b"\x00\x00\x00\x00\x09" + values[31][5:]  # an unknown schema id
    columns, records = _decoders(tmp_path, framed)
    got = columns.decode(values, now_ms=NOW_MS)
    want = records.decode(values, now_ms=NOW_MS)
    assert got.ok.tolist() == want.ok.tolist()
    assert got.event_us.tolist() == want.event_us.tolist()
    assert got.bad == want.bad
    assert got.columns.keys() == want.columns.keys()
    for name in want.columns:
        assert got.columns[name].equals(want.columns[name]), name
    assert len(want.bad) >= 40  # the damage is seen (some damage still decodes)


#: a later version with a list: no plan, so its records go the fastavro way
RICH_V2 = {**RICH, "fields": [*RICH["fields"],
                              {"name": "tags", "type": {"type": "array", "items": "string"}}]}


def test_a_batch_of_two_schema_versions_one_column_wise(tmp_path):
    (tmp_path / "rich.avsc").write_text(json.dumps(RICH))
    (tmp_path / "rich2.avsc").write_text(json.dumps(RICH_V2))
    text = SPEC.format(avro='schemas = { 1 = "rich.avsc", 2 = "rich2.avsc" }').replace(
        'color = "string"', 'color = "string"\ntags = "list<string>"')
    events = parse_spec(text, origin=str(tmp_path / "s.toml")).events
    columns, records = AvroDecoder(events), AvroDecoder(events)
    records._plans = {}
    rng = np.random.default_rng(3)
    values = []
    for i in range(300):
        record = _record(rng, i)
        if i % 3:
            values.append(_encode(record, True))
        else:
            buf = io.BytesIO()
            schemaless_writer(buf, parse_schema(RICH_V2), {**record, "tags": ["a", "b"][: i % 3]})
            values.append(b"\x00" + (2).to_bytes(4, "big") + buf.getvalue())
    values[5] = values[5][:9]
    got = columns.decode(values, now_ms=NOW_MS)
    want = records.decode(values, now_ms=NOW_MS)
    assert got.ok.tolist() == want.ok.tolist() and got.bad == want.bad
    for name in want.columns:
        assert got.columns[name].equals(want.columns[name]), name
    # version 1 has no tags: nulls; version 2's are lists
    assert got.columns["tags"].null_count == sum(1 for j in got.ok.tolist() if j % 3)


def test_schemas_that_need_fastavro_have_no_plan():
    declared = {("id",): "long"}
    assert plan(RICH, declared, ("ts",)) is not None
    with_array = {**RICH, "fields": [*RICH["fields"],
                                     {"name": "tags", "type": {"type": "array",
                                                               "items": "string"}}]}
    assert plan(with_array, declared, ("ts",)) is None
    assert plan(RICH, {("note",): "long"}, ("ts",)) is None  # another type: fastavro decides
    assert plan(RICH, {("user",): "string"}, ("ts",)) is None  # a record, not a leaf
    millis = {**RICH, "fields": [{"name": "at", "type": {"type": "long",
                                                          "logicalType": "timestamp-millis"}}]}
    assert plan(millis, {}, ("at",)) is None
