"""The Spark session's launch: where the JVM's standard error goes, and its class archive."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streaming.runtime.session import _jvm_stderr  # noqa: PLC2701 - the unit under test


def test_a_process_launched_in_it_writes_its_stderr_to_the_log(tmp_path, capfd):
    log = tmp_path / "logs" / "spark.log"
    with _jvm_stderr(log):
        # what pyspark does: a child process that inherits file descriptor 2
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('from the jvm\\n')"],
                       check=True)
    subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('after\\n')"],
                   check=True)
    assert log.read_text() == "from the jvm\n"
    assert capfd.readouterr().err == "after\n"


def test_without_a_log_file_nothing_moves(capfd):
    with _jvm_stderr(None):
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('here\\n')"],
                       check=True)
    assert capfd.readouterr().err == "here\n"


def test_the_serial_collector_runs_the_local_driver_only():
    from streaming.runtime.session import SparkOptions, spark_conf

    local = spark_conf(SparkOptions(master="local[2]"), [])
    cluster = spark_conf(SparkOptions(master="spark://127.0.0.1:7077"), [])
    assert "-XX:+UseSerialGC" in local["spark.driver.extraJavaOptions"]
    assert "-XX:+UseSerialGC" not in cluster["spark.driver.extraJavaOptions"]
    assert "-XX:+UseSerialGC" not in local["spark.executor.extraJavaOptions"]


@pytest.mark.parametrize(("memory", "start"), [("1g", True), ("256m", True), ("4G", True),
                                               ("255m", False), ("64m", False)])
def test_the_local_driver_starts_with_a_small_heap_below_its_maximum(memory, start):
    """Local mode starts the heap at 128 MiB (not 1/64 of the machine) when the maximum
    leaves room to grow; a cluster's driver keeps the JVM's default."""
    from streaming.runtime.session import SparkOptions, spark_conf

    local = spark_conf(SparkOptions(master="local[2]", driver_memory=memory), [])
    cluster = spark_conf(SparkOptions(master="spark://127.0.0.1:7077",
                                      driver_memory=memory), [])
    assert ("-Xms128m" in local["spark.driver.extraJavaOptions"].split()) is start
    assert "-Xms" not in cluster["spark.driver.extraJavaOptions"]
    assert "-Xms" not in local["spark.executor.extraJavaOptions"]


@pytest.mark.parametrize(("size", "mib"), [("512m", 512), ("1g", 1024), ("2G", 2048),
                                           ("1048576", 1), ("2048k", 2), ("lots", None)])
def test_jvm_sizes_read_as_mebibytes(size, mib):
    from streaming.runtime.session import mebibytes

    assert mebibytes(size) == mib


def test_the_class_archive_is_keyed_by_the_jdk_and_the_jars(tmp_path, monkeypatch):
    from streaming.runtime.session import class_archive

    monkeypatch.setenv("STREAMSKETCH_CACHE", str(tmp_path))
    a = class_archive([Path("/x/spark-core.jar"), Path("/x/delta.jar")])
    assert a.parent == tmp_path / "cds" and a.suffix == ".jsa"
    assert class_archive([Path("/x/spark-core.jar"), Path("/x/delta.jar")]) == a
    assert class_archive([Path("/x/spark-core.jar"), Path("/x/delta-4.1.jar")]) != a


@pytest.mark.integration
def test_the_driver_maps_its_classes_from_the_archive_jars_wrote(spark):
    """``streamsketch jars`` (which ``make test`` runs first) writes the archive, and the
    session maps it: its start is seconds shorter (benchmarks/bench_startup.py)."""
    from streaming.runtime import jvm
    from streaming.runtime.session import class_archive

    archive = class_archive(list(jvm.resolve("spark", offline_only=True).jars))
    if not archive.exists():
        pytest.skip(f"no class archive at {archive}: `streamsketch jars` writes it")
    bean = spark._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    assert f"-XX:SharedArchiveFile={archive}" in list(bean.getInputArguments())


def test_given_settings_come_after_ours_and_java_options_are_added_to_ours():
    from streaming.runtime.session import SparkOptions, spark_conf

    ours = spark_conf(SparkOptions(master="local[2]"), [])
    conf = spark_conf(SparkOptions(master="local[2]", conf={
        "spark.sql.shuffle.partitions": "7", "spark.executor.memory": "4g",
        "spark.driver.extraJavaOptions": "-Dmine=1"}), [])
    assert conf["spark.sql.shuffle.partitions"] == "7" != ours["spark.sql.shuffle.partitions"]
    assert conf["spark.executor.memory"] == "4g"
    assert conf["spark.driver.extraJavaOptions"] == \
        ours["spark.driver.extraJavaOptions"] + " -Dmine=1"


def test_conf_wins_over_the_spec_s_spark_table(monkeypatch):
    """``run --conf`` after the spec's ``[spark]``, as spark-submit's --conf after its
    properties file; a secret reference is read only here, for the session."""
    import argparse

    from streaming.cli import common
    from streaming.spec.model import Secret

    seen = []
    monkeypatch.setattr("streaming.runtime.session.build_session",
                        lambda options, log=None: seen.append(options))
    monkeypatch.setenv("LAKE_SECRET", "s3cr3t")
    spec = argparse.Namespace(spark=(("spark.executor.memory", "2g"),
                                     ("spark.executor.cores", "2"),
                                     ("spark.hadoop.fs.s3a.secret.key", Secret("env:LAKE_SECRET"))))
    args = common.Parser().parse_args([])
    args.conf = [common.spark_setting("spark.executor.memory=8g")]
    common.spark_session(args, spec)
    (options,) = seen
    assert options.conf == {"spark.executor.memory": "8g", "spark.executor.cores": "2",
                            "spark.hadoop.fs.s3a.secret.key": "s3cr3t"}


@pytest.mark.parametrize(("text", "needle"), [
    ("spark.executor.memory", "is not KEY=VALUE"), ("=4g", "is not KEY=VALUE"),
    ("spark.master=local", "give --master instead"), ("memory=4g", "is not a Spark setting")])
def test_a_bad_conf_is_refused(text, needle):
    import argparse

    from streaming.cli.common import spark_setting

    with pytest.raises(argparse.ArgumentTypeError, match=needle):
        spark_setting(text)


@pytest.mark.integration
def test_run_s_conf_and_the_spark_table_reach_the_session(tmp_path):
    """A real session, built in a process of its own as `run` builds it."""
    spec = tmp_path / "spec.toml"
    spec.write_text((Path(__file__).resolve().parents[2] / "streaming" / "specs"
                     / "clickstream.toml").read_text()
                    + '\n[spark]\n"spark.sql.shuffle.partitions" = 5\n'
                      '"spark.streamsketch.check" = "from-spec"\n')
    code = ("import sys; from streaming.cli.main import build_parser; "
            "from streaming.cli.common import spark_session; "
            "from streaming.spec.model import load_spec; "
            "a = build_parser().parse_args(sys.argv[1:]); "
            "s = spark_session(a, load_spec(a.spec)); "
            "print(s.conf.get('spark.sql.shuffle.partitions'), "
            "s.conf.get('spark.streamsketch.check'), s.conf.get('spark.executor.memory'))")
    out = subprocess.run([sys.executable, "-c", code, "run", "--spec", str(spec), "--master",
                          "local[1]", "--conf", "spark.executor.memory=3g", "--conf",
                          "spark.streamsketch.check=from-conf"], capture_output=True, text=True,
                         timeout=180, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["5", "from-conf", "3g"]


@pytest.mark.integration
def test_python_workers_fork_from_the_daemon_that_preloads_the_engine(spark):
    """Spark starts streaming/engine/worker_daemon.py as its Python daemon: the workers
    it forks have the engine (and the pandas Arrow imports) loaded, and Arrow's pool is
    malloc's, before a task of ours runs."""
    def worker_state(batches):  # nested: pickled by value, not by module name
        """A task's view of its Python worker, before any engine code runs in it."""
        import sys

        import pyarrow as pa

        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        yield pa.RecordBatch.from_pydict({
            "daemon": [spec.name if spec else ""],
            "preloaded": ["streaming.engine.onepass" in sys.modules and "pandas" in sys.modules],
            "pool": [pa.default_memory_pool().backend_name]})
        for _ in batches:
            pass

    rows = (spark.range(0, 4, 1, 4)
            .mapInArrow(worker_state, "daemon STRING, preloaded BOOLEAN, pool STRING")
            .collect())
    assert {r.daemon for r in rows} == {"streaming.engine.worker_daemon"}
    assert all(r.preloaded for r in rows)
    assert {r.pool for r in rows} == {"system"}
