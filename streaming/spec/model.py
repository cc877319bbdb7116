"""The pipeline spec: one TOML file that says what to compute.

Parsed and validated once, up front, into frozen dataclasses; nothing else in
the service reads the raw file. Every mistake is a :class:`SpecError` naming the
key and, where it can be found, the line. docs/spec.md documents every key.

Example:
    >>> spec = parse_spec('''
    ... [source]
    ... topic = "clicks"
    ... [events]
    ... time_field = "ts"
    ... watermark = "10 minutes"
    ... [events.fields]
    ... page = "string"
    ... [[windows]]
    ... name = "minutely"
    ... size = "1 minute"
    ... metrics = ["count"]
    ... [sink]
    ... path = "out/delta"
    ... checkpoint = "out/checkpoints"
    ... ''')
    >>> spec.windows[0].size_s, spec.events.watermark_s
    (60, 600.0)
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from streaming.errors import SpecError
from streaming.spec.locate import KeyLocator
from streaming.spec.values import (
    Secret,
    avro_config,
    field_paths,
    flat_settings,
    not_local,
    secret_like,
    setting_value,
    spark_setting_refused,
)
from streaming.spec.windows import NAME, WindowChecks, WindowSpec, column_part

FieldType = Literal["string", "long", "int", "double", "boolean", "list<string>", "list<long>",
                    "list<int>", "list<double>"]
#: a list field (a JSON array) feeds sketches one element at a time
LIST_TYPES: tuple[str, ...] = ("list<string>", "list<long>", "list<int>", "list<double>")
FIELD_TYPES: tuple[str, ...] = ("string", "long", "int", "double", "boolean", *LIST_TYPES)
TIME_FORMATS = ("iso8601", "epoch_ms", "epoch_s")
#: keys of :meth:`Spec.state_fingerprint` that checkpoints made by earlier versions lack
#: (see :func:`streaming.engine.checkpoint.open_checkpoint`)
FINGERPRINT_ADDED: tuple[tuple[str, ...], ...] = (("source", "isolation_level"), ("events",))

_UNITS = {
    "ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``"2 hours"``, ``"15 minutes"``, ``"500 ms"``, ``"1h"``.

    >>> parse_duration("2 hours"), parse_duration("90s"), parse_duration("500 ms")
    (7200.0, 90.0, 0.5)
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a duration like \"5 minutes\", got {text!r}")
    m = _DURATION.match(text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a duration: {text!r} (use e.g. \"30 seconds\", \"2 hours\")")
    return float(m.group(1)) * _UNITS[m.group(2).lower()]


# -- the model ---------------------------------------------------------------
@dataclass(frozen=True)
class SourceSpec:
    kind: Literal["kafka", "files"] = "kafka"
    topic: str | None = None
    bootstrap_servers: str = "localhost:9092"
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = None
    fail_on_data_loss: bool = True
    kafka_options: tuple[tuple[str, str | Secret], ...] = ()
    path: str | None = None
    #: log format of a files source; None: from each file's name
    format: Literal["jsonl", "jsonl.gz", "csv", "parquet"] | None = None
    #: Spark's Kafka ``minPartitions``: split big topic partitions into more tasks
    min_partitions: int | None = None
    #: read only committed transactions (``read_committed``) or everything
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"


@dataclass(frozen=True)
class EventsSpec:
    time_field: str
    fields: tuple[tuple[str, str], ...]
    time_format: Literal["iso8601", "epoch_ms", "epoch_s"] = "iso8601"
    watermark_s: float = 0.0
    max_future_s: float = 300.0
    max_record_bytes: int = 1 << 20
    #: an input partition with no new records for this long stops holding the
    #: watermark back
    idle_timeout_s: float = 30.0
    #: rows later than the watermark: "quarantine" them, or "update" their closed windows
    late: Literal["quarantine", "update"] = "quarantine"
    #: how a record's value is encoded: JSON text, or Avro (``[events.avro]``)
    format: Literal["json", "avro"] = "json"
    #: Avro writer schemas (JSON text) by Confluent schema id; id -1: values without the
    #: Confluent header, all of the one schema
    avro_schemas: tuple[tuple[int, str], ...] = ()
    #: a Schema Registry (Confluent's API) holding the schemas of other ids, or None
    avro_registry: str | None = None

    def field_type(self, name: str) -> str:
        return dict(self.fields)[name]


@dataclass(frozen=True)
class SinkSpec:
    path: str
    checkpoint: str
    trigger_s: float = 5.0


@dataclass(frozen=True)
class MetricsEndpointSpec:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9108


@dataclass(frozen=True)
class Spec:
    source: SourceSpec
    events: EventsSpec
    windows: tuple[WindowSpec, ...]
    sink: SinkSpec
    metrics: MetricsEndpointSpec = field(default_factory=MetricsEndpointSpec)
    origin: str | None = None
    #: ``[spark]``: Spark settings applied after streamsketch's own (not part of what a
    #: checkpoint depends on: executor sizes may change between runs)
    spark: tuple[tuple[str, str | Secret], ...] = ()

    def window(self, name: str) -> WindowSpec:
        for w in self.windows:
            if w.name == name:
                return w
        names = ", ".join(w.name for w in self.windows)
        raise SpecError(f"no window named {name!r} (windows: {names})", key="windows")

    def metric_columns(self) -> list[tuple[str, str]]:
        """(column, type) of every stored metric over all windows, in a stable order.

        ``count`` is always present. ``sum(f)`` is an exact decimal; ``avg(f)`` is kept
        as ``sum_f`` and ``n_f`` (count of non-null f) so it merges exactly, and
        exposed as ``avg_f``.
        """
        cols: dict[str, str] = {"count": "long"}
        for w in self.windows:
            for m in w.metrics:
                if m.func == "sum":
                    cols[m.column] = "decimal"
                elif m.func == "avg":
                    cols[f"sum_{column_part(m.field)}"] = "decimal"
                    cols[f"n_{column_part(m.field)}"] = "long"
                    cols[m.column] = "double"
                elif m.func in ("min", "max"):
                    cols[m.column] = "double"
        return list(cols.items())

    def state_fingerprint(self) -> dict[str, Any]:
        """What a checkpoint depends on: changing any of it invalidates stored state.

        Besides the windows, everything that decides which records count: the source,
        its isolation level and the whole of ``[events]`` (fields and their types, the
        watermark, the late policy, ``max_future``, ``idle_timeout``, ``max_record_bytes``).
        """
        ev = self.events
        return {
            "time_field": ev.time_field,
            "time_format": ev.time_format,
            "source": {"kind": self.source.kind, "topic": self.source.topic,
                       "path": self.source.path, "isolation_level": self.source.isolation_level},
            "events": {"fields": dict(ev.fields), "watermark_s": ev.watermark_s, "late": ev.late,
                       "max_future_s": ev.max_future_s, "idle_timeout_s": ev.idle_timeout_s,
                       "max_record_bytes": ev.max_record_bytes,
                       # JSON specs' fingerprints stay what earlier versions made them
                       **({"format": ev.format, "avro_schemas": dict(ev.avro_schemas)}
                          if ev.format != "json" else {}),
                       **({"avro_registry": ev.avro_registry} if ev.avro_registry else {})},
            "windows": [
                {"name": w.name, "size_s": w.size_s, "slide_s": w.slide_s,
                 "group_by": list(w.group_by), "metrics": [m.text for m in w.metrics],
                 "sketches": [{"name": s.name, "kind": s.kind, "field": s.field,
                               "params": {k: v for k, v in s.params}} for s in w.sketches]}
                for w in self.windows],
        }

    def digest(self) -> str:
        """A short id of the spec: the query's name, so the ``query`` label of its metrics.

        Taken without the keys in :data:`FINGERPRINT_ADDED`, so the label stays what
        earlier versions made it.
        """
        fingerprint = self.state_fingerprint()
        for *parents, key in FINGERPRINT_ADDED:
            table = fingerprint
            for name in parents:
                table = table[name]
            del table[key]
        blob = json.dumps(fingerprint, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- validation ---------------------------------------------------------------
class _Validator(WindowChecks):
    def __init__(self, raw: dict[str, Any], text: str, origin: str | None) -> None:
        self.raw = raw
        self.loc = KeyLocator(text)
        self.origin = origin

    def fail(self, key: str, message: str) -> SpecError:
        return SpecError(message, key=key, line=self.loc.line_of(key), path=self.origin)

    def table(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {type(value).__name__}")
        for k in value:
            if k not in allowed:
                hint = difflib.get_close_matches(k, allowed, n=1)
                extra = f"; did you mean {hint[0]!r}?" if hint else \
                    f"; allowed: {', '.join(allowed)}"
                raise self.fail(f"{key}.{k}" if key else k, f"unknown key{extra}")
        return value

    def get(self, tbl: dict[str, Any], key: str, path: str, kind: type | tuple[type, ...],
            default: Any = ..., *, check=None, what: str = "") -> Any:
        if key not in tbl:
            if default is ...:
                raise self.fail(path, "is required")
            return default
        value = tbl[key]
        if isinstance(value, bool) and kind in (int, float, (int, float)):
            raise self.fail(path, f"must be a number, got {value!r}")
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(
                k.__name__ for k in kind)
            raise self.fail(path, f"must be {what or names}, got {value!r}")
        if check is not None:
            problem = check(value)
            if problem:
                raise self.fail(path, problem)
        return value

    def duration(self, tbl: dict[str, Any], key: str, path: str, default: Any = ...,
                 *, positive: bool = True) -> float:
        value = self.get(tbl, key, path, (str, int, float), default,
                         what='a duration like "5 minutes"')
        if isinstance(value, (int, float)):
            raise self.fail(path, f'needs a unit, e.g. "{value} seconds"')
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise self.fail(path, str(exc)) from None
        if positive and seconds <= 0:
            raise self.fail(path, "must be greater than zero")
        return seconds

    # -- sections --------------------------------------------------------------
    def spec(self) -> Spec:
        top = self.table(self.raw, "", ("source", "events", "windows", "sink", "metrics",
                                        "spark"))
        for required in ("source", "events", "windows", "sink"):
            if required not in top:
                raise self.fail(required, "section is required")
        source = self.source(top["source"])
        events = self.events(top["events"])
        windows_raw = top["windows"]
        if not isinstance(windows_raw, list) or not windows_raw:
            raise self.fail("windows", "needs at least one [[windows]] table")
        windows = tuple(self.window(w, f"windows[{i}]", events) for i, w in enumerate(windows_raw))
        names = [w.name for w in windows]
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise self.fail(f"windows[{i}].name", f"duplicate window name {n!r}")
        sink = self.sink(top["sink"])
        metrics = self.metrics(top.get("metrics", {}))
        spark = self.spark(top.get("spark", {}))
        return Spec(source, events, windows, sink, metrics, self.origin, spark)

    def spark(self, raw: Any) -> tuple[tuple[str, str | Secret], ...]:
        if not isinstance(raw, dict):
            raise self.fail("spark", "must be a table of Spark settings")
        out = []
        for k, v in flat_settings(raw):
            key = k if k.startswith("spark.") else f"spark.{k}"
            why = spark_setting_refused(key)
            if why:
                raise self.fail(key, why)
            try:
                out.append((key, setting_value(v, inline_ok=not secret_like(key),
                                               where="spark", floats=True)))
            except ValueError as exc:
                raise self.fail(key, str(exc)) from None
        return tuple(out)

    def source(self, raw: Any) -> SourceSpec:
        t = self.table(raw, "source", ("kind", "topic", "bootstrap_servers", "starting_offsets",
                                       "max_offsets_per_trigger", "fail_on_data_loss", "kafka",
                                       "path", "format", "min_partitions", "isolation_level"))
        kind = self.get(t, "kind", "source.kind", str, "kafka",
                        check=lambda v: None if v in ("kafka", "files")
                        else 'must be "kafka" or "files"')
        topic = self.get(t, "topic", "source.topic", str, None,
                         check=lambda v: None if re.fullmatch(r"[A-Za-z0-9._\-]{1,249}", v)
                         else "is not a valid Kafka topic name")
        if kind == "kafka" and topic is None:
            raise self.fail("source.topic", "is required for a Kafka source")
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or self.get(
            t, "bootstrap_servers", "source.bootstrap_servers", str, "localhost:9092",
            check=lambda v: None if re.fullmatch(r"[^\s,]+:\d+(,[^\s,]+:\d+)*", v)
            else 'must be "host:port[,host:port...]"')
        starting = self.get(t, "starting_offsets", "source.starting_offsets", str, "earliest",
                            check=lambda v: None if v in ("earliest", "latest") or v.startswith("{")
                            else 'must be "earliest", "latest" or a JSON offsets object')
        mopt = self.get(t, "max_offsets_per_trigger", "source.max_offsets_per_trigger", int, None,
                        check=lambda v: None if v > 0 else "must be a positive integer")
        fodl = self.get(t, "fail_on_data_loss", "source.fail_on_data_loss", bool, True)
        min_parts = self.get(t, "min_partitions", "source.min_partitions", int, None,
                             check=lambda v: None if v > 0 else "must be a positive integer")
        isolation = self.get(t, "isolation_level", "source.isolation_level", str,
                             "read_committed",
                             check=lambda v: None if v in ("read_committed", "read_uncommitted")
                             else 'must be "read_committed" or "read_uncommitted"')
        options = []
        for k, v in self.get(t, "kafka", "source.kafka", dict, {}).items():
            key = f"source.kafka.{k}"
            if k == "isolation.level":
                raise self.fail(key, "set it as [source] isolation_level")
            secret = any(w in k.lower() for w in ("password", "secret", "sasl.jaas.config"))
            try:
                options.append((k, setting_value(v, inline_ok=not secret, where="source.kafka")))
            except ValueError as exc:
                raise self.fail(key, str(exc)) from None
        path = self.get(t, "path", "source.path", str, None, check=not_local)
        if kind == "files" and path is None:
            raise self.fail("source.path", "is required for a files source")
        fmt = self.get(t, "format", "source.format", str, None,
                       check=lambda v: None if v in ("jsonl", "jsonl.gz", "csv", "parquet")
                       else 'must be "jsonl", "jsonl.gz", "csv" or "parquet"')
        return SourceSpec(kind, topic, bootstrap, starting, mopt, fodl, tuple(options), path, fmt,
                          min_parts, isolation)

    def events(self, raw: Any) -> EventsSpec:
        t = self.table(raw, "events", ("time_field", "time_format", "watermark", "fields",
                                       "max_future", "max_record_bytes", "idle_timeout",
                                       "late", "format", "avro"))
        value_format = self.get(t, "format", "events.format", str, "json",
                                check=lambda v: None if v in ("json", "avro")
                                else 'must be "json" or "avro"')
        try:
            avro, registry = avro_config(value_format, t.get("avro"), Path(self.origin).parent
                                         if self.origin else Path.cwd())
        except ValueError as exc:
            raise self.fail("events.avro", str(exc)) from None
        time_field = self.get(t, "time_field", "events.time_field", str,
                              check=lambda v: None if v else "must not be empty")
        time_format = self.get(t, "time_format", "events.time_format", str, "iso8601",
                               check=lambda v: None if v in TIME_FORMATS
                               else f"must be one of {', '.join(TIME_FORMATS)}")
        watermark = self.duration(t, "watermark", "events.watermark", "0 seconds",
                                  positive=False)
        # default: the watermark delay, at least 5 minutes: further ahead of the batch
        # time than that is a clock gone wrong, not a late-arriving truth
        max_future = self.duration(t, "max_future", "events.max_future",
                                   f"{max(watermark, 300.0)} seconds")
        idle = self.duration(t, "idle_timeout", "events.idle_timeout", "30 seconds")
        late = self.get(t, "late", "events.late", str, "quarantine",
                        check=lambda v: None if v in ("quarantine", "update")
                        else 'must be "quarantine" or "update"')
        max_bytes = self.get(t, "max_record_bytes", "events.max_record_bytes", int, 1 << 20,
                             check=lambda v: None if v > 0 else "must be positive")
        fields_raw = self.get(t, "fields", "events.fields", dict)
        if not fields_raw:
            raise self.fail("events.fields", "declare at least one field")
        fields = []
        for name, typ in field_paths(fields_raw):
            key = f"events.fields.{name}"
            if not all(NAME.match(part) for part in name.split(".")):
                raise self.fail(key, "a field is a name or a path of names (letters, digits, "
                                "_) joined by dots, e.g. actor.login")
            if name.startswith("_"):
                raise self.fail(key, "field names starting with _ are reserved")
            if typ not in FIELD_TYPES:
                raise self.fail(key, f"unknown type {typ!r}; use one of {', '.join(FIELD_TYPES)}")
            fields.append((name, typ))
        if not all(NAME.match(part) for part in time_field.split(".")):
            raise self.fail("events.time_field", "a field is a name or a path of names "
                            "(letters, digits, _) joined by dots, e.g. payload.created_at")
        if time_field in dict(fields):
            raise self.fail(f"events.fields.{time_field}",
                            "the time field is parsed by time_format; do not declare it again")
        parts: dict[str, str] = {}
        for name, _ in fields:
            other = parts.setdefault(column_part(name), name)
            if other != name:
                raise self.fail(f"events.fields.{name}", f"{other} and {name} would share the "
                                f"column name {column_part(name)} (sum_..., avg_...)")
        paths = [*dict(fields), time_field]
        for a in paths:
            for b in paths:
                if b.startswith(a + "."):
                    raise self.fail(f"events.fields.{b}" if b != time_field
                                    else "events.time_field",
                                    f"{a} is declared as a value, and as an object holding {b}")
        return EventsSpec(time_field, tuple(fields), time_format, watermark, max_future, max_bytes,
                          idle, late, value_format, avro, registry)

    def sink(self, raw: Any) -> SinkSpec:
        t = self.table(raw, "sink", ("path", "checkpoint", "trigger"))
        path = self.get(t, "path", "sink.path", str,
                        check=lambda v: not_local(v) if v else "empty")
        ckpt = self.get(t, "checkpoint", "sink.checkpoint", str,
                        check=lambda v: not_local(v) if v else "empty")
        trigger = self.duration(t, "trigger", "sink.trigger", "5 seconds")
        return SinkSpec(path, ckpt, trigger)

    def metrics(self, raw: Any) -> MetricsEndpointSpec:
        t = self.table(raw, "metrics", ("enabled", "host", "port"))
        return MetricsEndpointSpec(
            self.get(t, "enabled", "metrics.enabled", bool, True),
            self.get(t, "host", "metrics.host", str, "127.0.0.1"),
            self.get(t, "port", "metrics.port", int, 9108,
                     check=lambda v: None if 0 <= v <= 65535 else "must be in 0..65535"))


def parse_spec(text: str, *, origin: str | None = None, base_dir: Path | None = None) -> Spec:
    """Validate spec text into a :class:`Spec`; relative sink/source paths resolve from base_dir."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise SpecError(f"not valid TOML: {exc}", line=int(m.group(1)) if m else None,
                        path=origin) from None
    spec = _Validator(raw, text, origin).spec()
    if base_dir is not None:
        spec = _resolve_paths(spec, base_dir)
    return spec


def _resolve_paths(spec: Spec, base: Path) -> Spec:
    from dataclasses import replace

    def res(p: str | None) -> str | None:
        if p is None:
            return None
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q))

    return replace(spec,
                   sink=replace(spec.sink, path=res(spec.sink.path),  # type: ignore[arg-type]
                                checkpoint=res(spec.sink.checkpoint)),  # type: ignore[arg-type]
                   source=replace(spec.source, path=res(spec.source.path)))


def load_spec(path: str | Path, *, relative_to: Literal["cwd", "spec"] = "cwd") -> Spec:
    """Read and validate a spec file. Relative paths in it resolve from the working directory."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SpecError("spec file not found", path=str(p)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read the spec: {exc}", path=str(p)) from None
    base = Path.cwd() if relative_to == "cwd" else p.parent
    return parse_spec(text, origin=str(p), base_dir=base)


def default_spec_path() -> Path:
    """The bundled spec for the bundled clickstream generator."""
    return Path(__file__).parents[1] / "specs" / "clickstream.toml"
