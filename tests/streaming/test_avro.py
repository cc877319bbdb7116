"""Avro values: bare or in Confluent's wire format, fields by path, every bad value's reason."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
from fastavro import parse_schema, schemaless_writer

from streaming.engine.avro_decode import AvroDecoder
from streaming.errors import SpecError
from streaming.spec.model import parse_spec

NOW_MS = int(dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC).timestamp() * 1000)

PUSH = {"type": "record", "name": "Push", "fields": [
    {"name": "created_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "actor", "type": ["null", {"type": "record", "name": "Actor", "fields": [
        {"name": "login", "type": "string"}, {"name": "id", "type": "long"}]}]},
    {"name": "size", "type": "int"},
    {"name": "labels", "type": {"type": "array", "items": "string"}},
]}
#: a later version: size became a long, a field was added
PUSH_V2 = {**PUSH, "fields": [*PUSH["fields"][:2], {"name": "size", "type": "long"},
                              PUSH["fields"][3], {"name": "ref", "type": "string"}]}

SPEC = """
[source]
topic = "pushes"
[events]
time_field = "created_at"
format = "avro"
[events.fields]
"actor.login" = "string"
size = "long"
labels = "list<string>"
[events.avro]
{avro}
[[windows]]
name = "hourly"
size = "1 hour"
metrics = ["count", "sum(size)"]
[sink]
path = "./d"
checkpoint = "./c"
"""


def _schemas(tmp_path: Path) -> None:
    (tmp_path / "push.avsc").write_text(json.dumps(PUSH))
    (tmp_path / "push-v2.avsc").write_text(json.dumps(PUSH_V2))


def _spec(tmp_path: Path, avro: str):
    _schemas(tmp_path)
    return parse_spec(SPEC.format(avro=avro), origin=str(tmp_path / "spec.toml"))


def _avro(schema: dict, record: dict, schema_id: int | None) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(schema), record)
    head = b"" if schema_id is None else b"\x00" + schema_id.to_bytes(4, "big")
    return head + buf.getvalue()


AT = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
GOOD = {"created_at": AT, "actor": {"login": "ann", "id": 7}, "size": 3,
        "labels": ["bug", "ui"]}


def test_confluent_framed_values_of_two_schema_versions(tmp_path):
    spec = _spec(tmp_path, 'schemas = { 1 = "push.avsc", 2 = "push-v2.avsc" }')
    values = [_avro(PUSH, GOOD, 1),
              _avro(PUSH_V2, {**GOOD, "actor": None, "size": 1 << 40, "ref": "main"}, 2),
              _avro(PUSH, GOOD, 3),                        # an id the spec does not list
              b"\x01" + _avro(PUSH, GOOD, 1)[1:],          # not the Confluent magic byte
              _avro(PUSH, GOOD, 1)[:-3],                   # cut
              _avro(PUSH, GOOD, 1) + b"\x00\x00",          # bytes after the record
              None]
    out = AvroDecoder(spec.events).decode(values, now_ms=NOW_MS)
    assert out.ok.tolist() == [0, 1]
    assert out.columns["actor.login"].to_pylist() == ["ann", None]
    assert out.columns["size"].to_pylist() == [3, 1 << 40]
    assert out.columns["labels"].to_pylist() == [["bug", "ui"], ["bug", "ui"]]
    assert out.event_us.tolist() == [int(AT.timestamp() * 1_000_000)] * 2
    assert out.bad[2] == "unknown_schema: schema id 3 is not in [events.avro] schemas"
    assert out.bad[3].startswith("invalid_avro: no Confluent header")
    assert out.bad[4].startswith("invalid_avro: ")
    assert out.bad[5] == "invalid_avro: 2 bytes after the record"
    assert out.bad[6].startswith("null_value")


def test_bare_values_of_one_schema(tmp_path):
    spec = _spec(tmp_path, 'schema = "push.avsc"')
    out = AvroDecoder(spec.events).decode([_avro(PUSH, GOOD, None), b"\x00"],
                                          now_ms=NOW_MS)
    assert out.ok.tolist() == [0] and out.bad[1].startswith("invalid_avro: ")


@pytest.mark.parametrize(("avro", "needle"), [
    ('schema = "missing.avsc"', "cannot read"),
    ('schemas = { x = "push.avsc" }', "is not a number"),
    ('schema = "push.avsc"\nschemas = { 1 = "push.avsc" }', 'give schema = "FILE.avsc"'),
    ('schema = "bad.avsc"', "is not an Avro schema"),
])
def test_a_bad_avro_table_is_one_line(tmp_path, avro, needle):
    (tmp_path / "bad.avsc").write_text('{"type": "no-such-type"}')
    with pytest.raises(SpecError) as exc:
        _spec(tmp_path, avro)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_avro_without_format_avro_is_refused(tmp_path):
    _schemas(tmp_path)
    text = SPEC.format(avro='schema = "push.avsc"').replace('format = "avro"\n', "")
    with pytest.raises(SpecError, match='format = "avro"'):
        parse_spec(text, origin=str(tmp_path / "spec.toml"))


def test_the_schemas_are_part_of_what_a_checkpoint_depends_on(tmp_path):
    one = _spec(tmp_path, 'schemas = { 1 = "push.avsc" }')
    two = _spec(tmp_path, 'schemas = { 1 = "push.avsc", 2 = "push-v2.avsc" }')
    assert one.state_fingerprint() != two.state_fingerprint()
    assert "format" not in parse_spec(SPEC.format(avro="").replace(
        'format = "avro"\n', "").replace("[events.avro]\n", "")).state_fingerprint()["events"]
