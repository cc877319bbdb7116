"""Tables behind their checkpoint: refused in one line, then ``recover`` and exact again.

Reproduced on the landed tree before this: 50k events run, the sink folder copied, 50k
more run, the copy put back, 50k more run: exit 0, and the tables held 100,000 of
150,000 events. Here each way a table falls behind (a file-level restore, Delta
RESTORE, a lost newest commit), through the CLI against a real broker: the next run
exits 2 with one line naming the table and both batches and changes nothing;
``streamsketch recover`` writes the missing batches again; the run after it counts
every produced event exactly once (the produced count is the truth), and the tables
equal a clean run's over the same topic. Where Kafka no longer holds the records,
``recover`` refuses in one line and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from test_faults_process import cli, counted_once, write_spec

pytestmark = pytest.mark.integration

START = dt.datetime(2026, 11, 23, 8, 0, tzinfo=dt.UTC)
STAGE = 600  # events per stage: 3 or 4 batches of at most 200


def _produce(kafka, topic: str, stage: int) -> None:
    from streaming.kafka.generator import GeneratorConfig
    from streaming.kafka.producer import produce

    config = GeneratorConfig(seed=40 + stage, rate=20.0, users=300, pages=50,
                             start_time=START + dt.timedelta(seconds=40 * stage),
                             out_of_order=0.1, max_disorder=20.0, malformed=0.02)
    produce(kafka.bootstrap_servers, topic, config, count=STAGE, partitions=2)


def _run(spec_file: Path) -> tuple[int, str]:
    code, out, err = cli(["run", "--spec", str(spec_file), "--available-now"])
    return code, err


def _ok(spec_file: Path) -> None:
    code, err = _run(spec_file)
    assert code == 0, err[-3000:]


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("streamsketch: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def _refused(spec_file: Path, *patterns: str) -> None:
    code, err = _run(spec_file)
    line = _error_line(err)
    assert code == 2, err[-3000:]
    for p in patterns:
        assert p in line, line


def _recover(spec_file: Path) -> str:
    code, out, err = cli(["recover", "--spec", str(spec_file), "--master", "local[2]"])
    assert code == 0, err[-3000:]
    return out


def _clean_digest(spark, kafka, topic: str, root: Path) -> dict:
    from streaming.engine.pipeline import Pipeline
    from streaming.query.digest import digest
    from streaming.spec.model import load_spec

    spec = load_spec(write_spec(root, topic, kafka.bootstrap_servers, per_trigger=200))
    Pipeline(spark, spec).run(available_now=True, timeout=300)
    return digest(spark, spec)


def _committed(spec_file: Path) -> int:
    from streaming.engine.checkpoint import last_batches

    return last_batches(spec_file.parent / "ck" / "query")[0]


def _spec(spec_file: Path):
    from streaming.spec.model import load_spec

    return load_spec(spec_file)


def _commit_version(table: Path, batch: int) -> int:
    from deltalake import DeltaTable

    from streaming.engine.table_batches import BATCH_KEY

    return max(h["version"] for h in DeltaTable(str(table)).history()
               if h.get(BATCH_KEY) == str(batch))


def _restored_one_run_behind(kafka, topic: str, tmp_path: Path) -> tuple[Path, int, int]:
    """Two stages run, the tables of the first put back: (spec, the tables' batch, the
    checkpoint's)."""
    spec_file = write_spec(tmp_path / "job", topic, kafka.bootstrap_servers, per_trigger=200)
    delta = tmp_path / "job" / "delta"
    _produce(kafka, topic, 0)
    _ok(spec_file)
    k0 = _committed(spec_file)
    shutil.copytree(delta, tmp_path / "backup")
    _produce(kafka, topic, 1)
    _ok(spec_file)
    k1 = _committed(spec_file)
    assert k1 > k0 + 1
    shutil.rmtree(delta)
    shutil.copytree(tmp_path / "backup", delta)
    return spec_file, k0, k1


def test_tables_restored_from_a_copy_are_refused_then_recovered(kafka, spark, topic_name,
                                                                 tmp_path):
    from streaming.query.digest import digest

    spec_file, k0, k1 = _restored_one_run_behind(kafka, topic_name, tmp_path)
    _produce(kafka, topic_name, 2)
    before = counted_once(spark, _spec(spec_file))
    assert sum(before) == STAGE
    _refused(spec_file, f"aggregates holds batches up to {k0}, but the checkpoint committed "
                        f"batches up to {k1}", "streamsketch recover")
    assert counted_once(spark, _spec(spec_file)) == before
    out = _recover(spec_file)
    assert f"recovered: batches {k0 + 1}..{k1}" in out, out
    assert sum(counted_once(spark, _spec(spec_file))) == 2 * STAGE
    _ok(spec_file)  # and on, as usual
    aggregated, quarantined = counted_once(spark, _spec(spec_file))
    assert quarantined > 0 and aggregated + quarantined == 3 * STAGE
    assert digest(spark, _spec(spec_file)) == _clean_digest(spark, kafka, topic_name,
                                                            tmp_path / "clean")


def test_a_delta_restore_and_a_lost_newest_commit_are_recovered(kafka, spark, topic_name,
                                                                tmp_path):
    from deltalake import DeltaTable

    from streaming.query.digest import digest

    spec_file = write_spec(tmp_path / "job", topic_name, kafka.bootstrap_servers,
                           per_trigger=200)
    delta = tmp_path / "job" / "delta"
    _produce(kafka, topic_name, 0)
    _produce(kafka, topic_name, 1)
    _ok(spec_file)
    k = _committed(spec_file)
    # aggregates: Delta RESTORE to batch 1 (it keeps the newest txn: k)
    DeltaTable(str(delta / "aggregates")).restore(_commit_version(delta / "aggregates", 1))
    # sketches: its newest commits lost, down to (and with) batch k's
    log = delta / "sketches" / "_delta_log"
    for v in range(_commit_version(delta / "sketches", k),
                   DeltaTable(str(delta / "sketches")).version() + 1):
        (log / f"{v:020d}.json").unlink()
    _refused(spec_file, "aggregates holds batches up to 1, but the checkpoint committed "
                        f"batches up to {k}")
    out = _recover(spec_file)
    assert f"recovered: batches 2..{k}" in out, out
    _ok(spec_file)
    aggregated, quarantined = counted_once(spark, _spec(spec_file))
    assert aggregated + quarantined == 2 * STAGE
    assert digest(spark, _spec(spec_file)) == _clean_digest(spark, kafka, topic_name,
                                                            tmp_path / "clean")


def test_recover_refuses_records_kafka_no_longer_holds(kafka, spark, topic_name, tmp_path):
    from kafka import TopicPartition
    from kafka.admin import KafkaAdminClient

    spec_file, k0, k1 = _restored_one_run_behind(kafka, topic_name, tmp_path)
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    try:  # retention passed: the first stage and half of the second are gone
        admin.delete_records({TopicPartition(topic_name, p): STAGE // 2 + STAGE // 4
                              for p in (0, 1)})
    finally:
        admin.close()
    code, out, err = cli(["recover", "--spec", str(spec_file), "--master", "local[2]"])
    line = _error_line(err)
    assert code == 2 and "Kafka no longer holds them (retention passed)" in line, err[-3000:]
    assert sum(counted_once(spark, _spec(spec_file))) == STAGE
    _refused(spec_file, f"holds batches up to {k0}, but the checkpoint committed batches up "
                        f"to {k1}")


def _log(path: Path, stage: int) -> None:
    from streaming.kafka.generator import GeneratorConfig, generate

    config = GeneratorConfig(seed=60 + stage, rate=20.0, users=300, pages=50,
                             start_time=START + dt.timedelta(seconds=40 * stage))
    with path.open("ab") as fh:
        fh.write(b"".join(r.value + b"\n" for r in generate(config, STAGE)))


def _plain(table):
    """delta-rs's view types as Spark's reader gives them (what merged_table takes)."""
    import pyarrow as pa

    plain = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}
    return table.cast(pa.schema([f.with_type(plain.get(f.type, f.type)) for f in table.schema]))


def test_a_backfill_behind_its_journal_is_refused_then_recovered(tmp_path):
    from streaming.engine.tables import read_table

    spec = tmp_path / "spec.toml"
    from streaming.spec.model import default_spec_path

    spec.write_text(default_spec_path().read_text())
    log = tmp_path / "events.jsonl"
    argv = ["replay", str(log), "--spec", str(spec), "--backfill", "--sink",
            str(tmp_path / "s"), "--records-per-batch", "200", "--quiet"]
    delta = tmp_path / "s" / "delta"

    def backfill() -> tuple[int, str]:
        code, _, err = cli(argv)
        return code, err

    def total(root: Path) -> int:
        rows = read_table(str(root / "aggregates"), "window_name = 'minutely'")
        return sum(rows.column("count").to_pylist())

    _log(log, 0)
    assert backfill()[0] == 0  # batches 0..2
    shutil.copytree(delta, tmp_path / "backup")
    _log(log, 1)
    assert backfill()[0] == 0  # batches 3..5
    shutil.rmtree(delta)
    shutil.copytree(tmp_path / "backup", delta)
    _log(log, 2)
    code, err = backfill()
    line = _error_line(err)
    assert code == 2 and "holds batches up to 2, but the checkpoint committed batches up " \
                         "to 5" in line, err[-3000:]
    assert total(delta) == STAGE
    code, out, err = cli(["recover", "--spec", str(spec), "--sink", str(tmp_path / "s"),
                          str(log)])
    assert code == 0 and "writes batches 3..5 again" in out, err[-3000:]
    code, err = backfill()
    assert code == 0, err[-3000:]
    assert total(delta) == 3 * STAGE
    clean = ["replay", str(log), "--spec", str(spec), "--backfill", "--sink",
             str(tmp_path / "clean"), "--records-per-batch", "200", "--quiet"]
    assert cli(clean)[0] == 0
    from streaming.engine.reduce import merged_table
    from streaming.query.digest import _sorted_rows
    from streaming.spec.model import load_spec

    job = load_spec(spec)
    for name, key in (("aggregates", ["window_name", "window_start", "group_key"]),
                      ("sketches", ["window_name", "window_start", "group_key",
                                    "sketch_name"])):
        got, want = (merged_table(job, name, _plain(read_table(str(root / name), raw=True)))
                     for root in (delta, tmp_path / "clean" / "delta"))
        cols = [c for c in got.column_names if c not in ("updated_at", "last_batch")]
        assert got.num_rows > 0
        assert _sorted_rows(got, cols, key) == _sorted_rows(want, cols, key), name
