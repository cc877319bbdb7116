"""Checkpoint binding: changed spec refused, damaged metadata loud, one job per checkpoint.

Also a backfill (no JVM: real Delta tables, the real CLI in this process) on a
checkpoint whose spec then changes, or that an earlier version made.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from streaming.engine.checkpoint import CheckpointLock, batch_meta, open_checkpoint
from streaming.errors import CheckpointError
from streaming.spec.model import FieldType, default_spec_path, load_spec

#: ``streamsketch.json`` as the version before ``[events]`` and the isolation level were
#: bound wrote it for the bundled spec (verbatim but for the id)
PREVIOUS_VERSION_META = {"checkpoint_id": "5b0c4d1e9f8a4c2b8e7d6a5f4e3d2c1b", "fingerprint": {
    "time_field": "ts", "time_format": "iso8601",
    "source": {"kind": "kafka", "topic": "clickstream", "path": None},
    "windows": [
        {"name": "minutely", "size_s": 60, "slide_s": 60, "group_by": [],
         "metrics": ["count", "sum(amount)", "max(amount)"],
         "sketches": [
             {"name": "users", "kind": "hll", "field": "user_id",
              "params": {"precision": 14, "seed": 0}},
             {"name": "pages", "kind": "cms", "field": "page",
              "params": {"depth": 5, "seed": 0, "top_k": 10, "width": 2719}},
             {"name": "seen_users", "kind": "bloom", "field": "user_id",
              "params": {"capacity": 200000, "error_rate": 0.01, "seed": 0}}]},
        {"name": "hourly_by_country", "size_s": 3600, "slide_s": 900, "group_by": ["country"],
         "metrics": ["count", "sum(amount)", "avg(amount)", "min(amount)", "max(amount)"],
         "sketches": [
             {"name": "users", "kind": "hll", "field": "user_id",
              "params": {"precision": 12, "seed": 0}},
             {"name": "pages", "kind": "cms", "field": "page",
              "params": {"depth": 5, "seed": 0, "top_k": 10, "width": 1360}},
             {"name": "amounts", "kind": "quantiles", "field": "amount",
              "params": {"relative_accuracy": 0.01}}]}]}}


@pytest.fixture
def spec(tmp_path):
    s = load_spec(default_spec_path())
    return replace(s, sink=replace(s.sink, path=str(tmp_path / "delta"),
                                   checkpoint=str(tmp_path / "ck")))


def test_same_spec_reopens_with_same_id(spec):
    first = open_checkpoint(spec)
    assert open_checkpoint(spec).checkpoint_id == first.checkpoint_id


@pytest.mark.parametrize(("change", "expected"), [
    (lambda w: replace(w, group_by=("device",)), "group_by"),
    (lambda w: replace(w, size_s=7200), "size_s: 3600 -> 7200"),
    (lambda w: replace(w, sketches=(replace(w.sketches[0], params=(("precision", 10),
                                                                   ("seed", 0))),
                                    *w.sketches[1:])), "precision: 12 -> 10"),
])
def test_changed_spec_is_refused_saying_what_changed(spec, change, expected):
    open_checkpoint(spec)
    windows = (spec.windows[0], change(spec.windows[1]))
    changed = replace(spec, windows=windows)
    with pytest.raises(CheckpointError) as exc:
        open_checkpoint(changed)
    msg = str(exc.value)
    assert expected in msg and "start fresh" in msg and "\n" not in msg


def _events(spec, **changes):
    return replace(spec, events=replace(spec.events, **changes))


def _fields(spec, fields: dict[str, FieldType]):
    return _events(spec, fields=tuple(fields.items()))


@pytest.mark.parametrize(("change", "expected"), [
    (lambda s: _events(s, watermark_s=600.0), "events.watermark_s: 120.0 -> 600.0"),
    (lambda s: _events(s, late="update"), 'events.late: "quarantine" -> "update"'),
    (lambda s: _events(s, max_future_s=3600.0), "events.max_future_s: 300.0 -> 3600.0"),
    (lambda s: _events(s, idle_timeout_s=5.0), "events.idle_timeout_s: 30.0 -> 5.0"),
    (lambda s: _events(s, max_record_bytes=1000), "events.max_record_bytes: 1048576 -> 1000"),
    (lambda s: _fields(s, {**dict(s.events.fields), "amount": "string"}),
     'events.fields.amount: "double" -> "string"'),
    (lambda s: _fields(s, {**dict(s.events.fields), "referrer": "string"}),
     "events.fields.referrer added"),
    (lambda s: _fields(s, {k: v for k, v in s.events.fields if k != "device"}),
     "events.fields.device removed"),
    (lambda s: replace(s, source=replace(s.source, isolation_level="read_uncommitted")),
     'source.isolation_level: "read_committed" -> "read_uncommitted"'),
])
def test_a_change_of_what_counts_is_refused(spec, change, expected):
    # late, quarantined and aggregated records are decided by these: a checkpoint whose
    # batches were decided under other settings cannot go on under these
    first = open_checkpoint(spec)
    with pytest.raises(CheckpointError) as exc:
        open_checkpoint(change(spec))
    msg = str(exc.value)
    assert expected in msg and "start fresh" in msg and "\n" not in msg
    assert open_checkpoint(spec).checkpoint_id == first.checkpoint_id  # the binding is kept


@pytest.mark.parametrize("change", [
    lambda s: replace(s, sink=replace(s.sink, trigger_s=60.0)),
    lambda s: replace(s, source=replace(s.source, max_offsets_per_trigger=10)),
    lambda s: replace(s, source=replace(s.source, min_partitions=8)),
    lambda s: replace(s, source=replace(s.source, bootstrap_servers="kafka-2:9092")),
    lambda s: replace(s, source=replace(s.source, starting_offsets="latest")),
    lambda s: replace(s, source=replace(s.source, fail_on_data_loss=False)),
    lambda s: replace(s, source=replace(s.source, kafka_options=(("client.id", "x"),))),
    lambda s: replace(s, metrics=replace(s.metrics, port=9200)),
    # the tables carry the checkpoint's id and are checked against it when the job starts
    # (test_a_moved_sink_path_needs_the_tables_moved_with_it)
    lambda s: replace(s, sink=replace(s.sink, path=s.sink.path + "-moved")),
])
def test_settings_that_do_not_decide_what_counts_are_not_bound(spec, change):
    first = open_checkpoint(spec)
    assert open_checkpoint(change(spec)).checkpoint_id == first.checkpoint_id


def _previous_version_checkpoint(spec) -> Path:
    meta = Path(spec.sink.checkpoint) / "streamsketch.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps(PREVIOUS_VERSION_META, indent=1))
    return meta


def test_a_checkpoint_of_the_previous_version_is_taken_and_its_settings_recorded(spec, capsys):
    meta = _previous_version_checkpoint(spec)
    info = open_checkpoint(spec)
    assert info.checkpoint_id == PREVIOUS_VERSION_META["checkpoint_id"]
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and "source.isolation_level, events" in note, note
    stored = json.loads(meta.read_text())
    assert stored["fingerprint"]["events"]["watermark_s"] == 120.0
    assert stored["fingerprint"]["events"]["fields"]["amount"] == "double"
    assert stored["fingerprint"]["source"]["isolation_level"] == "read_committed"
    assert set(stored["recorded_later"]) == {"source.isolation_level", "events"}
    # recorded once; from now on a change is refused like any other
    assert open_checkpoint(spec).checkpoint_id == info.checkpoint_id
    assert capsys.readouterr().err == ""
    with pytest.raises(CheckpointError, match="events.watermark_s: 120.0 -> 600.0"):
        open_checkpoint(_events(spec, watermark_s=600.0))


def test_a_previous_version_checkpoint_with_another_change_is_refused_untouched(spec):
    meta = _previous_version_checkpoint(spec)
    before = meta.read_bytes()
    changed = replace(spec, windows=(replace(spec.windows[0], size_s=120), spec.windows[1]))
    with pytest.raises(CheckpointError, match="size_s: 60 -> 120"):
        open_checkpoint(changed)
    (meta.parent / "query").mkdir()
    (meta.parent / "query" / "metadata").write_text("")
    with pytest.raises(CheckpointError, match="damaged"):
        open_checkpoint(spec)
    assert meta.read_bytes() == before


def test_the_metrics_label_of_the_bundled_spec_is_the_previous_versions():
    # ``query`` label of every metric: the digest the previous version computed for the
    # bundled spec, so dashboards and alerts keep their series across the upgrade
    spec = load_spec(default_spec_path())
    assert spec.digest() == "33e54ccce9e1f145"
    assert replace(spec, windows=spec.windows[:1]).digest() != spec.digest()


@pytest.mark.parametrize("content", ["", "{not json", json.dumps({"checkpoint_id": "x"}),
                                     json.dumps({"checkpoint_id": "x", "fingerprint": [1]})])
def test_damaged_metadata_is_a_loud_failure(spec, content):
    info = open_checkpoint(spec)
    (info.root / "streamsketch.json").write_text(content)
    with pytest.raises(CheckpointError, match="damaged"):
        open_checkpoint(spec)


def test_spark_state_without_metadata_is_refused(spec, tmp_path):
    offsets = tmp_path / "ck" / "query" / "offsets"
    offsets.mkdir(parents=True)
    (offsets / "0").write_text("v1\n{}\n")
    with pytest.raises(CheckpointError, match="no streamsketch.json"):
        open_checkpoint(spec)


def test_second_job_on_one_checkpoint_is_refused(tmp_path):
    with CheckpointLock(tmp_path):
        with pytest.raises(CheckpointError, match="in use by pid"):
            CheckpointLock(tmp_path).acquire()
    CheckpointLock(tmp_path).acquire().release()  # free again once released


def test_batch_meta_reads_the_offset_log(tmp_path):
    (tmp_path / "offsets").mkdir()
    (tmp_path / "offsets" / "7").write_text(
        'v1\n{"batchWatermarkMs":1767228600000,"batchTimestampMs":1795404665389,"conf":{}}\n'
        '{"t":{"0":5}}\n')
    meta = batch_meta(tmp_path, 7)
    assert (meta.watermark_ms, meta.timestamp_ms) == (1767228600000, 1795404665389)
    (tmp_path / "offsets" / "8").write_text("")
    with pytest.raises(CheckpointError, match="missing or damaged"):
        batch_meta(tmp_path, 8)


# -- a backfill's checkpoint: the CLI, real Delta tables, no JVM --------------------------
START = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)


def _log(folder: Path, name: str, seed: int, start: dt.datetime, n: int = 400) -> Counter:
    """A log of ``n`` in-order events (2 a second) in ``folder``; their count per minute."""
    from streaming.kafka.generator import GeneratorConfig, generate

    records = list(generate(GeneratorConfig(seed=seed, rate=2.0, start_time=start, users=50,
                                            pages=20), n))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"".join(r.value + b"\n" for r in records))
    return Counter(dt.datetime.fromisoformat(r.event["ts"]).replace(second=0, microsecond=0)
                   for r in records)


def _files_spec(root: Path, *, delta: str = "delta", swaps: dict[str, str] | None = None) -> Path:
    text = default_spec_path().read_text()
    for old, new in {'topic = "clickstream"': f'kind = "files"\npath = "{root / "logs"}"',
                     "max_offsets_per_trigger = 200000": "max_offsets_per_trigger = 100",
                     'path = "./data/delta"': f'path = "{root / delta}"',
                     'checkpoint = "./data/checkpoints"': f'checkpoint = "{root / "ck"}"',
                     'host = "127.0.0.1"\nport = 9108': "enabled = false",
                     **(swaps or {})}.items():
        assert old in text, old
        text = text.replace(old, new)
    path = root / f"spec-{len(list(root.glob('spec-*.toml')))}.toml"
    path.write_text(text)
    return path


def _run(spec_file: Path, capsys) -> tuple[int, str]:
    from streaming.cli.main import main

    capsys.readouterr()
    code = main(["run", "--spec", str(spec_file)])
    return code, capsys.readouterr().err


def _refused(spec_file: Path, capsys, needle: str) -> None:
    code, err = _run(spec_file, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("streamsketch: error: ") and needle in err and "start fresh" in err, err


def _minutes(delta: Path) -> Counter:
    from streaming.engine.tables import read_table

    rows = read_table(str(delta / "aggregates"), "window_name = 'minutely'").to_pylist()
    return Counter({r["window_start"]: r["count"] for r in rows})


def test_a_backfill_checkpoint_refuses_spec_changes_and_takes_a_previous_versions(tmp_path,
                                                                                   capsys):
    first = _log(tmp_path / "logs", "a.jsonl", seed=1, start=START)
    spec_file = _files_spec(tmp_path)
    assert _run(spec_file, capsys)[0] == 0
    assert _minutes(tmp_path / "delta") == first
    _refused(_files_spec(tmp_path, swaps={'watermark = "2 minutes"': 'watermark = "10 minutes"'}),
             capsys, "events.watermark_s: 120.0 -> 600.0")
    # a field no window uses: every declared field is type-checked, so it decides what counts
    _refused(_files_spec(tmp_path, swaps={'device = "string"': 'device = "long"'}), capsys,
             'events.fields.device: "string" -> "long"')
    assert _minutes(tmp_path / "delta") == first
    # the same checkpoint as the previous version left it: without the keys added since
    meta_path = tmp_path / "ck" / "streamsketch.json"
    meta = json.loads(meta_path.read_text())
    del meta["fingerprint"]["events"], meta["fingerprint"]["source"]["isolation_level"]
    meta_path.write_text(json.dumps(meta))
    second = _log(tmp_path / "logs", "b.jsonl", seed=2, start=START + dt.timedelta(minutes=10))
    code, err = _run(spec_file, capsys)
    assert code == 0 and "did not record source.isolation_level, events" in err, err
    assert _minutes(tmp_path / "delta") == first + second  # each event counted once
    _refused(_files_spec(tmp_path, swaps={'watermark = "2 minutes"': 'watermark = "10 minutes"'}),
             capsys, "events.watermark_s: 120.0 -> 600.0")


def test_a_moved_sink_path_needs_the_tables_moved_with_it(tmp_path, capsys):
    first = _log(tmp_path / "logs", "a.jsonl", seed=1, start=START)
    assert _run(_files_spec(tmp_path), capsys)[0] == 0
    moved = _files_spec(tmp_path, delta="moved")
    # the checkpoint has consumed the first log: new, empty tables would lose it
    _refused(moved, capsys, "no aggregates, sketches, quarantine table")
    assert not (tmp_path / "moved").exists()
    # the tables moved along: they carry this checkpoint's id, and the job goes on exactly
    shutil.move(tmp_path / "delta", tmp_path / "moved")
    second = _log(tmp_path / "logs", "b.jsonl", seed=2, start=START + dt.timedelta(minutes=10))
    assert _run(moved, capsys)[0] == 0
    assert _minutes(tmp_path / "moved") == first + second
