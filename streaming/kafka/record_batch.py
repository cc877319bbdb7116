"""Kafka record batches (format v2), encoded as kafka-python's builder writes them.

:func:`encode_batch` encodes a whole batch; :class:`OpenBatch` and
:func:`add_record` grow one record at a time, as
:class:`~streaming.kafka.batch_producer.BatchProducer` fills each partition's batch
until it is full.

Example::

    >>> from kafka.record.default_records import DefaultRecordBatch
    >>> batch = encode_batch([(1795428000000, b"u1", b'{"a":1}')], producer_id=7,
    ...                      producer_epoch=0, base_sequence=0)
    >>> [(r.key, r.value, r.timestamp) for r in DefaultRecordBatch(batch)]
    [(b'u1', b'{"a":1}', 1795428000000)]
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from functools import cache
from typing import Any

_TABLE = 1 << 16      # varints of 0 .. _TABLE-1 are looked up, not computed

def _varint_slow(n: int) -> bytes:
    """Kafka's zig-zag varint of any int64."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


@cache
def varints() -> tuple[bytes, ...]:
    return tuple(_varint_slow(i) for i in range(_TABLE))


@cache
def _layout() -> tuple[struct.Struct, int, int, int]:
    from kafka.record.default_records import DefaultRecordBase as Base

    return Base.HEADER_STRUCT, Base.AFTER_LEN_OFFSET, Base.CRC_OFFSET, Base.ATTRIBUTES_OFFSET


def codec(name: str) -> tuple[int, Any]:
    """Kafka's attribute bits and kafka-python's encoder for a compression type."""
    import kafka.codec as codec

    codes = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
    if name not in codes:
        raise ValueError(f"unknown compression type {name!r}")
    return codes[name], getattr(codec, f"{name}_encode")


class OpenBatch:
    """The records of a partition's batch that is still being filled."""

    __slots__ = ("parts", "size", "count", "first_ts", "max_ts", "opened")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = _layout()[0].size
        self.count = 0
        self.first_ts = 0
        self.max_ts = 0
        self.opened = 0.0

    def seal(self, producer_id: int, producer_epoch: int, base_sequence: int,
             compression: str | None = None) -> bytes:
        """The batch's bytes: header (with CRC-32C) and records, compressed if smaller."""
        return seal_records(b"".join(self.parts), self.count, self.first_ts, self.max_ts,
                            producer_id, producer_epoch, base_sequence, compression)


def seal_records(records: bytes, count: int, first_ts: int, max_ts: int, producer_id: int,
                 producer_epoch: int, base_sequence: int,
                 compression: str | None = None) -> bytes:
    """A batch's bytes from its encoded records: header (with CRC-32C) and records,
    compressed if smaller."""
    from kafka.record.util import calc_crc32c

    header, after_len, crc_offset, attributes_offset = _layout()
    attributes = 0
    if compression is not None:
        code, encode = codec(compression)
        packed = encode(records)
        if len(packed) < len(records):
            records, attributes = packed, code
    buf = bytearray(header.size)
    buf += records
    # BaseOffset and PartitionLeaderEpoch are the broker's. Attributes: the
    # codec; create time, neither transactional nor control.
    header.pack_into(buf, 0, 0, len(buf) - after_len, 0, 2, 0, attributes, count - 1,
                     first_ts, max_ts, producer_id, producer_epoch, base_sequence, count)
    struct.pack_into(">I", buf, crc_offset, calc_crc32c(memoryview(buf)[attributes_offset:]))
    return bytes(buf)


@cache
def _varint_arrays() -> tuple[Any, Any]:
    """Varints of 0 .. _TABLE-1 as an Arrow array (and, at index _TABLE, -1's: a null
    key's or value's length), and their lengths."""
    import numpy as np
    import pyarrow as pa

    table = (*varints(), _varint_slow(-1))
    return pa.array(table, pa.binary()), np.array([len(v) for v in table], dtype=np.int64)


def encode_records(keys: Any, values: Any, limit: int) -> list[tuple[bytes, int]] | None:
    """Records of one timestamp (each a v2 record, no headers, as :func:`add_record`
    writes it), cut into batches whose bytes stay under ``limit`` with the header: a list
    of (records' bytes, count). Built column by column with Arrow, for many records at
    once; ``None`` when a key or value is too long for that (send them one by one).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    table, lengths = _varint_arrays()
    kl = pc.binary_length(keys).fill_null(-1).to_numpy(zero_copy_only=False)
    vl = pc.binary_length(values).fill_null(-1).to_numpy(zero_copy_only=False)
    if len(kl) == 0 or int((np.maximum(kl, 0) + np.maximum(vl, 0)).max()) >= _TABLE - 64:
        return None
    ki, vi = np.where(kl < 0, _TABLE, kl), np.where(vl < 0, _TABLE, vl)
    body = lengths[ki] + np.maximum(kl, 0) + lengths[vi] + np.maximum(vl, 0)
    # at most: 3 bytes of length, attributes, timestamp delta (0), 3 of offset delta, headers
    bound = np.cumsum(body + 8)
    room = limit - _layout()[0].size
    out = []
    start = 0
    keys, values = keys.fill_null(b""), values.fill_null(b"")
    while start < len(body):
        before = int(bound[start - 1]) if start else 0
        end = max(start + 1, int(np.searchsorted(bound, before + room, side="right")))
        n = np.arange(end - start)
        length = 3 + lengths[n] + body[start:end]  # attributes, ts delta, headers: 1 each
        records = pc.binary_join_element_wise(
            table.take(length), pa.scalar(b"\x00\x00"), table.take(n), table.take(ki[start:end]),
            keys.slice(start, end - start), table.take(vi[start:end]),
            values.slice(start, end - start), pa.scalar(b"\x00"), b"")
        _, offsets, data = records.buffers()
        at = np.frombuffer(offsets, dtype=np.int32)[records.offset:]
        out.append((memoryview(data)[int(at[0]):int(at[len(records)])].tobytes(), end - start))
        start = end
    return out


def add_record(b: OpenBatch, ts: int, key: bytes | None, value: bytes | None, limit: int,
               v: tuple[bytes, ...], join: Any = b"".join) -> bool:
    """Append a record to ``b`` unless that takes it past ``limit`` bytes (False).

    A first record is always taken. The record is Kafka's v2 record with no
    headers; varints of small numbers come from the table ``v``.
    """
    n = b.count
    if n == 0:
        b.first_ts = b.max_ts = ts
        b.opened = time.monotonic()
    elif ts > b.max_ts:
        b.max_ts = ts
    d = ts - b.first_ts
    if key is None:
        vk, key, kl = b"\x01", b"", 0
    else:
        kl = len(key)
        vk = v[kl] if kl < _TABLE else _varint_slow(kl)
    if value is None:
        vv, value, vl = b"\x01", b"", 0
    else:
        vl = len(value)
        vv = v[vl] if vl < _TABLE else _varint_slow(vl)
    vd = v[d] if 0 <= d < _TABLE else _varint_slow(d)
    vn = v[n] if n < _TABLE else _varint_slow(n)
    length = 2 + len(vd) + len(vn) + len(vk) + kl + len(vv) + vl  # attributes, headers: 1 each
    vlength = v[length] if length < _TABLE else _varint_slow(length)
    size = b.size + len(vlength) + length
    if size > limit and n:
        return False
    b.parts.append(join((vlength, b"\x00", vd, vn, vk, key, vv, value, b"\x00")))
    b.size = size
    b.count = n + 1
    return True


def encode_batch(records: Iterable[tuple[int, bytes | None, bytes | None]], *,
                 producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1,
                 compression: str | None = None) -> bytes:
    """One v2 record batch of ``(timestamp_ms, key, value)`` records, no headers.

    The bytes kafka-python's ``DefaultRecordBatchBuilder`` writes (magic 2, no
    compression) for the same records, by the code :class:`BatchProducer` uses.
    """
    b, v = OpenBatch(), varints()
    for ts, key, value in records:
        add_record(b, ts, key, value, 1 << 62, v)
    if not b.count:
        raise ValueError("a record batch needs at least one record")
    return b.seal(producer_id, producer_epoch, base_sequence, compression)
