"""What a log holds: its formats, event-time values and recorded envelopes.

A recorded envelope (``streamsketch record``) is a JSON object whose key
:data:`RECORD_MARKER` holds the format version; see :mod:`streaming.logs.reader`.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from streaming.errors import ConfigError

LogFormat = Literal["jsonl", "jsonl.gz", "parquet", "csv"]
TimeFormat = Literal["iso8601", "epoch_ms", "epoch_s"]
FORMATS: tuple[str, ...] = ("jsonl", "jsonl.gz", "parquet", "csv")
TIME_FORMATS: tuple[str, ...] = ("iso8601", "epoch_ms", "epoch_s")
RECORD_MARKER = "_streamsketch_record"
RECORD_VERSION = 1
#: an integer as JSON writes it
INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def detect_format(path: str | os.PathLike[str]) -> LogFormat:
    """The format a file name says (``.jsonl``/``.json``, ``.gz``, ``.parquet``, ``.csv``).

    >>> detect_format("day.jsonl.gz"), detect_format("day.CSV")
    ('jsonl.gz', 'csv')
    """
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        return "jsonl.gz"
    for suffix, fmt in ((".jsonl", "jsonl"), (".json", "jsonl"), (".ndjson", "jsonl"),
                        (".parquet", "parquet"), (".pq", "parquet"), (".csv", "csv")):
        if name.endswith(suffix):
            return fmt  # type: ignore[return-value]
    raise ConfigError(f"cannot tell the format of {Path(path).name!r} from its name; "
                      f"pass --format ({', '.join(FORMATS)})")


def parse_time_ms(value: Any, time_format: TimeFormat) -> int | None:
    """Epoch milliseconds of a time value, or None when it does not parse.

    >>> parse_time_ms("2026-11-23T10:00:00.042Z", "iso8601")
    1795428000042
    >>> parse_time_ms(1795428000.5, "epoch_s"), parse_time_ms("12:00", "epoch_ms")
    (1795428000500, None)
    """
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (moment - _EPOCH) // _MS
    if time_format == "iso8601":
        if not isinstance(value, str):
            return None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return (moment - _EPOCH) // _MS
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value) if not INTEGER.fullmatch(value) else int(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(round(value * 1000)) if time_format == "epoch_s" else int(round(value))


def field_bytes(value: Any) -> bytes | None:
    """An event field as the bytes of a Kafka key: text as is, anything else as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def compact_json(row: dict[str, Any] | list[Any]) -> bytes:
    """The compact UTF-8 JSON of a row (timestamps as ISO-8601 UTC, bytes as base64)."""
    text = json.dumps(row, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    return text.encode("utf-8", "surrogateescape")


def envelope_bytes(data: Any, encoding: Any) -> bytes | None:
    """Bytes of an envelope's key or value; raises ValueError when unusable."""
    if data is None:
        return None
    if not isinstance(data, str):
        raise ValueError("not text")
    if encoding in ("utf8", None):
        return data.encode("utf-8")
    if encoding == "base64":
        return base64.b64decode(data, validate=True)
    raise ValueError(f"unknown encoding {encoding!r}")


def _encoded(data: bytes | None) -> tuple[str | None, str | None]:
    if data is None:
        return None, None
    try:
        return data.decode("utf-8"), "utf8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def encode_envelope(*, key: bytes | None, value: bytes | None, timestamp_ms: int | None,
                    topic: str, partition: int, offset: int) -> bytes:
    """One recorded envelope as a JSON line (without the newline).

    >>> line = encode_envelope(key=b"u1", value=b"\\xe9", timestamp_ms=5, topic="t",
    ...                        partition=0, offset=7)
    >>> json.loads(line)["value"], json.loads(line)["value_encoding"]
    ('6Q==', 'base64')
    """
    k, k_enc = _encoded(key)
    v, v_enc = _encoded(value)
    return json.dumps({RECORD_MARKER: RECORD_VERSION, "key": k, "key_encoding": k_enc,
                       "value": v, "value_encoding": v_enc, "timestamp_ms": timestamp_ms,
                       "topic": topic, "partition": partition, "offset": offset},
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")
