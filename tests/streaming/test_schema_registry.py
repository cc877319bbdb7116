"""Avro schemas from a real Schema Registry (Apicurio Registry 3, its Confluent-compatible
API; tests/streaming/registry_server.py starts it): values decoded with the registry's
schemas exactly as with the same schemas from files, ids it lacks quarantined as
``unknown_schema``, a registry down failing loudly, and ``produce --format avro`` then
``run`` with ``registry = URL`` counting every event."""

from __future__ import annotations

import io
import json
import socket

import pytest
from fastavro import parse_schema, schemaless_writer
from registry_server import Registry
from test_avro_columns import NOW_MS, RICH, SPEC, _record
from test_faults_process import cli, counted_once

from streaming.engine.avro_decode import AvroDecoder
from streaming.errors import RegistryError
from streaming.spec.model import parse_spec

pytestmark = pytest.mark.integration

#: a later version of RICH: one more field, optional
RICH_V2 = {**RICH, "fields": [*RICH["fields"],
                              {"name": "ref", "type": ["null", "string"], "default": None}]}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    from streaming.kafka.shapes import avro_schema_path

    server = Registry(tmp_path_factory.mktemp("registry") / "registry.log")
    try:
        # the clickstream's schema first: produce --format avro frames its values with id 1
        assert server.register("clickstream-value", avro_schema_path().read_text()) == 1
        yield server
    finally:
        server.stop()


def _framed(schema: dict, record: dict, sid: int) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(schema), record)
    return b"\x00" + sid.to_bytes(4, "big") + buf.getvalue()


def test_values_decode_with_the_registry_s_schemas_as_with_files(registry, tmp_path):
    import numpy as np

    v1 = registry.register("rich-value", json.dumps(RICH))
    v2 = registry.register("rich-value", json.dumps(RICH_V2))
    assert v1 != v2
    rng = np.random.default_rng(1)
    values = []
    for i in range(300):
        record = _record(rng, i)
        values.append(_framed(RICH, record, v1) if i % 2 else
                      _framed(RICH_V2, {**record, "ref": f"r{i}"}, v2))
    values.append(_framed(RICH, _record(rng, 300), 4242))  # an id the registry lacks
    from_registry = AvroDecoder(parse_spec(SPEC.format(
        avro=f'registry = "{registry.url}"')).events)
    (tmp_path / "v1.avsc").write_text(json.dumps(RICH))
    (tmp_path / "v2.avsc").write_text(json.dumps(RICH_V2))
    from_files = AvroDecoder(parse_spec(SPEC.format(
        avro=f'schemas = {{ {v1} = "v1.avsc", {v2} = "v2.avsc" }}'),
        origin=str(tmp_path / "s.toml")).events)
    got = from_registry.decode(values, now_ms=NOW_MS)
    want = from_files.decode(values, now_ms=NOW_MS)
    assert got.ok.tolist() == want.ok.tolist() and len(got.ok) >= 280
    for name in want.columns:
        assert got.columns[name].equals(want.columns[name]), name
    assert got.bad.pop(300) == "unknown_schema: schema id 4242 is not in the schema registry"
    assert want.bad.pop(300).startswith("unknown_schema: schema id 4242")
    assert got.bad == want.bad


def test_a_registry_that_is_down_fails_the_batch_in_one_line():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    decoder = AvroDecoder(parse_spec(SPEC.format(
        avro=f'registry = "http://127.0.0.1:{port}/apis/ccompat/v7"')).events)
    import numpy as np

    value = _framed(RICH, _record(np.random.default_rng(0), 1), 7)
    with pytest.raises(RegistryError) as exc:
        decoder.decode([value], now_ms=NOW_MS)
    assert "\n" not in str(exc.value)
    assert str(exc.value).startswith(f"schema registry http://127.0.0.1:{port}/apis/ccompat/v7:"
                                     " GET /schemas/ids/7: ")


def test_produce_avro_then_run_with_the_registry_counts_every_event(kafka, spark, topic_name,
                                                                     tmp_path, registry):
    from test_faults_process import write_spec
    from test_produce_then_run import COUNT, _produce

    from streaming.spec.model import load_spec

    _produce(kafka, topic_name, "--format", "avro")
    spec_file = write_spec(tmp_path / "job", topic_name, kafka.bootstrap_servers,
                           per_trigger=10_000)
    text = spec_file.read_text().replace('time_format = "iso8601"',
                                         'time_format = "iso8601"\nformat = "avro"', 1)
    text = text.replace("\n[[windows]]", f'\n[events.avro]\nregistry = "{registry.url}"\n'
                                         "\n[[windows]]", 1)
    spec_file.write_text(text)
    code, _, err = cli(["run", "--spec", str(spec_file), "--available-now"])
    assert code == 0, err[-2000:]
    spec = load_spec(spec_file)
    assert spec.events.avro_registry == registry.url and not spec.events.avro_schemas
    assert counted_once(spark, spec) == (COUNT, 0)
