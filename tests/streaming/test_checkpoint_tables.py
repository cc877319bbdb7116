"""A checkpoint and its tables that disagree stop the job in one line; nothing is skipped.

Reproduced before the engine rewrite: a run over 20k events, the checkpoint's ``query/``
folder deleted, 20k more produced, a second run "succeeded" (exit 0) and the tables still
counted 20k: Delta skipped the batch's overwrite as already done. Each case below must
now exit 2 with one line naming the inconsistency and how to start fresh, and leave the
tables as they were; a backfill's journal is held to the same rule.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_faults_process import cli, write_spec

pytestmark = pytest.mark.integration


def _minute_total(spec_file: Path) -> int:
    from streaming.engine.tables import read_table
    from streaming.spec.model import load_spec

    spec = load_spec(spec_file)
    rows = read_table(f"{spec.sink.path}/aggregates", "window_name = 'minutely'")
    return sum(rows.column("count").to_pylist())


@pytest.fixture
def first_run(kafka, topic_name, tmp_path):
    from streaming.kafka.generator import GeneratorConfig
    from streaming.kafka.producer import produce

    config = GeneratorConfig(seed=3, rate=50.0)
    produce(kafka.bootstrap_servers, topic_name, config, count=2_000, partitions=2)
    spec_file = write_spec(tmp_path / "job", topic_name, kafka.bootstrap_servers)
    code, _, err = cli(["run", "--spec", str(spec_file), "--available-now"])
    assert code == 0, err[-2000:]
    total = _minute_total(spec_file)
    assert total == 2_000
    produce(kafka.bootstrap_servers, topic_name, GeneratorConfig(seed=4, rate=50.0),
            count=2_000, partitions=2)
    return spec_file, total


def _refused(spec_file: Path, pattern: str) -> None:
    code, _, err = cli(["run", "--spec", str(spec_file), "--available-now"])
    lines = [ln for ln in err.splitlines() if ln.startswith("streamsketch: error:")]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and pattern in lines[0], err[-2000:]
    assert "start fresh" in lines[0] or "delete" in lines[0]


def test_a_deleted_query_folder_is_refused(first_run):
    spec_file, total = first_run
    shutil.rmtree(spec_file.parent / "ck" / "query")
    _refused(spec_file, "but the checkpoint holds no batch")
    assert _minute_total(spec_file) == total


def test_a_deleted_table_is_refused(first_run):
    spec_file, total = first_run
    shutil.rmtree(spec_file.parent / "delta" / "sketches")
    _refused(spec_file, "no sketches table")
    assert _minute_total(spec_file) == total


def test_a_changed_sink_path_is_refused(first_run):
    spec_file, _ = first_run
    text = spec_file.read_text()
    spec_file.write_text(text.replace(str(spec_file.parent / "delta"),
                                      str(spec_file.parent / "elsewhere")))
    _refused(spec_file, "no aggregates, sketches, quarantine table")


def test_a_backfill_whose_journal_was_deleted_is_refused(tmp_path):
    from streaming.kafka.generator import GeneratorConfig, generate

    log = tmp_path / "events.jsonl"
    log.write_bytes(b"".join(r.value + b"\n" for r in generate(GeneratorConfig(seed=9), 3_000)
                             if r.value and b"\n" not in r.value))
    spec = tmp_path / "spec.toml"
    from streaming.spec.model import default_spec_path

    spec.write_text(default_spec_path().read_text())
    argv = ["replay", str(log), "--spec", str(spec), "--backfill", "--sink", str(tmp_path / "s"),
            "--quiet"]
    code, _, err = cli(argv)
    assert code == 0, err[-2000:]
    shutil.rmtree(tmp_path / "s" / "checkpoints" / "backfill")
    code, _, err = cli(argv)
    lines = [ln for ln in err.splitlines() if ln.startswith("streamsketch: error:")]
    assert code == 2 and len(lines) == 1 and "holds batch" in lines[0], err[-2000:]


def test_a_second_process_on_the_same_checkpoint_is_refused(kafka, topic_name, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from test_faults_process import REPO, _env

    from streaming.kafka.generator import GeneratorConfig
    from streaming.kafka.producer import produce

    produce(kafka.bootstrap_servers, topic_name, GeneratorConfig(seed=3, rate=50.0),
            count=500, partitions=2)
    spec_file = write_spec(tmp_path / "job", topic_name, kafka.bootstrap_servers)
    first = subprocess.Popen([sys.executable, "-m", "streaming.cli", "run", "--spec",
                              str(spec_file)], cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        lock = spec_file.parent / "ck" / ".lock"
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text()):
            assert first.poll() is None, first.communicate()[1][-2000:]
            time.sleep(0.2)
        code, _, err = cli(["run", "--spec", str(spec_file), "--available-now"])
        lines = [ln for ln in err.splitlines() if ln.startswith("streamsketch: error:")]
        assert code == 2 and len(lines) == 1 and "is in use by pid" in lines[0], err[-2000:]
        assert first.poll() is None, "the first process stopped"
    finally:
        os.killpg(first.pid, signal.SIGINT)
        try:
            first.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(first.pid, signal.SIGKILL)
            first.communicate()
