"""Write recorded envelopes (``streamsketch record``) as JSON Lines, optionally gzip'd."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import BinaryIO

from streaming.errors import ConfigError
from streaming.logs.formats import LogFormat, detect_format, encode_envelope


class LogWriter:
    """Write recorded envelopes as JSON Lines, gzip'd when the name ends in ``.gz``.

    The file is written under a temporary name beside ``path`` and renamed
    into place by :meth:`close`, so a reader never sees a half-written log
    under the final name. An existing ``path`` is an error unless ``overwrite``.
    """

    def __init__(self, path: str | os.PathLike[str], *, format: LogFormat | None = None,
                 overwrite: bool = False) -> None:
        self.path = Path(path)
        self.format = format or detect_format(self.path)
        if self.format not in ("jsonl", "jsonl.gz"):
            raise ConfigError(f"recordings are JSON Lines (.jsonl) or gzip'd JSON Lines "
                              f"(.jsonl.gz), not {self.format}")
        if self.path.exists() and not overwrite:
            raise ConfigError(f"{self.path} exists; pass --force to overwrite it")
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
        try:
            raw = open(self._tmp, "wb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise ConfigError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._raw = raw
        self._out: BinaryIO = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) \
            if self.format == "jsonl.gz" else raw  # type: ignore[assignment]
        self.records = 0

    def write(self, *, key: bytes | None, value: bytes | None, timestamp_ms: int | None,
              topic: str, partition: int, offset: int) -> None:
        self._out.write(encode_envelope(key=key, value=value, timestamp_ms=timestamp_ms,
                                        topic=topic, partition=partition, offset=offset) + b"\n")
        self.records += 1

    def close(self) -> None:
        """Finish the file and move it into place."""
        if self._out is not self._raw:
            self._out.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self._tmp, self.path)

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
