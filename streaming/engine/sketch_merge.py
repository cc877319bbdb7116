"""Merge many serialised sketches at once: the union a query over a time range needs.

A year of hourly windows x 16 groups is 140,160 sketches of one name; turning
each into a ``sketches`` object and merging them one by one costs ~10-100 µs
apiece (seconds in all). :func:`merge_blobs` reads the stored bytes of every row
in a few NumPy passes instead (HyperLogLog registers: maximum; Bloom words: OR;
Count-Min counters: sum) and hands the merged state back to the ``sketches``
package as bytes, whose strict reader checks it. The layout it reads is the
``sketches`` format (see ``sketches/_format.py`` and each sketch's ``to_bytes``):

* every blob's header and parameters must equal those of the spec's sketch, and
  its length the one its counts imply, else the blobs are merged one by one by
  :func:`merge_each` (which raises the ``sketches`` package's own error for a
  damaged or incompatible blob);
* the CRC-32 trailer of every blob is checked.

Count-Min heavy hitters: the merged counters rank the union of every blob's
candidates (:meth:`sketches.CountMinSketch.rerank`), so the result does not
depend on the order of the rows. :func:`merge_each` gives the same answer.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np

import sketches
from streaming.engine.blobs import Blobs, runs, segments
from streaming.spec.windows import SketchSpec

_HEADER = 13  # magic, version, kind, seed
_PARAMS = {"hll": 1, "bloom": 26, "cms": 10}  # parameter bytes compared across blobs
_TAG_STR = 4


def merge_each(blobs: Iterable[bytes], spec: SketchSpec) -> Any:
    """The union of every blob's sketch (the reference way, one ``from_bytes`` each).

    ``sketches.union`` merges them at once (compact states in one sort); a Count-Min
    then offers every part's candidates to the merged counters, so the heavy hitters
    do not depend on the order of the rows.
    """
    parts = [spec.read(bytes(blob)) for blob in blobs]
    for one in parts:  # the package's own error for a foreign kind or parameters
        spec.new()._check_mergeable(one)
    if not parts:
        return spec.new()
    result = sketches.union(*parts)
    if spec.kind == "cms" and result.top_k:
        result.rerank([item for one in parts for item, _ in one.top(one.capacity)])
    return result


def merge_blobs(blobs: Any, spec: SketchSpec) -> Any:
    """The union of ``blobs`` (an Arrow binary array of any layout, or a list of bytes).

    Example:
        >>> from streaming.spec.windows import SketchSpec
        >>> s = SketchSpec("users", "hll", "user_id", (("precision", 10),))
        >>> parts = [s.new().update(["a", "b"]).to_bytes(), s.new().update(["c"]).to_bytes()]
        >>> round(merge_blobs(parts, s).estimate())
        3
    """
    import pyarrow as pa

    arr = blobs if isinstance(blobs, (pa.Array, pa.ChunkedArray)) else \
        pa.array(blobs, pa.large_binary())
    return merge_chunks(arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr], spec)


def merge_chunks(chunks: Iterable[Any], spec: SketchSpec) -> Any:
    """The union of the blobs of Arrow binary arrays, read as they come.

    ``chunks`` may be a stream (record batches still being decoded by the reader):
    each is merged into a partial state as soon as it arrives, so reading and
    merging overlap.
    """
    seen: list[Any] = []
    parts: list[Any] | None = [] if spec.native and spec.kind in _PARAMS else None
    template = spec.new().to_bytes()
    prefix = np.frombuffer(template[:_HEADER + _PARAMS.get(spec.kind, 0)], dtype=np.uint8)
    for chunk in chunks:
        if chunk.null_count:
            chunk = chunk.drop_null()
        seen.append(chunk)
        if parts is None:
            continue
        for segment in segments(chunk):
            state = None
            if segment.same_prefix(prefix) and segment.crc_ok():
                state = _READ[spec.kind](segment, template)
            if state is None:  # not the layout expected: the one-by-one path decides
                parts = None
                break
            parts.append(state)
    if not any(len(c) for c in seen):
        return spec.new()
    merged = _ENCODE[spec.kind](parts, template) if parts else None
    if merged is None:
        return merge_each((b for c in seen for b in c.to_pylist()), spec)
    return merged


def _seal(template: bytes, *parts: bytes) -> bytes:
    body = template[:_HEADER] + b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def _encodings(b: Blobs, at: int) -> tuple[Any, Any, Any] | None:
    """Per blob, whether the byte at ``at`` says sparse (1), dense (0) or compact (2);
    None if any blob holds another encoding (the caller then merges one by one)."""
    encoding = b.data[b.start + at]
    sparse, dense, compact = encoding == 1, encoding == 0, encoding == 2
    if not np.all(sparse | dense | compact):
        return None
    return sparse, dense, compact


def _read_hll(b: Blobs, template: bytes) -> Any:
    """(registers' maximum or None, compact entries) over the blobs of one segment.

    None: not the expected layout. Compact sketches (encoding 2: sorted uint32 sparse
    entries at precision 25) give their entries; registers come from the others.
    """
    precision = template[_HEADER]
    m = 1 << precision
    modes = _encodings(b, _HEADER + 1)
    if modes is None:
        return None
    sparse, dense, compact = modes
    registers = np.zeros(m, dtype=np.uint8)
    entries25 = np.zeros(0, dtype=np.uint32)
    if compact.any():
        found = b.counted(compact, _HEADER + 2, 4)
        if found is None:
            return None
        entries25 = b.gather(*found, 4).astype(np.uint32)
    if not (sparse.any() or dense.any()):
        return None, entries25
    if sparse.any():
        found = b.counted(sparse, _HEADER + 2, 4)
        if found is None:
            return None
        entries = b.gather(*found, 4)
        index = (entries >> np.uint64(8)).astype(np.int64)
        if index.size and int(index.max()) >= m:
            return None
        np.maximum.at(registers, index, (entries & np.uint64(0xFF)).astype(np.uint8))
    if dense.any():
        d = b.start[dense]
        if not np.all(b.end[dense] - d == _HEADER + 2 + m + 4):
            return None
        for i in range(0, d.size, 1024):
            rows = b.data[(d[i:i + 1024] + _HEADER + 2)[:, None] + np.arange(m)]
            np.maximum(registers, rows.max(axis=0), out=registers)
    return registers, entries25


def _encode_hll(parts: list[Any], template: bytes) -> Any:
    from sketches._hll_sparse import dedupe, entry_registers, sparse_limit

    precision = template[_HEADER]
    m = 1 << precision
    dense = [r for r, _ in parts if r is not None]
    entries = dedupe(np.concatenate([e for _, e in parts])) if parts else None
    if not dense and entries is not None and entries.size <= sparse_limit(precision):
        # every part compact and their union still small: the union is compact too
        raw = _seal(template, bytes([precision, 2]), struct.pack("<I", entries.size),
                    entries.astype("<u4").tobytes())
        return sketches.HyperLogLog.from_bytes(raw)
    registers = np.maximum.reduce(dense) if dense else np.zeros(m, dtype=np.uint8)
    if entries is not None and entries.size:
        index, rho = entry_registers(entries, precision)
        np.maximum.at(registers, index, rho)
    if int(registers.max()) > 65 - precision:
        return None
    nonzero = np.flatnonzero(registers)
    if 4 * nonzero.size + 4 < m:
        entries = (nonzero.astype(np.uint32) << np.uint32(8)) | registers[nonzero]
        raw = _seal(template, bytes([precision, 1]), struct.pack("<I", nonzero.size),
                    entries.astype("<u4").tobytes())
    else:
        raw = _seal(template, bytes([precision, 0]), registers.tobytes())
    return sketches.HyperLogLog.from_bytes(raw)


def _read_bloom(b: Blobs, template: bytes) -> Any:
    """The words' OR over the blobs of one segment (None: not the expected layout)."""
    params = template[_HEADER:_HEADER + 26]
    num_bits = struct.unpack_from("<Q", params, 16)[0]
    n_words = num_bits // 64
    at = _HEADER + 26
    modes = _encodings(b, at)
    if modes is None:
        return None
    sparse, dense, compact = modes
    words = np.zeros(n_words, dtype=np.uint64)
    hashes = np.zeros(0, dtype=np.uint64)
    if compact.any():  # the filter's hashes while small (sorted, distinct)
        found = b.counted(compact, at + 1, 8)
        if found is None:
            return None
        hashes = b.gather(*found, 8).astype(np.uint64)
    if not (sparse.any() or dense.any()):
        return None, hashes
    if sparse.any():
        found = b.counted(sparse, at + 1, 12)  # uint32 word indices, then uint64 words
        if found is None:
            return None
        first, count = found
        index = b.gather(first, count, 4).astype(np.int64)
        values = b.gather(first + 4 * count, count, 8)
        if index.size and int(index.max()) >= n_words:
            return None
        np.bitwise_or.at(words, index, values)
    if dense.any():
        d = b.start[dense]
        if not np.all(b.end[dense] - d == at + 1 + 8 * n_words + 4):
            return None
        for pos in d.tolist():
            words |= b.data[pos + at + 1:pos + at + 1 + 8 * n_words].view("<u8")
    return words, hashes


def _encode_bloom(parts: list[Any], template: bytes) -> Any:
    from sketches._topk import sorted_unique

    params = template[_HEADER:_HEADER + 26]
    n_words = struct.unpack_from("<Q", params, 16)[0] // 64
    dense = [w for w, _ in parts if w is not None]
    hashes = sorted_unique(np.concatenate([h for _, h in parts]))
    if not dense and hashes.size <= n_words:  # hash_limit: num_bits / 64
        raw = _seal(template, params, struct.pack("<BI", 2, hashes.size),
                    hashes.astype("<u8").tobytes())
        return sketches.BloomFilter.from_bytes(raw)
    words = np.bitwise_or.reduce(dense) if dense else np.zeros(n_words, dtype=np.uint64)
    if hashes.size:  # the small filters' hashes set their bits, as an update would
        capacity, error_rate = struct.unpack_from("<Qd", params, 0)
        seed = struct.unpack_from("<Q", template, 5)[0]
        bits = sketches.BloomFilter(capacity, error_rate, seed=seed)
        bits._hashes = hashes
        bits._to_bits()
        words = words | bits._words
    nonzero = np.flatnonzero(words)
    if 12 * nonzero.size + 4 < 8 * n_words:
        raw = _seal(template, params, struct.pack("<BI", 1, nonzero.size),
                    nonzero.astype("<u4").tobytes(), words[nonzero].astype("<u8").tobytes())
    else:
        raw = _seal(template, params, b"\x00", words.astype("<u8").tobytes())
    return sketches.BloomFilter.from_bytes(raw)


def _read_cms(b: Blobs, template: bytes) -> Any:
    """(counters, total, candidate items, exact items, exact counts, any counters) over the
    blobs of one segment, or None.

    Exact-mode blobs (encoding 2: counts, then every item) give their items and counts;
    the others their counters and candidates.
    """
    import pyarrow as pa

    width, depth, top_k = struct.unpack_from("<IHI", template, _HEADER)
    size = width * depth
    total = int(b.uint(b.start + _HEADER + 10, 8).sum(dtype=np.uint64))
    sparse = b.data[b.start + _HEADER + 18]
    vw = b.data[b.start + _HEADER + 19].astype(np.int64)
    if not np.all(np.isin(sparse, (0, 1, 2))) or not np.all(np.isin(vw, (1, 2, 4, 8))):
        return None
    exact = sparse == 2
    ex_items, ex_counts = pa.nulls(0, pa.large_string()), np.zeros(0, dtype=np.uint64)
    if exact.any():
        if not top_k:  # exact tables of hashes only: the one-by-one path
            return None
        sel = np.flatnonzero(exact)
        count = b.uint(b.start[sel] + _HEADER + 20, 4).astype(np.int64)
        counts_at = b.start[sel] + _HEADER + 24
        pieces = []
        items_at = counts_at.copy()
        for w in (1, 2, 4, 8):
            one = np.flatnonzero(vw[sel] == w)
            if one.size:
                pieces.append((one, b.gather(counts_at[one], count[one], w)
                               .astype(np.uint64)))
                items_at[one] = counts_at[one] + w * count[one]
        # counts in blob order, to line up with the items read blob by blob
        first = np.concatenate(([0], np.cumsum(count)[:-1]))
        ex_counts = np.zeros(int(count.sum()), dtype=np.uint64)
        for one, values in pieces:
            ex_counts[runs(first[one], count[one], 1)] = values
        ex_items = _string_items(b, items_at, count, sel)
        if ex_items is None or len(ex_items) != ex_counts.size:
            return None
    counters = np.zeros(size, dtype=np.uint64)
    n_cand_at = np.zeros(len(b), dtype=np.int64)
    body = b.start + _HEADER + 20
    for is_sparse in (0, 1):
        for w in (1, 2, 4, 8):
            sel = np.flatnonzero((sparse == is_sparse) & (vw == w))
            if not sel.size:
                continue
            pos = body[sel]
            if is_sparse:
                count = b.uint(pos, 4).astype(np.int64)
                index = b.gather(pos + 4, count, 4).astype(np.int64)
                values = b.gather(pos + 4 + 4 * count, count, w)
                if index.size and int(index.max()) >= size:
                    return None
                _add_at(counters, index, values, total)
                n_cand_at[sel] = pos + 4 + (4 + w) * count
            else:
                for p in pos.tolist():
                    counters += b.data[p:p + w * size].view(f"<u{w}").astype(np.uint64)
                n_cand_at[sel] = pos + w * size
    dense = np.flatnonzero(~exact)
    items = pa.nulls(0, pa.large_string())
    if dense.size:
        n_cand = b.uint(n_cand_at[dense], 4).astype(np.int64)
        items = _string_items(b, n_cand_at[dense] + 4, n_cand, dense)
        if items is None:
            return None
    return counters, total, items, ex_items, ex_counts, bool(dense.size)


def _encode_cms(parts: list[Any], template: bytes) -> Any:
    import pyarrow as pa

    width, depth, top_k = struct.unpack_from("<IHI", template, _HEADER)
    seed = struct.unpack_from("<Q", template, 5)[0]
    size = width * depth
    flat = parts[0][0].copy()
    for p in parts[1:]:
        flat += p[0]
    total = sum(p[1] for p in parts)
    if total >= 1 << 63:
        return None
    items = pa.chunked_array([p[2] for p in parts], pa.large_string())
    ex_items = pa.chunked_array([p[3] for p in parts], pa.large_string()).combine_chunks()
    ex_counts = np.concatenate([p[4] for p in parts]).astype(np.int64)
    any_counters = any(p[5] for p in parts)
    if len(ex_items):
        # exact-mode parts: their items' counts, summed per distinct item (Arrow's hash
        # table finds the distinct items without a Python string per item)
        encoded = ex_items.dictionary_encode()
        uniques = encoded.dictionary
        # the indices' buffer read directly: pyarrow's to_numpy imports pandas (~0.13 s)
        idx = encoded.indices
        nbytes = idx.type.bit_width // 8
        codes = np.frombuffer(idx.buffers()[1], dtype=f"<i{nbytes}", count=len(idx),
                              offset=idx.offset * nbytes)
        summed = np.zeros(len(uniques), dtype=np.int64)
        np.add.at(summed, codes, ex_counts)
        one = sketches.CountMinSketch(width, depth, seed=seed, top_k=top_k)
        if not any_counters and len(uniques) <= one.exact_limit:
            return one.update(uniques, counts=summed)  # still exact: the same table
        # past the exact limit: their counts go into the counters like any update
        index = one._flat_indices(sketches.hash64(uniques, seed))
        np.add.at(flat, index.reshape(-1),
                  np.broadcast_to(summed, index.shape).reshape(-1).astype(np.uint64))
        items = pa.chunked_array([*items.chunks, uniques.cast(pa.large_string())],
                                 pa.large_string())
    top = int(flat.max()) if size else 0
    vw_out = next(w for w in (1, 2, 4, 8) if top < 1 << (8 * w))
    nonzero = np.flatnonzero(flat)
    is_sparse = nonzero.size * (4 + vw_out) + 4 < size * vw_out
    head = struct.pack("<IHIQBB", width, depth, top_k, total, int(is_sparse), vw_out)
    if is_sparse:
        parts = [head, struct.pack("<I", nonzero.size), nonzero.astype("<u4").tobytes(),
                 flat[nonzero].astype(f"<u{vw_out}").tobytes()]
    else:
        parts = [head, flat.astype(f"<u{vw_out}").tobytes()]
    out = sketches.CountMinSketch.from_bytes(_seal(template, *parts, struct.pack("<I", 0)))
    if top_k and len(items):
        out.rerank(items.unique())
    return out


_READ = {"hll": _read_hll, "bloom": _read_bloom, "cms": _read_cms}
_ENCODE = {"hll": _encode_hll, "bloom": _encode_bloom, "cms": _encode_cms}


def _add_at(counters: np.ndarray, index: np.ndarray, values: np.ndarray, total: int) -> None:
    """``counters[index] += values``; through float64 bincount (exact below 2**53: no
    counter exceeds the merged total) as it is several times faster than ``np.add.at``."""
    if total < 1 << 53:
        sums = np.bincount(index, weights=values.astype(np.float64), minlength=counters.size)
        counters += sums.astype(np.uint64)
    else:
        np.add.at(counters, index, values)


def _string_items(b: Blobs, pos: np.ndarray, n_cand: np.ndarray,
                  which: np.ndarray | None = None) -> Any:
    """The string items of blobs (``which``: their indices; default all), one array.

    Items are read blob-major: every item of the first blob, then the second's, ...
    None when an item is not a string (ints, floats and bytes are read one blob at a
    time by :func:`merge_each`) or the lengths do not add up.
    """
    import pyarrow as pa

    end = (b.end if which is None else b.end[which]) - 4
    pos = pos.copy()
    starts, lengths, owner = [], [], []
    for j in range(int(n_cand.max()) if n_cand.size else 0):
        live = np.flatnonzero(n_cand > j)
        p = pos[live]
        if np.any(p + 5 > end[live]) or np.any(b.data[p] != _TAG_STR):
            return None
        length = b.uint(p + 1, 4).astype(np.int64)
        starts.append(p + 5)
        lengths.append(length)
        owner.append(live * (int(n_cand.max()) + 1) + j)
        pos[live] = p + 5 + length
    if np.any(pos != end):
        return None
    if not starts:
        return pa.nulls(0, pa.large_string())
    order = np.argsort(np.concatenate(owner), kind="stable")  # blob-major
    start = np.concatenate(starts)[order]
    length = np.concatenate(lengths)[order]
    offsets = np.concatenate(([0], np.cumsum(length))).astype(np.int64)
    raw = b.data[runs(start, length, 1)]
    items = pa.LargeStringArray.from_buffers(length.size, pa.py_buffer(offsets),
                                             pa.py_buffer(raw))
    items.validate(full=True)
    return items
