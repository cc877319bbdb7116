"""Backfill: the pipeline over log files gives the tables a run over Kafka gives.

One generated log (out-of-order, late and malformed events) is replayed into a
one-partition topic and run with ``--available-now``, and backfilled straight
from the file with as many records per batch as the topic's
``max_offsets_per_trigger``: the same batches, the same late decisions, so the
aggregates and sketch bytes must be identical, and the quarantine must hold the
same values for the same reasons (only the provenance differs: a topic offset
against a file line).
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

N_EVENTS = 3_000
PER_BATCH = 600


def _spec(root: Path, topic: str = "unused", bootstrap: str = "127.0.0.1:1"):
    from streaming.spec.model import default_spec_path, load_spec

    spec = load_spec(default_spec_path())
    return replace(spec,
                   source=replace(spec.source, topic=topic, bootstrap_servers=bootstrap,
                                  max_offsets_per_trigger=PER_BATCH),
                   sink=replace(spec.sink, path=str(root / "delta"),
                                checkpoint=str(root / "checkpoints")))


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> tuple[Path, list[bytes]]:
    from streaming.kafka.generator import GeneratorConfig, generate

    config = GeneratorConfig(seed=23, rate=15.0,
                             start_time=dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC),
                             users=2_000, pages=300, out_of_order=0.1, late=0.03,
                             malformed=0.04)
    lines = [r.value for r in generate(config, N_EVENTS) if r.value]  # no empty lines
    path = tmp_path_factory.mktemp("log") / "events.jsonl"
    path.write_bytes(b"".join(v + b"\n" for v in lines))
    return path, lines


@pytest.fixture(scope="module")
def backfilled(spark, log, tmp_path_factory):
    from streaming.logs.backfill import backfill, backfill_spec
    from streaming.query.digest import digest, table_rows

    path, _ = log
    spec = backfill_spec(_spec(tmp_path_factory.mktemp("backfill")), [path])
    stats = backfill(spark, spec, [path], records_per_batch=PER_BATCH)
    return {"spec": spec, "stats": stats, "digest": digest(spark, spec),
            "rows": table_rows(spark, spec)}


def _quarantine_content(rows: dict) -> Counter:
    # digest columns: topic, partition, offset, reason_code, reason, key, value
    return Counter((r[3], r[4], r[6]) for r in rows["quarantine"])


def test_backfill_reads_every_line_and_accounts_for_each(backfilled, log):
    _, lines = log
    stats = backfilled["stats"]
    assert stats.records == len(lines)
    assert stats.batches == -(-len(lines) // PER_BATCH)
    assert stats.valid + sum(stats.quarantined.values()) == len(lines)
    assert stats.quarantined.get("late", 0) > 0 and stats.quarantined.get("invalid_json", 0) > 0
    rows = backfilled["rows"]["quarantine"]
    assert len(rows) == sum(stats.quarantined.values())
    # provenance: the file's name, its position, the line of the record
    for topic, partition, offset, *_rest, value in rows:
        assert topic == "events.jsonl" and partition == 0
        assert value == hashlib.sha256(lines[offset - 1]).hexdigest()


def test_backfill_equals_a_run_over_kafka(kafka, spark, log, backfilled, topic_name,
                                          tmp_path):
    from streaming.engine.pipeline import Pipeline
    from streaming.logs.reader import ReadOptions
    from streaming.logs.replay import ReplayConfig, replay
    from streaming.query.digest import digest, table_rows

    path, lines = log
    stats = replay([path], ReplayConfig(topic=topic_name, bootstrap_servers=kafka.bootstrap_servers,
                                        read=ReadOptions(key_field="user_id"), partitions=1,
                                        state_path=tmp_path / "replay-state.json"))
    assert stats.records == len(lines)
    spec = _spec(tmp_path, topic_name, kafka.bootstrap_servers)
    Pipeline(spark, spec).run(available_now=True, timeout=600)
    via_kafka = digest(spark, spec)
    for table in ("aggregates", "sketches"):
        assert via_kafka["tables"][table] == backfilled["digest"]["tables"][table], table
    assert _quarantine_content(table_rows(spark, spec)) == \
        _quarantine_content(backfilled["rows"])


def test_a_second_backfill_on_the_same_checkpoint_changes_nothing(spark, log, backfilled):
    from streaming.logs.backfill import backfill
    from streaming.query.digest import digest

    path, _ = log
    stats = backfill(spark, backfilled["spec"], [path], records_per_batch=PER_BATCH)
    assert stats.batches == 0 and stats.resumed_batches == backfilled["stats"].batches
    assert digest(spark, backfilled["spec"]) == backfilled["digest"]


def _spec_file(root: Path) -> Path:
    from streaming.spec.model import default_spec_path

    text = default_spec_path().read_text()
    text = text.replace("max_offsets_per_trigger = 200000",
                        f"max_offsets_per_trigger = {PER_BATCH}")
    text = text.replace('path = "./data/delta"', f'path = "{root / "delta"}"')
    text = text.replace('checkpoint = "./data/checkpoints"', f'checkpoint = "{root / "ck"}"')
    assert str(root / "ck") in text and f"= {PER_BATCH}" in text
    out = root / "spec.toml"
    out.write_text(text)
    return out


def _backfill_cli(spec_file: Path, log: Path, crash_at: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "STREAMSKETCH_CRASH_AT"}
    if crash_at:
        env["STREAMSKETCH_CRASH_AT"] = crash_at
    proc = subprocess.Popen([sys.executable, "-m", "streaming.cli", "replay", str(log),
                             "--backfill", "--spec", str(spec_file), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    if proc.returncode not in (0, -signal.SIGKILL):
        pytest.fail(f"backfill exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    return proc.returncode


def test_a_backfill_killed_mid_batch_resumes_to_the_same_tables(spark, log, backfilled,
                                                                tmp_path):
    from streaming.logs.backfill import backfill_spec
    from streaming.query.digest import digest
    from streaming.spec.model import load_spec

    path, _ = log
    spec_file = _spec_file(tmp_path)
    assert _backfill_cli(spec_file, path, "after_aggregates@2") == -signal.SIGKILL
    assert _backfill_cli(spec_file, path, None) == 0
    spec = backfill_spec(load_spec(spec_file), [path])
    assert digest(spark, spec) == backfilled["digest"]


def test_bad_lines_and_a_cut_gzip_are_quarantined_at_their_lines(spark, tmp_path):
    from streaming.logs.backfill import backfill, backfill_spec
    from streaming.query.digest import table_rows

    base = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=3)

    def event(i: int, **extra) -> bytes:
        e = {"event_id": f"e{i}", "ts": (base + dt.timedelta(seconds=i)).isoformat(),
             "user_id": f"u{i % 7}", "page": f"/p/{i % 5}", "action": "view",
             "amount": None, "country": "DE", "device": "web", "referrer": "direct"}
        e.update(extra)
        return json.dumps({k: v for k, v in e.items() if v is not ...}).encode()

    lines = [event(1), event(2), b"{not json", event(4), event(5, ts=...), event(6)]
    whole = gzip.compress(b"\n".join(lines) + b"\n" + b"\n".join(event(i) for i in
                                                                range(7, 4000)) + b"\n")
    log = tmp_path / "cut.jsonl.gz"
    log.write_bytes(whole[: len(whole) // 2])
    spec = backfill_spec(_spec(tmp_path), [log])
    stats = backfill(spark, spec, [log], records_per_batch=1_000)
    assert stats.reader_bad["cut.jsonl.gz"]["truncated"]["count"] == 1
    q = {(r[2], r[3]) for r in table_rows(spark, spec)["quarantine"]}
    assert (3, "invalid_json") in q and (5, "missing_time") in q
    cut = [offset for offset, code in q if code == "truncated"]
    assert len(cut) == 1 and cut[0] > 6
    assert stats.valid == cut[0] - 1 - 2  # every line before the cut but the two bad ones
    assert stats.records == stats.valid + 3


def test_run_of_a_files_spec_is_the_same_backfill(spark, log, backfilled, tmp_path, capsys):
    import argparse

    from streaming.cli.backfill import run_files_spec
    from streaming.query.digest import digest
    from streaming.spec.model import load_spec

    path, lines = log
    text = _spec_file(tmp_path).read_text().replace(
        '[source]\n', f'[source]\nkind = "files"\npath = "{path.parent}"\n', 1)
    spec_file = tmp_path / "files.toml"
    spec_file.write_text(text)
    spec = load_spec(spec_file)
    assert spec.source.kind == "files"
    args = argparse.Namespace(spec=spec_file, master="local[2]", ui=False)
    assert run_files_spec(args, lambda _msg: None) == 0
    assert f"{len(lines):,} records" in capsys.readouterr().out
    assert digest(spark, spec) == backfilled["digest"]


def test_under_late_update_backfill_and_kafka_agree_and_absorb_the_late_rows(
        kafka, spark, log, topic_name, tmp_path):
    from streaming.engine.pipeline import Pipeline
    from streaming.engine.tables import read_table
    from streaming.logs.backfill import backfill, backfill_spec
    from streaming.logs.reader import ReadOptions
    from streaming.logs.replay import ReplayConfig, replay
    from streaming.query.digest import digest, table_rows

    def update(spec):
        return replace(spec, events=replace(spec.events, late="update"))

    path, lines = log
    by_log = update(backfill_spec(_spec(tmp_path / "backfill"), [path]))
    stats = backfill(spark, by_log, [path], records_per_batch=PER_BATCH)
    assert "late" not in stats.quarantined
    replay([path], ReplayConfig(topic=topic_name, bootstrap_servers=kafka.bootstrap_servers,
                                read=ReadOptions(key_field="user_id"), partitions=1,
                                state_path=tmp_path / "replay-state.json"))
    by_kafka = update(_spec(tmp_path / "kafka", topic_name, kafka.bootstrap_servers))
    Pipeline(spark, by_kafka).run(available_now=True, timeout=600)
    a, b = digest(spark, by_log), digest(spark, by_kafka)
    for table in ("aggregates", "sketches"):
        assert a["tables"][table] == b["tables"][table], table
    assert _quarantine_content(table_rows(spark, by_log)) == \
        _quarantine_content(table_rows(spark, by_kafka))
    # the generator's late records were folded in, each counted once
    absorbed = read_table(f"{by_kafka.sink.path}/aggregates", "window_name = 'minutely'")
    assert sum(absorbed.column("late_rows").to_pylist()) > 0
    assert sum(absorbed.column("count").to_pylist()) == stats.valid


def test_master_is_accepted_and_said_to_be_ignored(tmp_path):
    """A backfill runs in this process without Spark: ``--master`` (which its --help once
    offered) is accepted, and one line says it is ignored."""
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"ts": f"2026-11-23T10:00:0{i}Z", "user_id": f"u{i}",
                                       "page": "/p", "action": "view"}) + "\n"
                           for i in range(3)))
    proc = subprocess.run([sys.executable, "-m", "streaming.cli", "replay", str(log),
                           "--backfill", "--spec", str(_spec_file(tmp_path)), "--master",
                           "spark://nowhere:7077", "--json"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--master spark://nowhere:7077 is ignored" in proc.stderr
    assert json.loads(proc.stdout)["records"] == 3
