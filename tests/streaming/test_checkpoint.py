"""Checkpoint binding: changed spec refused, damaged metadata loud, one job per checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from streaming.engine.checkpoint import CheckpointLock, batch_meta, open_checkpoint
from streaming.errors import CheckpointError
from streaming.spec.model import default_spec_path, load_spec


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


@pytest.mark.parametrize("content", ["", "{not json", json.dumps({"checkpoint_id": "x"})])
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
