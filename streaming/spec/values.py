"""Checks of spec values that are not windows: local paths, field paths, Spark settings."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streaming.errors import SpecError

#: a URI (``s3://``, ``gs://``, ``abfss://``, ``hdfs://``, ``file://``): not a local path
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def not_local(value: str) -> str | None:
    """Why ``value`` is refused as a folder of tables, checkpoints or logs: a URI names
    storage this version does not write to, and taken as a path it would become a local
    folder named ``s3:`` (what a plain path join makes of it). None for a local path."""
    if not _URI.match(value):
        return None
    scheme = value.split("://", 1)[0]
    return (f"{scheme}:// is not supported yet: give a local path (on a cluster, a file "
            "system every machine mounts at the same path)")


def field_paths(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``[events.fields]`` as (path, type): ``"actor.login" = "string"``, the bare key
    ``actor.login = "string"`` and a table ``[events.fields.actor]`` holding ``login`` all
    declare the field ``actor.login``."""
    out = []
    for k, v in table.items():
        if isinstance(v, dict):
            out += field_paths(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def flat_settings(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``[spark]``'s keys with TOML's dotted tables joined back: ``spark.executor.memory =
    "4g"`` written bare in TOML is the table ``{executor: {memory: "4g"}}``; a table that
    is a secret reference (``{ env = ... }``) stays a value."""
    out = []
    for k, v in table.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and not (set(v) <= {"env", "file"} and len(v) == 1):
            out += flat_settings(v, f"{name}.")
        else:
            out.append((name, v))
    return out


#: Spark settings the engine sets itself and depends on; each with what to use instead
_SPARK_OWN = {
    "spark.master": "give --master instead",
    "spark.jars": "the jars come from the verified cache (streamsketch jars)",
    "spark.jars.packages": "the jars come from the verified cache (streamsketch jars)",
    "spark.sql.extensions": "Delta's extension is set by streamsketch",
    "spark.sql.catalog.spark_catalog": "Delta's catalog is set by streamsketch",
    "spark.sql.session.timeZone": "windows are computed in UTC",
}


def spark_setting_refused(key: str) -> str | None:
    """Why a Spark setting may not be changed (None: it may)."""
    if key in _SPARK_OWN:
        return f"is streamsketch's own setting: {_SPARK_OWN[key]}"
    if not re.fullmatch(r"spark(\.[A-Za-z0-9_\-]+)+", key):
        return "is not a Spark setting (spark.<name>...)"
    return None


def secret_like(key: str) -> bool:
    """A setting whose value is a credential (S3A keys, passwords, tokens)."""
    low = key.lower()
    return any(s in low for s in ("password", "secret", "token", "access.key",
                                  "credentials", "sasl.jaas.config"))


@dataclass(frozen=True)
class Secret:
    """A value that never prints: read from an environment variable or a file."""

    source: str  # "env:NAME" or "file:PATH"
    #: the spec table it was given in, for the error when it cannot be read
    where: str = field(default="source.kafka", compare=False)

    def __repr__(self) -> str:
        return f"Secret({self.source})"

    __str__ = __repr__

    def reveal(self) -> str:
        kind, _, ref = self.source.partition(":")
        if kind == "env":
            value = os.environ.get(ref)
            if value is None:
                raise SpecError(f"environment variable {ref} is not set", key=self.where)
            return value
        try:
            return Path(ref).expanduser().read_text().strip()
        except OSError as exc:
            raise SpecError(f"cannot read secret file {ref}: {exc.strerror}",
                            key=self.where) from None


def setting_value(v: Any, *, inline_ok: bool, where: str, floats: bool = False) -> str | Secret:
    """A setting's value as given in a spec table: text (a number or boolean as its text)
    or a :class:`Secret` reference; raises ValueError with the one-line reason."""
    if isinstance(v, dict):
        if set(v) == {"env"} and isinstance(v["env"], str):
            return Secret(f"env:{v['env']}", where)
        if set(v) == {"file"} and isinstance(v["file"], str):
            return Secret(f"file:{v['file']}", where)
        raise ValueError('a secret is { env = "NAME" } or { file = "PATH" }')
    if isinstance(v, (str, int, bool)) or (floats and isinstance(v, float)):
        if not inline_ok:
            raise ValueError('secrets may not be written inline; use { env = "NAME" } or '
                             '{ file = "PATH" }')
        return str(v).lower() if isinstance(v, bool) else str(v)
    raise ValueError(f"unsupported value {v!r}")


def avro_config(value_format: str, table: Any, base: Path
                ) -> tuple[tuple[tuple[int, str], ...], str | None]:
    """``[events.avro]``: the schemas' text by id (-1: bare values) and the registry URL.

    ``schema = "x.avsc"``: values are bare Avro, of that one writer schema;
    ``schemas = { 1 = "v1.avsc", 2 = "v2.avsc" }``: values in Confluent's wire format (a 0
    byte, the schema id, the Avro body), files relative to the spec's folder;
    ``registry = "http://host:8081"``: the Confluent-compatible API of a Schema Registry
    that holds the schemas of the ids the files do not give (framed values).
    Raises ValueError with the one-line reason."""
    if table is None and value_format != "avro":
        return (), None
    if value_format != "avro":
        raise ValueError('give [events] format = "avro" with it')
    if not isinstance(table, dict):
        raise ValueError("must be a table: schema, schemas or registry")
    table = dict(table)
    registry = table.pop("registry", None)
    if registry is not None:
        if not isinstance(registry, str) or not re.match(r"^https?://[^/\s]+", registry):
            raise ValueError(f"registry must be an http:// or https:// URL, got {registry!r}")
        if "schema" in table:
            raise ValueError("a registry serves framed values (Confluent wire format): give "
                             "schemas = { ID = FILE } for local copies, not schema")
        registry = registry.rstrip("/")
        if not table:
            return (), registry
    return avro_schemas(table, base), registry


def avro_schemas(table: dict[str, Any], base: Path) -> tuple[tuple[int, str], ...]:
    """``[events.avro]``: ``schema = "x.avsc"`` (values are bare Avro, of that one writer
    schema) or ``schemas = { 1 = "v1.avsc", 2 = "v2.avsc" }`` (values in Confluent's wire
    format: a 0 byte, the schema id, the Avro body), files relative to the spec's folder;
    the schemas' text by id (-1: bare). Raises ValueError with the one-line reason."""
    import json

    from fastavro import parse_schema
    from fastavro.schema import SchemaParseException

    extra = set(table) - {"schema", "schemas"}
    if extra or len(table) != 1:
        raise ValueError('give schema = "FILE.avsc" (bare Avro values), schemas = { ID = '
                         '"FILE.avsc", ... } (Confluent wire format) or registry = "URL"')
    files = ({-1: table["schema"]} if "schema" in table else table["schemas"])
    if not isinstance(files, dict) or not files:
        raise ValueError("schemas is a table of schema id = file")
    out = []
    for key, name in files.items():
        try:
            sid = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"schema id {key!r} is not a number") from None
        if "schemas" in table and not 0 <= sid < 1 << 31:
            raise ValueError(f"schema id {sid} is out of range")
        path = Path(str(name)).expanduser()
        path = path if path.is_absolute() else base / path
        try:
            text = path.read_text()
            parse_schema(json.loads(text))
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, SchemaParseException, TypeError, KeyError) as exc:
            raise ValueError(f"{path} is not an Avro schema: {exc}") from None
        out.append((sid, text))
    return tuple(sorted(out))
