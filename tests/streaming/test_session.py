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
