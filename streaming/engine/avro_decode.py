"""Avro values: the decoder of a spec whose ``[events] format = "avro"``.

A value is an Avro record of a writer schema from ``[events.avro]``: bare (one schema for
every value) or in Confluent's wire format (a 0 byte, the 4-byte big-endian schema id,
then the Avro body), the id naming one of the spec's schemas. The record is decoded with
fastavro into the objects JSON gives (records become objects, arrays lists), and the
declared fields are then taken by path and checked exactly as for JSON
(:class:`~streaming.engine.decode.Decoder`): the same types, nulls, reasons and columns.

Two reasons are Avro's own:

``invalid_avro``    no Confluent header, a body the schema cannot read (cut, garbage), or
                    bytes left after the record
``unknown_schema``  a schema id the spec does not list
"""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

from streaming.engine.decode import Decoder
from streaming.spec.model import EventsSpec

_CONFLUENT_MAGIC = 0


class AvroDecoder(Decoder):
    """Decodes batches of Avro values for one :class:`~streaming.spec.model.EventsSpec`.

    Fast path: fastavro reads a record into objects, and ``msgspec.convert`` checks and
    types the declared fields at C speed into the same nested struct JSON decodes into;
    a record either refuses is read again field by field (:meth:`_record`), which names
    the reason.
    """

    #: a timestamp logical type arrives as a datetime
    _TIME_TYPE: Any = Any
    _TEXT = False

    def __init__(self, events: EventsSpec, *, columns: set[str] | None = None) -> None:


        super().__init__(events, columns=columns)
        self._registry = events.avro_registry
        self._schemas: dict[int, Any] = {}
        #: per schema id, the column-wise reading of its records (None: fastavro's)
        self._plans: dict[int, Any] = {}
        self._declared = {self._paths[i]: self.fields[i][1] for i in self._in_struct}
        for sid, text in events.avro_schemas:
            self._add_schema(sid, text)
        self._framed = -1 not in self._schemas

    def _add_schema(self, sid: int, text: str) -> None:
        from fastavro import parse_schema

        from streaming.engine.avro_columns import plan

        doc = json.loads(text)
        self._schemas[sid] = parse_schema(doc)
        self._plans[sid] = plan(doc, self._declared, self._time_path)

    def _schema(self, sid: int) -> Any:
        """The parsed writer schema of ``sid``: the spec's, else the registry's (fetched
        once), else None."""
        if sid not in self._schemas and self._registry is not None and sid >= 0:
            from streaming.engine.schema_registry import fetch_schema

            text = fetch_schema(self._registry, sid)
            if text is None:
                return None
            self._add_schema(sid, text)
        return self._schemas.get(sid)

    def _record(self, value: bytes) -> tuple[str | None, tuple | None, Any]:
        """(reason, every declared field's typed value, raw time) of one value."""
        from fastavro import schemaless_reader

        body = memoryview(value)
        if self._framed:
            if len(value) < 5 or value[0] != _CONFLUENT_MAGIC:
                return ("invalid_avro: no Confluent header (a 0 byte and a schema id)",
                        None, None)
            sid = int.from_bytes(value[1:5], "big")
            schema = self._schema(sid)
            if schema is None:
                where = "the schema registry" if self._registry else "[events.avro] schemas"
                return f"unknown_schema: schema id {sid} is not in {where}", None, None
            body = body[5:]
        else:
            schema = self._schemas[-1]
        stream = io.BytesIO(body)
        try:
            doc = schemaless_reader(stream, schema, None)
        except Exception as exc:  # noqa: BLE001 - fastavro raises many kinds on bad bytes
            return f"invalid_avro: {type(exc).__name__}", None, None
        if stream.tell() != len(body):
            return (f"invalid_avro: {len(body) - stream.tell()} bytes after the record",
                    None, None)
        if not isinstance(doc, dict):
            return "invalid_avro: the schema is not a record", None, None
        reason, typed, raw_time = self.typed_fields(doc)
        if isinstance(raw_time, dt.datetime):  # a timestamp logical type
            raw_time = (raw_time if raw_time.tzinfo else raw_time.replace(tzinfo=dt.UTC)
                        ).isoformat()
        return reason, typed, raw_time

    def _slow(self, value: bytes) -> tuple[str | None, tuple | None, Any]:
        return self._record(value)

    def _columns(self, values: list[bytes]) -> tuple[list[list[Any]], list[int]]:
        """Column-wise (:mod:`avro_columns`) for the records of a schema with a plan; the
        others, and the records that plan refuses, a record at a time."""
        import numpy as np

        from streaming.engine.avro_columns import read_columns

        n = len(values)
        if not n or not (self._registry or any(self._plans.values())):
            return self._records(values)
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        buf = np.frombuffer(b"".join(values), dtype=np.uint8)
        if self._framed:
            head = np.minimum(starts, max(buf.size - 5, 0))[:, None] + np.arange(5)
            frame = buf[np.minimum(head, max(buf.size - 1, 0))] if buf.size else \
                np.zeros((n, 5), dtype=np.uint8)
            sids = frame[:, 1:].astype(np.int64) @ np.array([1 << 24, 1 << 16, 1 << 8, 1])
            sids[(lengths < 5) | (frame[:, 0] != _CONFLUENT_MAGIC)] = -2  # not framed
            starts = starts + 5
        else:
            sids = np.full(n, -1, dtype=np.int64)
        cols: list[list[Any]] = [[None] * n for _ in self._getters]
        paths = [self._paths[i] for i in self._in_struct] + [self._time_path]
        refused: list[int] = []
        for sid in np.unique(sids).tolist():
            rows = np.flatnonzero(sids == sid)
            p = self._plans.get(sid) if self._schema(sid) is not None else None
            if p is None:  # no plan, an unknown schema, no frame: a record at a time
                some, bad = self._records([values[j] for j in rows.tolist()])
                refused += rows[bad].tolist()
                if rows.size == n:
                    return some, refused
                for k, got in enumerate(some):
                    column = np.array(cols[k], dtype=object)
                    column[rows] = np.fromiter(got, dtype=object, count=rows.size)
                    cols[k] = column.tolist()
                continue
            got, no = read_columns(p, buf, starts[rows], ends[rows])
            refused += rows[no].tolist()
            if not got:
                continue
            if rows.size == n:  # one schema for the whole batch: the columns as read
                return [got[path] for path in paths], refused
            for k, path in enumerate(paths):
                column = np.array(cols[k], dtype=object)
                column[rows] = np.fromiter(got[path].to_pylist(), dtype=object,
                                           count=rows.size)
                cols[k] = column.tolist()
        return cols, refused

    def _records(self, values: list[bytes]) -> tuple[list[list[Any]], list[int]]:
        """The fast path a record at a time: fastavro, then ``msgspec.convert``."""
        import msgspec
        from fastavro import schemaless_reader

        convert, struct, empty = msgspec.convert, self._struct, self._empty
        schemas, framed = self._schemas, self._framed
        bare = schemas.get(-1)
        rows: list[Any] = []
        refused: list[int] = []
        for j, value in enumerate(values):
            try:
                if framed:
                    if value[0] != _CONFLUENT_MAGIC:
                        raise ValueError("no Confluent header")
                    schema = schemas[int.from_bytes(value[1:5], "big")]
                    stream = io.BytesIO(memoryview(value)[5:])
                    size = len(value) - 5
                else:
                    schema, stream, size = bare, io.BytesIO(value), len(value)
                doc = schemaless_reader(stream, schema, None)
                if stream.tell() != size:
                    raise ValueError("bytes after the record")
                rows.append(convert(doc, struct))
            except Exception:  # noqa: BLE001 - any refusal: _record names the reason
                rows.append(empty)
                refused.append(j)
        cols = [list(map(get, rows)) for get in self._getters]
        cols[-1] = [t.isoformat() if isinstance(t, dt.datetime) else t for t in cols[-1]]
        return cols, refused


def decoder_for(events: EventsSpec, *, columns: set[str] | None = None) -> Decoder:
    """The decoder of ``events``' value format."""
    if events.format == "avro":
        return AvroDecoder(events, columns=columns)
    return Decoder(events, columns=columns)
