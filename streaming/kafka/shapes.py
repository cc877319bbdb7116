"""The generated clickstream in another shape: its fields one level down, in objects.

``streamsketch produce --shape nested`` sends the same events as the flat shape with
their fields nested as most real streams nest them (``{"ts": ..., "user": {"id": ...,
"session": ..., "country": ..., "device": ...}, "page": {"path": ..., "action": ...,
"amount": ...}, ...}``); ``streaming/specs/clickstream-nested.toml`` is the bundled spec
with its fields declared at those paths (:func:`nested_spec_text`). A record that is not
a JSON object (the malformed ones: cut, not UTF-8, empty, null) goes as it is.
"""

from __future__ import annotations

import functools
import re
from typing import Any

#: where each flat field of the clickstream goes in the nested shape
NESTED_PATHS = {"user_id": "user.id", "session_id": "user.session", "country": "user.country",
                "device": "user.device", "page": "page.path", "action": "page.action",
                "amount": "page.amount", "referrer": "page.referrer"}

SHAPES = ("flat", "nested")
#: the clickstream's Avro schema (``produce --format avro``), and the Confluent schema id
#: its values carry (``streaming/specs/clickstream-avro.toml`` lists it)
AVRO_SCHEMA_FILE = "clickstream.avsc"
AVRO_SCHEMA_ID = 1


def nest_event(event: dict[str, Any]) -> dict[str, Any]:
    """The event with its fields at their :data:`NESTED_PATHS` (others where they were).

    Example:
        >>> nest_event({"ts": "t", "user_id": "u1", "page": "/a", "amount": None})
        {'ts': 't', 'user': {'id': 'u1'}, 'page': {'path': '/a', 'amount': None}}
    """
    out: dict[str, Any] = {}
    for key, value in event.items():
        *parents, leaf = NESTED_PATHS.get(key, key).split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def nested_value(value: bytes | None) -> bytes | None:
    """One flat clickstream record (JSON), nested (:func:`nest_event`); a value that is
    not a JSON object stays as it is."""
    import orjson

    try:
        event = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        event = None
    return orjson.dumps(nest_event(event)) if isinstance(event, dict) else value


def nested_values(values: Any) -> Any:
    """An Arrow binary array of flat clickstream records, each nested (:func:`nest_event`)."""
    import pyarrow as pa

    return pa.array([nested_value(v) for v in values.to_pylist()], pa.binary())


def nested_spec_text(text: str) -> str:
    """A spec over the flat clickstream, its fields declared at their nested paths."""
    for flat, path in NESTED_PATHS.items():
        text = re.sub(rf"^{flat} = ", f'"{path}" = ', text, flags=re.M)
        text = re.sub(rf'(field = "){flat}"', rf'\g<1>{path}"', text)
        text = re.sub(rf'([(\["]){flat}([)\]"])', rf"\g<1>{path}\g<2>", text)
    return text



def avro_schema_path() -> Any:
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "specs" / AVRO_SCHEMA_FILE


@functools.cache
def _avro_schema() -> Any:
    """The clickstream's Avro schema, parsed once (``produce`` encodes slice by slice)."""
    import json

    from fastavro import parse_schema

    return parse_schema(json.loads(avro_schema_path().read_text()))


def avro_values(values: Any, schema_id: int = AVRO_SCHEMA_ID) -> Any:
    """An Arrow binary array of flat clickstream records (JSON) as Avro values of
    :data:`AVRO_SCHEMA_FILE` in Confluent's wire format. A record the schema cannot hold
    (the malformed ones: not JSON, a text amount) goes as a cut Avro value, which a
    reader refuses as ``invalid_avro``; a null value stays null."""
    import pyarrow as pa

    return pa.array([avro_value(v, schema_id) for v in values.to_pylist()], pa.binary())


def avro_value(value: bytes | None, schema_id: int = AVRO_SCHEMA_ID) -> bytes | None:
    """One flat clickstream record (JSON) as an Avro value (:func:`avro_values`)."""
    import io

    import orjson
    from fastavro import schemaless_writer

    if value is None:
        return None
    header = bytes([0]) + schema_id.to_bytes(4, "big")
    buf = io.BytesIO()
    try:
        event = orjson.loads(value)
        if not isinstance(event, dict) or "event_id" not in event:
            raise ValueError("not an event")
        schemaless_writer(buf, _avro_schema(), event)
        return header + buf.getvalue()
    except (ValueError, TypeError, orjson.JSONDecodeError):
        return header + b"\x02"  # a cut record: its first string's length only


def reshape(shape: str, value_format: str) -> Any:
    """The per-record form of ``produce --shape/--format`` for flat clickstream records
    (``replay`` of a recorded flat clickstream), or None for the flat JSON as it is."""
    if value_format == "avro":
        if shape != "flat":
            raise ValueError("Avro values are of the flat shape only (drop --shape nested)")
        return avro_value
    return nested_value if shape == "nested" else None
