"""The Spark session's launch, without a JVM: where the JVM's standard error goes."""

from __future__ import annotations

import subprocess
import sys

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
