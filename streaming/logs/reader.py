"""Recorded event logs: streaming readers (JSON Lines, gzip, Parquet, CSV).

A log is read one chunk, row group or block at a time, never whole. Each
record comes out as a :class:`LogRecord`: the 1-based line (text formats; the
CSV header is line 1) or row (Parquet), the key and value bytes to publish, and
the event time in epoch milliseconds when it could be read.

Two shapes of record are read, line by line, from the same file:

* a plain event: the line (or row) is the event. A JSON Lines value is the
  line's own bytes (not re-serialized, so a replay is byte-identical); a
  Parquet or CSV value is the compact JSON of the row. The key is the
  ``key_field`` of the event, the time its ``time_field``.
* a recorded envelope, written by :class:`~streaming.logs.writer.LogWriter`
  (``streamsketch record``):
  a JSON object whose key :data:`RECORD_MARKER` holds the format version::

      {"_streamsketch_record":1,"key":"u001","key_encoding":"utf8",
       "value":"{\\"ts\\":...}","value_encoding":"utf8","timestamp_ms":1795428000000,
       "topic":"clickstream","partition":0,"offset":42}

  ``value`` is the record's value as text (``"utf8"``), base64 (``"base64"``,
  for bytes that are not UTF-8) or null (a null value, encoding null); the
  same for ``key``. Key and value bytes are published exactly as recorded.

A bad record never stops a read. Each is counted under a reason of
:data:`BAD_REASONS` with its line number (the first :data:`KEEP_LINES` per
reason) and, unless ``skip_bad``, still yielded with ``bad`` set so it is
published as-is (the pipeline quarantines it with its offset). A truncated or
corrupt compressed tail cannot be published: it ends the read and is counted.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "events.jsonl"
    >>> _ = path.write_bytes(b'{"user_id":"u1","ts":"2026-11-23T10:00:00Z"}\\nnot json\\n')
    >>> with LogReader(path, ReadOptions(key_field="user_id", time_field="ts")) as reader:
    ...     records = list(reader)
    >>> [(r.line, r.key, r.time_ms, r.bad) for r in records]
    [(1, b'u1', 1795428000000, None), (2, None, None, 'invalid_json')]
    >>> reader.bad.counts
    {'invalid_json': 1}
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple

from streaming.errors import ConfigError, LogFormatError
from streaming.logs.formats import (
    FORMATS,
    INTEGER,
    RECORD_MARKER,
    RECORD_VERSION,
    TIME_FORMATS,
    LogFormat,
    TimeFormat,
    compact_json,
    detect_format,
    envelope_bytes,
    field_bytes,
    parse_time_ms,
)

KEEP_LINES = 100
"""Line numbers kept per bad reason; the count goes on past it."""

BAD_REASONS = ("invalid_json", "invalid_utf8", "not_an_object", "missing_time", "bad_time",
               "bad_envelope", "bad_row", "unsendable", "truncated", "corrupt")
"""Why a record is bad.

* ``invalid_json`` / ``invalid_utf8``: the line is not JSON / not UTF-8 text.
* ``not_an_object``: JSON, but not an object (no fields to key or time it by).
* ``missing_time`` / ``bad_time``: no time field, or one that does not parse;
  counted only when the read needs times (``require_time``, for pacing).
* ``bad_envelope``: carries :data:`RECORD_MARKER` but its fields are unusable.
* ``bad_row``: a CSV row with more or fewer fields than the header; its value
  is the JSON array of its fields.
* ``unsendable``: a recorded envelope with neither key nor value (Kafka needs one).
* ``truncated`` / ``corrupt``: a compressed stream cut short, or undecodable
  data (also an unreadable Parquet row group). The rest of the file cannot be
  read; the line is the first one lost. Never published.
"""
_ENVELOPE_START = b'{"' + RECORD_MARKER.encode() + b'"'
_NEVER_PUBLISHED = frozenset({"unsendable", "truncated", "corrupt"})

_CHUNK = 1 << 18  # bytes of text split into lines at a time
_ZCHUNK = 1 << 16  # compressed bytes fed at a time: on corrupt data, little is lost
_raw_decode = json.JSONDecoder().raw_decode
_SURROGATE = re.compile("[\udc80-\udcff]")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


class LogRecord(NamedTuple):
    """One record of a log, ready to publish (``bad`` is the reason, or None)."""

    line: int
    key: bytes | None
    value: bytes | None
    time_ms: int | None
    bad: str | None = None


@dataclass(frozen=True)
class ReadOptions:
    """How to read a log.

    Args:
        format: one of :data:`FORMATS`; None detects it from the file name.
        key_field: event field whose value is the Kafka key of a plain event.
        time_field: event field holding the event time (None: times are not read).
        time_format: how that field is written: ISO-8601 text (no offset = UTC),
            or epoch milliseconds / seconds (numbers or numeric text).
        require_time: count a record without a usable time as bad.
        envelope_time: the time of a recorded envelope: its Kafka
            ``timestamp_ms``, or the ``time_field`` of its value.
        skip_bad: drop bad records instead of yielding them.
        raw: JSON Lines values as they are, not decoded (no key, no time; bad JSON
            is left for the pipeline's parser); recorded envelopes are still decoded.
        keep_lost: also yield the marks of data lost to a cut or corrupt file
            (``truncated``, ``corrupt``, ``unsendable``), for a backfill to quarantine.
    """

    format: LogFormat | None = None
    key_field: str | None = None
    time_field: str | None = None
    time_format: TimeFormat = "iso8601"
    require_time: bool = False
    envelope_time: Literal["timestamp", "field"] = "timestamp"
    skip_bad: bool = False
    raw: bool = False
    keep_lost: bool = False

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise ConfigError(f"unknown log format {self.format!r} (one of {', '.join(FORMATS)})")
        if self.time_format not in TIME_FORMATS:
            raise ConfigError(f"unknown time format {self.time_format!r} "
                              f"(one of {', '.join(TIME_FORMATS)})")
        if self.require_time and not self.time_field:
            raise ConfigError("pacing by event time needs a time field (--time-field)")


@dataclass
class BadRecords:
    """Bad records of one log: a count and the first line numbers per reason."""

    counts: dict[str, int] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)
    dropped: int = 0

    def add(self, reason: str, line: int) -> None:
        n = self.counts.get(reason, 0)
        self.counts[reason] = n + 1
        if n < KEEP_LINES:
            self.lines.setdefault(reason, []).append(line)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {reason: {"count": n, "lines": self.lines.get(reason, []),
                         "published": reason not in _NEVER_PUBLISHED and not self.dropped}
                for reason, n in sorted(self.counts.items())}


class LogReader:
    """Stream the records of one log file.

    Iterate once; the counts of bad records are in :attr:`bad` (and blank
    lines, which are not records, in :attr:`blank_lines`) as the read goes.
    :meth:`bytes_read` against :attr:`size` tells how far it is.

    Raises:
        LogFormatError: the file cannot be opened as its format, or carries
            envelopes of another version.
    """

    def __init__(self, path: str | os.PathLike[str], options: ReadOptions = ReadOptions()) -> None:
        self.path = Path(path)
        self.options = options
        self.format: LogFormat = options.format or detect_format(self.path)
        try:
            self.size = self.path.stat().st_size
        except OSError as exc:
            raise LogFormatError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        self.bad = BadRecords()
        self.blank_lines = 0
        self._file: BinaryIO | None = None
        self._parquet_fraction = 0.0

    def __enter__(self) -> LogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def bytes_read(self) -> int:
        """Bytes of the file consumed so far (an estimate for Parquet)."""
        if self.format == "parquet":
            return int(self.size * self._parquet_fraction)
        try:
            return self._file.tell() if self._file is not None else 0
        except (OSError, ValueError):
            return self.size

    def __iter__(self) -> Iterator[LogRecord]:
        return self.records()

    def records(self, *, after_line: int = 0) -> Iterator[LogRecord]:
        """The records, from the first one past line (or row) ``after_line``.

        Lines up to ``after_line`` are counted, not decoded, nor counted as bad.
        """
        if self.format == "parquet":
            records = self._parquet(after_line)
        elif self.format == "csv":
            records = self._csv(after_line)
        else:
            records = self._jsonl(after_line)
        skip = self.options.skip_bad
        for record in records:
            if record.bad is not None:
                self.bad.add(record.bad, record.line)
                if skip or (record.bad in _NEVER_PUBLISHED and not self.options.keep_lost):
                    self.bad.dropped += record.bad not in _NEVER_PUBLISHED
                    continue
            yield record

    # -- shared: one decoded object -> a record -------------------------------------
    def _time(self, event: dict[str, Any]) -> tuple[int | None, str | None]:
        opts = self.options
        raw: Any = event
        for key in opts.time_field.split(".") if opts.time_field else [None]:
            # a path (payload.created_at) through objects; anything else: no time
            raw = raw.get(key) if key is not None and isinstance(raw, dict) else None
        if raw is None:
            return None, "missing_time" if opts.require_time else None
        ms = parse_time_ms(raw, opts.time_format)
        return ms, "bad_time" if ms is None and opts.require_time else None

    def _record(self, line: int, obj: Any, value: bytes) -> LogRecord:
        if type(obj) is not dict:
            return LogRecord(line, None, value, None, "not_an_object")
        if RECORD_MARKER in obj:
            return self._envelope(line, obj, value)
        key = field_bytes(obj.get(self.options.key_field)) if self.options.key_field else None
        if self.options.time_field is None and not self.options.require_time:
            return LogRecord(line, key, value, None, None)
        time_ms, bad = self._time(obj)
        return LogRecord(line, key, value, time_ms, bad)

    def _envelope(self, line: int, obj: dict[str, Any], raw: bytes) -> LogRecord:
        version = obj[RECORD_MARKER]
        if version != RECORD_VERSION:
            raise LogFormatError(f"{self.path}:{line}: a recorded envelope of version "
                                 f"{version!r}; this streamsketch reads version {RECORD_VERSION}")
        try:
            key = envelope_bytes(obj.get("key"), obj.get("key_encoding"))
            value = envelope_bytes(obj.get("value"), obj.get("value_encoding"))
        except (ValueError, TypeError):
            return LogRecord(line, None, raw, None, "bad_envelope")
        if key is None and value is None:
            return LogRecord(line, None, None, None, "unsendable")
        if self.options.envelope_time == "timestamp":
            ts = obj.get("timestamp_ms")
            time_ms = ts if type(ts) is int else None
            bad = "missing_time" if time_ms is None and self.options.require_time else None
            return LogRecord(line, key, value, time_ms, bad)
        try:
            event = json.loads(value) if value is not None else None
        except ValueError:
            event = None
        if type(event) is not dict:
            return LogRecord(line, key, value, None,
                             "missing_time" if self.options.require_time else None)
        time_ms, bad = self._time(event)
        return LogRecord(line, key, value, time_ms, bad)

    # -- JSON Lines, plain or gzip'd ------------------------------------------------
    def _open(self) -> BinaryIO:
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise LogFormatError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        return self._file

    def _plain_chunks(self, f: BinaryIO) -> Iterator[bytes]:
        while chunk := f.read(_CHUNK):
            yield chunk

    def _gzip_chunks(self, f: BinaryIO, status: list[str]) -> Iterator[bytes]:
        """Decompressed chunks; on a cut or corrupt stream, stops with ``status[0]`` set."""
        if f.read(2) != b"\x1f\x8b":
            raise LogFormatError(f"{self.path}: not a gzip file")
        f.seek(0)
        d = zlib.decompressobj(wbits=31)
        started = False
        while data := f.read(_ZCHUNK):
            drain = False
            while data or drain:
                if not started:
                    if not data.strip(b"\0"):
                        break  # nothing, or zero padding, after the last member
                    started = True
                try:
                    out = d.decompress(data, _CHUNK)
                except zlib.error:
                    status.append("corrupt")
                    return
                if out:
                    yield out
                if d.eof:  # a member ended; another may follow
                    data, drain = d.unused_data, False
                    d = zlib.decompressobj(wbits=31)
                    started = False
                else:  # output was capped: go on with the rest, or drain what zlib holds
                    data, drain = d.unconsumed_tail, len(out) == _CHUNK
        if started:
            status.append("truncated")

    def _jsonl(self, after: int) -> Iterator[LogRecord]:
        f = self._open()
        status: list[str] = []
        chunks = self._gzip_chunks(f, status) if self.format == "jsonl.gz" else \
            self._plain_chunks(f)
        parse = self._line
        n = 0
        tail = b""
        for chunk in chunks:
            lines = (tail + chunk if tail else chunk).split(b"\n")
            tail = lines.pop()
            if n == 0 and lines and lines[0].startswith(codecs.BOM_UTF8):
                lines[0] = lines[0][len(codecs.BOM_UTF8):]
            if n + len(lines) <= after:
                n += len(lines)
                continue
            for raw in lines:
                n += 1
                if n > after and (out := parse(n, raw)) is not None:
                    yield out
        if status:  # the cut line, if any, is lost with the rest of the stream
            yield LogRecord(n + 1, None, None, None, status[0])
        elif tail and n + 1 > after and (out := parse(n + 1, tail)) is not None:
            yield out

    def _line(self, n: int, raw: bytes) -> LogRecord | None:
        if raw[-1:] == b"\r":
            raw = raw[:-1]
        if self.options.raw and not raw.startswith(_ENVELOPE_START):
            if not raw.strip():
                self.blank_lines += 1
                return None
            return LogRecord(n, None, raw, None, None)
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            return LogRecord(n, None, raw, None, "invalid_utf8")
        try:  # the fast path: no surrounding whitespace
            obj, end = _raw_decode(text)
            if end != len(text):
                obj = json.loads(text)
        except ValueError:
            try:
                obj = json.loads(text)
            except ValueError:
                if not text.strip():
                    self.blank_lines += 1
                    return None
                return LogRecord(n, None, raw, None, "invalid_json")
        return self._record(n, obj, raw)

    # -- Parquet, by batches ---------------------------------------------------------
    def _parquet(self, after: int) -> Iterator[LogRecord]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self._open())
        except (pa.ArrowException, OSError) as exc:
            raise LogFormatError(f"{self.path}: not a Parquet file ({exc})") from None
        total = max(1, pf.metadata.num_rows)
        n = 0
        batches = pf.iter_batches(batch_size=8192)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowException, OSError):
                yield LogRecord(n + 1, None, None, None, "corrupt")
                break
            if n + batch.num_rows <= after:
                n += batch.num_rows
            else:
                for row in batch.to_pylist():
                    n += 1
                    if n > after:
                        yield self._record(n, row, compact_json(row))
            self._parquet_fraction = n / total

    # -- CSV with a header -------------------------------------------------------------
    def _csv(self, after: int) -> Iterator[LogRecord]:
        text = io.TextIOWrapper(self._open(), encoding="utf-8", errors="surrogateescape",
                                newline="")
        reader = csv.reader(text)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise LogFormatError(f"{self.path}: not a CSV file with a header ({exc})") from None
        width = len(header)
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error:
                yield LogRecord(start, None, None, None, "corrupt")
                break
            if not fields:
                self.blank_lines += 1
                continue
            if start <= after:
                continue
            if len(fields) != width:
                yield LogRecord(start, None, compact_json(fields), None, "bad_row")
                continue
            row = {name: _csv_value(v) for name, v in zip(header, fields, strict=True)}
            value = compact_json(row)
            if _SURROGATE.search("".join(fields)):  # bytes that were not UTF-8
                yield LogRecord(start, None, value, None, "invalid_utf8")
                continue
            yield self._record(start, row, value)


def _csv_value(text: str) -> Any:
    """A CSV field as JSON: empty is null, plain integers and decimals are numbers.

    Only forms that print back the same way become numbers, so ``"007"`` stays
    text; ``true``/``false`` become booleans; the rest stays text.
    """
    if not text:
        return None
    c = text[0]
    if c.isdigit() or c == "-":
        if INTEGER.fullmatch(text):
            return int(text)
        if _FLOAT.fullmatch(text):
            return float(text)
    elif text == "true" or text == "false":
        return text == "true"
    return text


def read_log(path: str | os.PathLike[str], options: ReadOptions = ReadOptions()
             ) -> Iterator[LogRecord]:
    """The records of a log (see :class:`LogReader` for the counts of bad ones)."""
    with LogReader(path, options) as reader:
        yield from reader
