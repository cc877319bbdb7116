"""Decode and validate raw records against the spec's event schema, in Python, per batch.

Input: the raw values of a batch (bytes or None, one per record). Output: the
valid records as typed Arrow columns with their event time, and every other record
with the reason it is quarantined. The reasons are stable text; the part before
``:`` is the code (the label of the quarantine metric), checked in this order:

``null_value``   the record has no value
``too_large``    the value is longer than ``max_record_bytes``
``invalid_utf8`` the value is not UTF-8
``invalid_json`` the value is not a JSON object
``wrong_type``   a declared field holds a value of another type
``missing_time`` no (or a null) time field
``bad_time``     the time field does not parse as the spec's ``time_format``
``future_time``  the event time is more than ``max_future`` ahead of the batch time

What a field accepts: a ``string`` field a JSON string (a number, boolean, object
or array is kept as its JSON text); ``double`` a JSON number or a string holding
one; ``long``/``int`` a JSON integer in range, or a string holding one; ``boolean``
``true``/``false`` (or those words as a string). ``null`` or an absent field is
null. Unknown fields are ignored. Times: ``iso8601`` (``2026-11-23T10:00:00.042Z``,
an offset such as ``+01:00``, or no offset for UTC; a date alone is midnight UTC),
``epoch_ms`` or ``epoch_s`` (a number or a numeric string).

A field inside objects is named by its path (``actor.login``): a missing or null object
on the way makes it null, an object that is another value is ``wrong_type``
(:mod:`streaming.engine.event_paths`).

Fast path: one ``msgspec`` decode per record into a typed struct (C speed), nested as the
paths nest, of the declared fields that need a check or are returned (a string field not returned
accepts anything, so it is skipped unbuilt); a record it refuses is decoded again
with ``orjson`` and checked field by field, which also finds the reason. UTF-8 is
checked over whole values by Arrow first: what msgspec skips, it does not check.
Event times of ISO strings are parsed by Arrow in blocks, record by record only in a
block Arrow cannot parse whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import compress
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from streaming.engine.event_paths import NotObject, path_value, struct_tree
from streaming.engine.event_times import epoch_us, iso_block
from streaming.spec.model import EventsSpec
from streaming.units import US

#: reason codes (label values of the quarantine metric)
REASONS = ("null_value", "too_large", "invalid_utf8", "invalid_json", "wrong_type",
           "missing_time", "bad_time", "future_time", "late",
           # a backfill's log lost data (a cut gzip stream, a corrupt file)
           "truncated", "corrupt", "unsendable",
           # Avro values (streaming.engine.avro_decode)
           "invalid_avro", "unknown_schema")

_ARROW_TYPES = {"string": pa.string(), "long": pa.int64(), "int": pa.int32(),
                "double": pa.float64(), "boolean": pa.bool_()}
_INT_RANGE = {"long": (-(1 << 63), (1 << 63) - 1), "int": (-(1 << 31), (1 << 31) - 1)}
# a list field: a JSON array of the element type (null elements kept, skipped by sketches)
_ARROW_TYPES.update({f"list<{t}>": pa.list_(_ARROW_TYPES[t])
                     for t in ("string", "long", "int", "double")})
_INT_RANGE.update({f"list<{t}>": r for t, r in list(_INT_RANGE.items())})
_TRUE = frozenset(("t", "true", "y", "yes", "1"))
_FALSE = frozenset(("f", "false", "n", "no", "0"))
_BLOCK = 4096
#: records per ``map`` of the fast decode (a block with a refused record is redone
#: record by record: small enough that one bad record costs little)
_FAST_BLOCK = 256
_NOT_UTF8 = "invalid_utf8: the value is not UTF-8"
#: values checked for UTF-8 by one Arrow cast (a block with a bad one is checked value
#: by value)
_UTF8_BLOCK = 1024


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class WrongType(Exception):
    """A field value that does not convert to its declared type."""


@dataclass
class Decoded:
    """One batch, decoded.

    ``ok`` are the positions of the valid records, ``event_us`` their event times
    (epoch microseconds) and ``columns`` their declared fields, all aligned.
    ``bad`` maps the position of every other record to its reason, and
    ``bad_event_us`` holds the event time of those that had one (``future_time``).
    """

    ok: np.ndarray
    event_us: np.ndarray
    columns: dict[str, pa.Array]
    bad: dict[int, str]
    bad_event_us: dict[int, int]

    @classmethod
    def concat(cls, pieces: list[tuple[int, Decoded]]) -> Decoded:
        """One :class:`Decoded` of consecutive pieces, each given with the position of its
        first record; the same as decoding all the records at once."""
        if len(pieces) == 1 and pieces[0][0] == 0:
            return pieces[0][1]
        names = pieces[0][1].columns.keys() if pieces else ()
        return cls(
            np.concatenate([d.ok + start for start, d in pieces]) if pieces
            else np.zeros(0, dtype=np.int64),
            np.concatenate([d.event_us for _, d in pieces]) if pieces
            else np.zeros(0, dtype=np.int64),
            {n: pa.concat_arrays([d.columns[n] for _, d in pieces]) for n in names},
            {i + start: r for start, d in pieces for i, r in d.bad.items()},
            {i + start: us for start, d in pieces for i, us in d.bad_event_us.items()})


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    return orjson.dumps(value).decode()


def convert_value(value: Any, typ: str) -> Any:
    """A JSON value as the field type (see the module docstring); raises :class:`WrongType`."""
    if value is None:
        return None
    if typ == "string":
        return _as_text(value)
    if typ.startswith("list<"):
        if not isinstance(value, list):
            raise WrongType
        return [convert_value(v, typ[5:-1]) for v in value]
    if typ == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            word = value.strip().lower()
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
        raise WrongType
    if isinstance(value, bool):
        raise WrongType
    if typ == "double":
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise WrongType from None
        raise WrongType
    # long / int
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise WrongType from None
    if not isinstance(value, int):
        raise WrongType
    low, high = _INT_RANGE[typ]
    if not low <= value <= high:
        raise WrongType
    return value


def _arrow(values: Any, typ: pa.DataType) -> pa.Array:
    """``values`` (a list, or an Arrow array as a column-wise reader gives it) as ``typ``."""
    if isinstance(values, pa.Array):
        return values if values.type == typ else values.cast(typ)
    return pa.array(values, typ)


class Decoder:
    """Decodes batches of raw values for one :class:`~streaming.spec.model.EventsSpec`."""

    #: what the time field may hold before it is parsed
    _TIME_TYPE: Any = str | int | float | None
    #: values must be UTF-8 text (JSON); a binary format (Avro) turns this off
    _TEXT = True

    def __init__(self, events: EventsSpec, *, columns: set[str] | None = None) -> None:
        """``columns``: the fields to return as columns (default all); every declared
        field is validated either way."""
        self.events = events
        self.wanted = columns
        self.fields = list(events.fields)
        self.names = [n for n, _ in self.fields]
        self.time_field = events.time_field
        self.max_bytes = events.max_record_bytes
        self.max_future_us = int(events.max_future_s * US)
        self._wrong = {n: f"wrong_type: field {n} is not {t}" for n, t in self.fields}
        self._missing = f"missing_time: no {events.time_field} field"
        self._bad_time = f"bad_time: {events.time_field} is not {events.time_format}"
        # Fast path: a struct of the declared fields with strict types, nested as their
        # paths nest (``actor.login``); the time field (never a declared field: the spec
        # refuses that) is taken raw.
        # A string field accepts any JSON value, so one that is not returned needs no
        # check at all: the struct leaves it out, and msgspec skips it without building it.
        self._in_struct = [i for i, (n, t) in enumerate(self.fields)
                           if t != "string" or columns is None or n in columns]
        self._paths = [tuple(n.split(".")) for n in self.names]
        self._time_path = tuple(events.time_field.split("."))
        strict: dict[str, Any] = {"string": str, "long": int, "int": int, "double": float,
                                  "boolean": bool}
        strict.update({f"list<{t}>": list[strict[t] | None]
                       for t in ("string", "long", "int", "double")})
        leaves = [(self._paths[i], strict[self.fields[i][1]] | None) for i in self._in_struct]
        leaves.append((self._time_path, self._TIME_TYPE))
        self._struct, attrs = struct_tree(leaves)
        #: each struct field's value getter, in _in_struct order, then the time's
        self._getters = [attrgetter(a) for a in attrs]
        self._decoder = msgspec.json.Decoder(self._struct)
        self._empty = self._struct()
        self._int_fields = [(k, *_INT_RANGE[self.fields[i][1]])
                            for k, i in enumerate(self._in_struct)
                            if self.fields[i][1] in _INT_RANGE]

    def _early_reason(self, value: bytes | None, reader_reason: str | None) -> str:
        if reader_reason is not None:
            return reader_reason
        if value is None:
            return "null_value: the record has no value"
        if len(value) > self.max_bytes:
            return f"too_large: {len(value)} bytes > max_record_bytes {self.max_bytes}"
        return _NOT_UTF8

    # -- one record, the careful way -------------------------------------------------
    def _slow(self, value: bytes) -> tuple[str | None, tuple | None, Any]:
        """(reason, typed field values, raw time) of a record the fast path refused."""
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return _NOT_UTF8, None, None
            return "invalid_json: the value is not a JSON object", None, None
        if not isinstance(doc, dict):
            return "invalid_json: the value is not a JSON object", None, None
        return self.typed_fields(doc)

    def typed_fields(self, doc: dict[str, Any]) -> tuple[str | None, tuple | None, Any]:
        """(reason, every declared field's typed value, raw time) of a decoded object,
        field by field (a value that does not convert, e.g. bytes, is ``wrong_type``)."""
        out = []
        for (name, typ), path in zip(self.fields, self._paths, strict=True):
            try:
                out.append(convert_value(path_value(doc, path), typ))
            except (WrongType, TypeError):
                return self._wrong[name], None, None
            except NotObject as exc:
                return f"wrong_type: field {name}: {exc.at} is not an object", None, None
        try:
            raw_time = path_value(doc, self._time_path)
        except NotObject:
            raw_time = None
        return None, tuple(out), raw_time

    def decode(self, values: list[bytes | None] | pa.Array, *, now_ms: int,
               reader_reasons: list[str | None] | None = None) -> Decoded:
        """Decode one batch; ``now_ms`` is the batch time ``future_time`` is judged against.

        ``values``: the raw values, as a list or as an Arrow binary array (then the
        null and size tests run vectorised).
        """
        bad: dict[int, str] = {}
        early = self._early(values, reader_reasons)
        if isinstance(values, pa.Array):
            values = values.to_pylist()
        n = len(values)
        if early.size:
            for i in early.tolist():
                bad[i] = self._early_reason(values[i], None if reader_reasons is None
                                            else reader_reasons[i])
            mask = np.ones(n, dtype=bool)
            mask[early] = False
            ok = np.flatnonzero(mask)
            todo = list(compress(values, mask.tolist()))
        else:
            ok = np.arange(n, dtype=np.int64)
            todo = values
        cols, refused = self._columns(todo)
        # records the fast path refused, or with an integer out of its type's range:
        # field by field, which also finds the reason
        refused += self._out_of_range(cols)
        if refused:  # columns read as Arrow arrays (Avro) take the patches as lists
            cols = [c.to_pylist() if isinstance(c, pa.Array) else c for c in cols]
        dropped = np.zeros(len(todo), dtype=bool)
        for j in sorted(set(refused)):
            reason, typed, raw_time = self._slow(todo[j])
            if reason is not None:
                bad[int(ok[j])] = reason
                dropped[j] = True
                values_j: list[Any] = [None] * len(cols)
            else:
                values_j = [typed[i] for i in self._in_struct] + [raw_time]
            for col, v in zip(cols, values_j, strict=True):
                col[j] = v
        times = cols[-1]
        event_us = self._event_times(times)
        us = event_us.fill_null(0).to_numpy()
        missing = event_us.is_null().to_numpy(zero_copy_only=False) & ~dropped
        future = (us > now_ms * 1000 + self.max_future_us) & ~missing & ~dropped
        keep = ~(dropped | missing | future)
        bad_event_us: dict[int, int] = {}
        if missing.any() and isinstance(times, pa.Array):
            times = times.to_pylist()
        for j in np.flatnonzero(missing).tolist():
            bad[int(ok[j])] = self._missing if times[j] is None else self._bad_time
        for j in np.flatnonzero(future).tolist():
            bad[int(ok[j])] = "future_time: event time is more than max_future ahead of now"
            bad_event_us[int(ok[j])] = int(us[j])
        everything = bool(keep.all())
        columns = {self.fields[i][0]: _arrow(cols[k], _ARROW_TYPES[self.fields[i][1]])
                   for k, i in enumerate(self._in_struct)
                   if self.wanted is None or self.fields[i][0] in self.wanted}
        if not everything:  # the dropped rows' placeholders leave the columns
            mask = pa.array(keep)
            columns = {name: col.filter(mask) for name, col in columns.items()}
        return Decoded(ok if everything else ok[keep], us if everything else us[keep],
                       columns, bad, bad_event_us)

    def _early(self, values: list[bytes | None] | pa.Array,
               reader_reasons: list[str | None] | None) -> np.ndarray:
        """Positions refused before decoding: no value, too large, not UTF-8 (text
        values only), or a reader's reason.

        The whole value must be UTF-8, the fields the decoder skips too (msgspec does
        not check what it skips); Arrow checks blocks at once, and the values of a
        block it refuses one by one.
        """
        if isinstance(values, pa.Array):
            size = pc.binary_length(values)
            refused = pc.fill_null(pc.greater(size, self.max_bytes), True).to_numpy(
                zero_copy_only=False)
            for a in range(0, len(values) if self._TEXT else 0, _UTF8_BLOCK):
                block = values.slice(a, _UTF8_BLOCK)
                try:
                    block.cast(pa.string())
                except pa.ArrowInvalid:
                    refused[[j for j, v in enumerate(block.to_pylist(), a)
                             if v is not None and not _is_utf8(v)]] = True
        else:
            refused = np.fromiter((v is None or len(v) > self.max_bytes
                                   or (self._TEXT and not _is_utf8(v))
                                   for v in values), dtype=bool, count=len(values))
        if reader_reasons is not None:
            refused |= np.fromiter((r is not None for r in reader_reasons), dtype=bool,
                                   count=len(reader_reasons))
        return np.flatnonzero(refused)

    def _columns(self, values: list[bytes]) -> tuple[list[list[Any]], list[int]]:
        """The fast path's values of the struct's fields, column by column (the time's
        last; placeholders where refused), and the refused positions."""
        rows, refused = self._structs(values)
        return [list(map(get, rows)) for get in self._getters], refused

    def _structs(self, values: list[bytes]) -> tuple[list[Any], list[int]]:
        """The fast path: blocks of records decoded by ``msgspec`` in one ``map``; a block
        with a record it refuses is decoded record by record. Returns the structs (a
        placeholder where refused) and the refused positions."""
        decode = self._decoder.decode
        errors = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError)
        out: list[Any] = []
        refused: list[int] = []
        for a in range(0, len(values), _FAST_BLOCK):
            block = values[a:a + _FAST_BLOCK]
            try:
                done = list(map(decode, block))  # all or nothing: += would keep a prefix
            except errors:
                for j, v in enumerate(block, a):
                    try:
                        out.append(decode(v))
                    except errors:
                        out.append(self._empty)
                        refused.append(j)
            else:
                out += done
        return out, refused

    def _out_of_range(self, cols: list[list[Any]]) -> list[int]:
        """Positions whose integer fields are outside their type's range."""
        found: list[int] = []
        for k, low, high in self._int_fields:
            vals = cols[k]
            if self.fields[self._in_struct[k]][1].startswith("list<"):
                found += [j for j, v in enumerate(vals) if v is not None and
                          any(e is not None and not low <= e <= high for e in v)]
                continue
            try:
                arr = np.asarray(_arrow(vals, pa.int64()).fill_null(0).to_numpy())
            except (OverflowError, pa.ArrowInvalid):  # beyond 64 bits: test one by one
                found += [j for j, v in enumerate(vals)
                          if v is not None and not low <= v <= high]
                continue
            found += np.flatnonzero((arr < low) | (arr > high)).tolist()
        return found

    def _event_times(self, raw: list[Any]) -> pa.Array:
        """Event times (int64 epoch microseconds, null where none or unparsable)."""
        fmt = self.events.time_format
        if isinstance(raw, pa.Array) and (fmt != "iso8601" or raw.type != pa.string()):
            raw = raw.to_pylist()
        if fmt == "iso8601":
            blocks = [iso_block(raw[a:a + _BLOCK]) for a in range(0, len(raw), _BLOCK)]
            return pa.concat_arrays(blocks) if blocks else pa.array([], pa.int64())
        scale = 1000 if fmt == "epoch_ms" else US
        return pa.array([None if r is None else epoch_us(r, scale) for r in raw], pa.int64())
