"""Exactly once across a real SIGKILL of the driver (Python + JVM), at chosen points.

A clean run gives the reference tables. Each crash case runs the CLI in its own
process group with ``STREAMSKETCH_CRASH_AT=<point>@<batch>``: the driver kills
its whole group with SIGKILL at that point of that batch (between offsets and
commit, between the quarantine and aggregates writes, between the two tables'
writes, ...). A restart from the checkpoint must then give tables whose digest
equals the clean run's: no event lost, none counted twice, sketches
byte-identical.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streaming.spec.model import default_spec_path

pytestmark = pytest.mark.integration

N_EVENTS = 3_000
PER_TRIGGER = 600


def _spec_text(topic: str, bootstrap: str, root: Path) -> str:
    text = default_spec_path().read_text()
    text = text.replace('topic = "clickstream"', f'topic = "{topic}"')
    text = text.replace('bootstrap_servers = "127.0.0.1:9092"',
                        f'bootstrap_servers = "{bootstrap}"')
    text = text.replace("max_offsets_per_trigger = 200000",
                        f"max_offsets_per_trigger = {PER_TRIGGER}")
    text = text.replace('path = "./data/delta"', f'path = "{root / "delta"}"')
    text = text.replace('checkpoint = "./data/checkpoints"', f'checkpoint = "{root / "ck"}"')
    return text.replace('host = "127.0.0.1"\nport = 9108', "enabled = false")


def _run_cli(spec_file: Path, crash_at: str | None, timeout: float = 600) -> int:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    if crash_at:
        env["STREAMSKETCH_CRASH_AT"] = crash_at
    proc = subprocess.Popen([sys.executable, "-m", "streaming.cli", "run", "--spec",
                             str(spec_file), "--available-now"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    if proc.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"run exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    return proc.returncode


@pytest.fixture(scope="module")
def source(kafka, spark, tmp_path_factory):
    """A produced topic and the digest of a clean, crash-free run over it."""
    from streaming.engine.pipeline import Pipeline
    from streaming.kafka.generator import GeneratorConfig
    from streaming.kafka.producer import produce
    from streaming.query.digest import digest
    from streaming.spec.model import load_spec

    topic = f"crash-{os.getpid()}"
    config = GeneratorConfig(seed=11, rate=15.0,
                             start_time=dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC),
                             users=2_000, pages=300, out_of_order=0.1, late=0.03,
                             malformed=0.03)
    produce(kafka.bootstrap_servers, topic, config, count=N_EVENTS, partitions=2)
    root = tmp_path_factory.mktemp("clean")
    spec_file = root / "spec.toml"
    spec_file.write_text(_spec_text(topic, kafka.bootstrap_servers, root))
    spec = load_spec(spec_file)
    Pipeline(spark, spec).run(available_now=True, timeout=600)
    reference = digest(spark, spec)
    assert reference["tables"]["aggregates"]["rows"] > 0
    assert reference["tables"]["quarantine"]["rows"] > 0
    return {"topic": topic, "bootstrap": kafka.bootstrap_servers, "digest": reference}


def _crash_and_resume(spark, source, tmp_path, crash_at: str) -> None:
    from streaming.query.digest import digest
    from streaming.spec.model import load_spec

    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(_spec_text(source["topic"], source["bootstrap"], tmp_path))
    assert _run_cli(spec_file, crash_at) == -signal.SIGKILL, "the crash point was not reached"
    assert _run_cli(spec_file, None) == 0
    spec = load_spec(spec_file)
    assert digest(spark, spec) == source["digest"]


# written@1: the merge stage of batch 1 wrote its files, none is committed; the restart
# runs the batch again, and the files of the first run are never read
@pytest.mark.parametrize("crash_at", ["after_aggregates@1", "after_quarantine@2", "written@1"])
def test_sigkill_between_writes_then_restart_equals_clean_run(spark, source, tmp_path,
                                                              crash_at):
    _crash_and_resume(spark, source, tmp_path, crash_at)


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", ["batch_start@0", "batch_start@3", "after_sketches@2",
                                      "after_sketches@0", "after_aggregates@4",
                                      "written@2", "written@4", "in_sketches@3"])
def test_sigkill_at_every_point_then_restart_equals_clean_run(spark, source, tmp_path,
                                                              crash_at):
    _crash_and_resume(spark, source, tmp_path, crash_at)


def test_a_commit_that_fails_stops_the_live_query_and_the_restart_redoes_the_batch(
        spark, source, tmp_path):
    """The one batch (all the topic in one trigger) fails its commit to ``aggregates``
    after ``quarantine`` committed: the live run must stop by itself, exit 1 in one line,
    and the restart runs the batch again, leaving out the table that holds it."""
    from streaming.query.digest import digest
    from streaming.spec.model import load_spec

    def one_batch_spec(root: Path) -> Path:
        root.mkdir(exist_ok=True)
        text = _spec_text(source["topic"], source["bootstrap"], root)
        text = text.replace(f"max_offsets_per_trigger = {PER_TRIGGER}",
                            f"max_offsets_per_trigger = {N_EVENTS * 10}")
        path = root / "spec.toml"
        path.write_text(text.replace('trigger = "5 seconds"', 'trigger = "1 second"'))
        return path

    # the reference: the same one-batch spec, run clean (batching decides what is late)
    clean = one_batch_spec(tmp_path / "clean")
    assert _run_cli(clean, None) == 0
    spec_file = one_batch_spec(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(STREAMSKETCH_FAIL_AT="in_aggregates@0",
               STREAMSKETCH_FAIL_MARKER=str(tmp_path / "failed"))
    proc = subprocess.Popen([sys.executable, "-m", "streaming.cli", "run", "--spec",
                             str(spec_file)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=300)  # a live run: it must end by itself
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert (tmp_path / "failed").exists(), "the failure point was not reached"
    assert proc.returncode == 1, err.decode(errors="replace")[-2000:]
    last = err.decode(errors="replace").strip().splitlines()[-1]
    assert last.startswith("streamsketch: the query failed: ")
    assert "injected failure at in_aggregates@0" in last
    assert _run_cli(spec_file, None) == 0
    assert digest(spark, load_spec(spec_file)) == digest(spark, load_spec(clean))


def test_replace_keeps_default_spec_in_sync():
    # the templating above must have hit every key it means to change
    text = _spec_text("t", "127.0.0.1:1", Path("/x"))
    assert 'topic = "t"' in text and f"max_offsets_per_trigger = {PER_TRIGGER}" in text
    assert 'path = "/x/delta"' in text and 'checkpoint = "/x/ck"' in text
    assert "enabled = false" in text
