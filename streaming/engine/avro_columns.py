"""Avro records decoded a column at a time, with NumPy, for flat-enough writer schemas.

fastavro reads one record at a time in Python's C API (about 8 µs a record here); the
records of a batch share one schema, so the same field can be read for every record at
once instead. The values are laid end to end in one buffer; a cursor per record walks
the schema's fields in order:

- ``int``/``long``: a zig-zag varint, read for all records in at most 10 vectorised
  steps; ``float``/``double``: 4/8 little-endian bytes; ``boolean``: one byte 0 or 1;
- ``string``/``bytes``: a varint length, then the bytes (sliced out with one gather);
- ``enum``: a varint index into the symbols;
- a union of ``null`` and one of the above: a varint branch, then that branch, read
  only for the records that took it; a nested record: its fields, in place.

A record whose bytes do not fit (a varint past 10 bytes, a length or branch out of
range, a cursor past its end, bytes left over, text that is not UTF-8) is *refused*:
the caller reads it again with fastavro, which names the reason. A schema with arrays,
maps, fixed or other unions, or a declared field whose Avro type is not the declared
type, has no plan (:func:`plan` returns None) and every record goes the fastavro way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["Plan", "plan", "read_columns"]

_PRIMITIVE = ("null", "boolean", "int", "long", "float", "double", "string", "bytes")
#: the declared types each Avro type may fill, column-wise
_FILLS = {"string": ("string",), "int": ("int", "long"), "long": ("int", "long"),
          "double": ("double",), "float": ("double",), "boolean": ("boolean",)}
_LANES8 = np.arange(8, dtype=np.int64)


@dataclass(frozen=True)
class _Step:
    path: tuple[str, ...]
    kind: str  # a primitive type name, or "enum"
    nullable: int  # -1: not a union; else the branch index of null
    symbols: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """The fields of a record schema in writer order, and which paths are wanted."""

    steps: tuple[_Step, ...]
    wanted: tuple[tuple[str, ...], ...]


def _flatten(schema: Any, path: tuple[str, ...], named: dict[str, Any]) -> list[_Step] | None:
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, list):
        if len(schema) != 2 or "null" not in schema:
            return None
        null_at = schema.index("null")
        inner = _flatten(schema[1 - null_at], path, named)
        if inner is None or len(inner) != 1 or inner[0].nullable != -1:
            return None  # a union holding a record, or another union
        return [_Step(path, inner[0].kind, null_at, inner[0].symbols)]
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record":
            if "name" in schema:
                named[schema["name"]] = schema
            steps: list[_Step] = []
            for f in schema.get("fields", ()):
                more = _flatten(f["type"], (*path, f["name"]), named)
                if more is None:
                    return None
                steps += more
            return steps
        if kind == "enum":
            if "name" in schema:
                named[schema["name"]] = schema
            return [_Step(path, "enum", -1, tuple(schema["symbols"]))]
        if schema.get("logicalType"):
            return None  # timestamps, decimals...: fastavro converts them
        return _flatten(kind, path, named)
    if schema in _PRIMITIVE and schema != "null":
        return [_Step(path, schema, -1)]
    return None


def plan(schema: dict[str, Any], declared: dict[tuple[str, ...], str],
         time_path: tuple[str, ...]) -> Plan | None:
    """The column plan of a writer schema for the declared fields (path -> type) and the
    time field, or None when the schema or a field's type needs fastavro."""
    steps = _flatten(schema, (), {})
    if not steps:
        return None
    by_path = {s.path: s for s in steps}
    for path, typ in declared.items():
        step = by_path.get(path)
        kind = "string" if step is not None and step.kind == "enum" else \
            (step.kind if step is not None else None)
        if step is None or typ not in _FILLS.get(kind or "", ()):
            return None  # absent (a prefix, a list...) or another type: fastavro decides
    time = by_path.get(time_path)
    if time is None or time.kind not in ("string", "long", "int", "double"):
        return None
    return Plan(tuple(steps), (*declared, time_path))


class _Reader:
    """Cursors over one buffer of records; ``bad`` marks the records refused so far."""

    def __init__(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        self.buf = np.concatenate([buf, np.zeros(16, dtype=np.uint8)])
        self.pos = starts.astype(np.int64)
        self.ends = ends.astype(np.int64)
        self.bad = np.zeros(starts.size, dtype=bool)

    def varint(self, rows: np.ndarray) -> np.ndarray:
        """Zig-zag varints at the cursors of ``rows`` (int64), cursors moved past them."""
        p = np.minimum(self.pos[rows], self.buf.size - 16)
        value = np.zeros(rows.size, dtype=np.uint64)
        size = np.zeros(rows.size, dtype=np.int64)
        going = np.ones(rows.size, dtype=bool)
        for i in range(10):
            b = self.buf[p + i]
            value |= np.where(going, (b & 0x7F).astype(np.uint64) << np.uint64(7 * i), 0)
            size += going
            going &= b >= 0x80
            if not going.any():
                break
        self.bad[rows[going]] = True
        self.pos[rows] = p + size
        return ((value >> np.uint64(1)).astype(np.int64)
                ^ -(value & np.uint64(1)).astype(np.int64))

    def fixed(self, rows: np.ndarray, width: int) -> np.ndarray:
        """``width`` bytes at each cursor of ``rows`` as a (rows, width) uint8 matrix."""
        p = np.minimum(self.pos[rows], self.buf.size - 16)
        self.pos[rows] = p + width
        return self.buf[p[:, None] + _LANES8[:width]]

    def value(self, step: _Step, rows: np.ndarray) -> tuple[str, Any]:
        kind = step.kind
        if kind in ("int", "long"):
            return "int", self.varint(rows)
        if kind == "double":
            return "float", self.fixed(rows, 8).copy().view("<f8").ravel()
        if kind == "float":
            return "float", self.fixed(rows, 4).copy().view("<f4").ravel().astype(np.float64)
        if kind == "boolean":
            b = self.fixed(rows, 1).ravel()
            self.bad[rows[b > 1]] = True
            return "bool", b == 1
        if kind == "enum":
            i = self.varint(rows)
            out_of_range = (i < 0) | (i >= len(step.symbols))
            self.bad[rows[out_of_range]] = True
            return "enum", np.where(out_of_range, 0, i)
        length = self.varint(rows)
        self.bad[rows[length < 0]] = True
        length = np.maximum(length, 0)
        start = self.pos[rows].copy()
        self.pos[rows] = start + length
        return "text" if kind == "string" else "bytes", (start, length)

    def column(self, step: _Step, n: int) -> tuple[str, Any, np.ndarray | None]:
        """(what, values of the rows read, those rows or None for all) of one field."""
        rows = np.arange(n, dtype=np.int64)
        if step.nullable < 0:
            what, values = self.value(step, rows)
            return what, values, None
        branch = self.varint(rows)
        self.bad[(branch != 0) & (branch != 1)] = True
        taken = np.flatnonzero(branch == 1 - step.nullable)
        what, values = self.value(step, taken)
        return what, values, taken


def _texts(reader: _Reader, start: np.ndarray, length: np.ndarray, valid: np.ndarray
           ) -> pa.Array | None:
    """The strings at (start, length) of the valid rows (nulls elsewhere), or None if
    one is not UTF-8."""
    length = np.where(valid, length, 0)
    start = np.where(valid, start, 0)
    end = np.minimum(start + length, reader.buf.size - 16)
    length = np.maximum(end - start, 0)
    offsets = np.zeros(length.size + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    gather = np.repeat(start - offsets[:-1], length) + np.arange(int(offsets[-1]))
    arr = pa.Array.from_buffers(pa.large_string(), length.size,
                                [_validity(valid), pa.py_buffer(offsets),
                                 pa.py_buffer(reader.buf[gather])])
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:
        return None
    return arr.cast(pa.string())


def _validity(valid: np.ndarray) -> pa.Buffer | None:
    return None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))


def read_columns(p: Plan, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray
                 ) -> tuple[dict[tuple[str, ...], pa.Array], np.ndarray]:
    """Every wanted path's values (Arrow arrays, nulls where null) and the refused mask
    (the values of a refused record are placeholders)."""
    n = starts.size
    reader = _Reader(buf, starts, ends)
    read: dict[tuple[str, ...], tuple[_Step, str, Any, np.ndarray | None]] = {}
    wanted = set(p.wanted)
    for step in p.steps:
        what, values, rows = reader.column(step, n)
        if step.path in wanted:
            read[step.path] = (step, what, values, rows)
    reader.bad |= reader.pos != reader.ends
    out: dict[tuple[str, ...], pa.Array] = {}
    for path in p.wanted:
        step, what, values, rows = read[path]
        valid = ~reader.bad
        if rows is not None:  # nulls where the union took "null"
            taken = np.zeros(n, dtype=bool)
            taken[rows] = True
            valid &= taken
            if what == "text":
                full = (np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64))
                full[0][rows], full[1][rows] = values
                values = full
            else:
                full_values = np.zeros(n, dtype=values.dtype)
                full_values[rows] = values
                values = full_values
        if what == "text":
            got = _texts(reader, values[0], values[1], valid)
            if got is None:  # text that is not UTF-8: fastavro names it
                return {}, np.ones(n, dtype=bool)
        elif what == "enum":
            got = pa.array(step.symbols, pa.string()).take(
                pa.array(values, mask=~valid))
        else:  # int, float, bool
            got = pa.array(values, mask=~valid)
        out[path] = got
    return out, reader.bad
