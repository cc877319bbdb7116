"""The Spark session factory.

One place decides how Spark runs: ``local[*]`` unless a master is given (a local
master retries a failed task as a cluster does, see :func:`local_master`), Delta
Lake's SQL extension and catalog, Spark's Kafka connector and delta-spark on the
class path from the verified jar cache (no download at session start), the
RocksDB state store, few shuffle partitions (small machines), UTC session time,
the UI off unless asked for, and quiet logs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from streaming.runtime import jvm

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_CONSOLE = """\
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
"""
_FILE = """\
appender.console.type = File
appender.console.name = console
appender.console.fileName = {file}
appender.console.append = true
"""
_LOG4J2 = """\
status = error
{appender}appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
rootLogger.level = {level}
rootLogger.appenderRef.stdout.ref = console
logger.kafka.name = org.apache.kafka
logger.kafka.level = ERROR
logger.parquet.name = org.apache.parquet
logger.parquet.level = ERROR
logger.hadoop.name = org.apache.hadoop
logger.hadoop.level = ERROR
logger.nativecode.name = org.apache.hadoop.util.NativeCodeLoader
logger.nativecode.level = ERROR
logger.delta.name = org.apache.spark.sql.delta
logger.delta.level = {level}
logger.admin.name = org.apache.spark.sql.kafka010.KafkaOffsetReaderAdmin
logger.admin.level = ERROR
logger.microbatch.name = org.apache.spark.sql.execution.streaming.runtime.MicroBatchExecution
logger.microbatch.level = ERROR
logger.sslog.name = org.apache.spark.sql.execution.streaming.state
logger.sslog.level = ERROR
logger.dag.name = org.apache.spark.scheduler.DAGScheduler
logger.dag.level = ERROR
"""


#: the local-mode JVM's collector. It holds no window state (that lives in Python) and
#: shares a few cores with the Python workers: G1's concurrent threads compete with them
#: and its heap grows towards the maximum; the serial collector keeps the heap small.
#: Measured (bench_memory, the year log through Kafka): the JVM's peak RSS 0.82-0.88 GiB
#: with G1, 0.64-0.77 with the serial collector, at the same throughput.
LOCAL_GC = "-XX:+UseSerialGC"

#: the local-mode JVM's initial heap, in MiB. Left to itself the JVM starts with 1/64 of
#: the machine's memory (384 MiB on 24 GiB), and the serial collector's young generation
#: (a third of that) is all touched within the first batch; from 128 MiB the heap grows
#: as the batches need it. Measured (the bundled spec's shipped run, 3 A/B pairs): the
#: JVM's peak RSS 0.74-0.80 GiB without, 0.62 with, at the same batch times.
LOCAL_HEAP_START_MB = 128
_SIZE = re.compile(r"^\s*([0-9]+)\s*([kmgt]?)b?\s*$", re.IGNORECASE)


def mebibytes(size: str) -> float | None:
    """A JVM memory size (``512m``, ``1g``, ``1048576``) in MiB; None if unreadable."""
    m = _SIZE.match(size)
    if m is None:
        return None
    scale = {"": 1 / 2**20, "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024**2}
    return int(m.group(1)) * scale[m.group(2).lower()]


@dataclass(frozen=True)
class SparkOptions:
    """How to build the session.

    Attributes:
        master: Spark master URL; ``local[*]`` runs in this process.
        app_name: application name shown in Spark's UI and logs.
        shuffle_partitions: partitions after a shuffle; small machines want few.
        driver_memory: JVM heap of the driver (local mode: of everything). The JVM holds
            no window state (the pass and the open windows live in Python), so 1 GiB
            carries 1M offsets per trigger; a cluster's driver needs no more.
        ui: start Spark's web UI.
        log_level: JVM log level (WARN keeps the console quiet).
        log_file: send the JVM's log lines to this file instead of stderr.
        conf: extra Spark settings, applied last.
        class_archive: map the driver's classes from the class archive, when there is one
            (:func:`class_archive`).
    """

    master: str = "local[*]"
    app_name: str = "streamsketch"
    shuffle_partitions: int = max(2, os.cpu_count() or 2)
    driver_memory: str = "1g"
    ui: bool = False
    log_level: str = "WARN"
    log_file: Path | None = None
    conf: dict[str, str] = field(default_factory=dict)
    class_archive: bool = True
    #: the collector of a local-mode JVM (see :data:`LOCAL_GC`); None: the JVM's default
    local_gc: str | None = LOCAL_GC


def _log_config(level: str, log_file: Path | None = None) -> Path:
    folder = Path(tempfile.gettempdir()) / "streamsketch"
    folder.mkdir(parents=True, exist_ok=True)
    appender = _CONSOLE
    name = f"log4j2-{level.lower()}"
    if log_file is not None:
        target = Path(log_file).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        appender = _FILE.replace("{file}", str(target))
        name += f"-{hashlib.sha256(str(target).encode()).hexdigest()[:12]}"
    path = folder / f"{name}.properties"
    text = _LOG4J2.replace("{appender}", appender).replace("{level}", level.upper())
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


#: attempts of one task before its job fails, in local mode: Spark's default on a cluster
#: (``spark.task.maxFailures``, which local mode ignores)
LOCAL_TASK_ATTEMPTS = 4
_LOCAL = re.compile(r"^local(?:\[\s*(\*|[0-9]+)\s*\])?$")


def local_master(master: str) -> str:
    """``master``, with task retries if it is a plain local master.

    ``local`` and ``local[N]`` give each task one attempt: a Python worker that dies
    (killed for memory, say) fails the batch, where a cluster would run the task
    again. They become ``local[N,4]``; a master that names its own retries
    (``local[N,F]``) and every other master are kept as given.

    Example:
        >>> local_master("local[*]"), local_master("local[2,1]"), local_master("spark://h:7077")
        ('local[*,4]', 'local[2,1]', 'spark://h:7077')
    """
    m = _LOCAL.match(master.strip())
    if m is None:
        return master
    return f"local[{m.group(1) or 1},{LOCAL_TASK_ATTEMPTS}]"




#: Spark's value of ``spark.sql.execution.arrow.maxBytesPerBatch`` that disables the cap
ARROW_NO_BYTE_CAP = 2**31 - 1
CHECKPOINT_FILE_MANAGER = ("org.apache.spark.sql.execution.streaming.checkpointing."
                           "FileSystemBasedCheckpointFileManager")


def spark_conf(options: SparkOptions, jars: list[Path]) -> dict[str, str]:
    """The settings :func:`build_session` applies, as a plain mapping (testable without a JVM)."""
    log_config = _log_config(options.log_level, options.log_file)
    is_local = _LOCAL.match(options.master.strip()) is not None
    java_opts = f"-Dlog4j2.configurationFile=file:{log_config} -Duser.timezone=UTC"
    conf = {
        "spark.master": local_master(options.master),
        "spark.app.name": options.app_name,
        "spark.jars": ",".join(str(j) for j in jars),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.streaming.stateStore.providerClass":
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        "spark.sql.shuffle.partitions": str(options.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "true" if options.ui else "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": options.driver_memory,
        "spark.driver.extraJavaOptions": java_opts + (
            f" {options.local_gc}" if is_local and options.local_gc else "") + (
            f" -Xms{LOCAL_HEAP_START_MB}m" if is_local and (
                mebibytes(options.driver_memory) or 0) >= 2 * LOCAL_HEAP_START_MB else ""),
        "spark.executor.extraJavaOptions": java_opts,
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Python workers run the interpreter (and packages) of the driver, unless
        # PYSPARK_PYTHON names the workers' own (a cluster whose machines differ).
        "spark.pyspark.python": os.environ.get("PYSPARK_PYTHON") or sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        # the daemon that forks the Python workers imports the engine first, once
        # (streaming/engine/worker_daemon.py)
        "spark.python.daemon.module": "streaming.engine.worker_daemon",
        # mapInArrow hands a partition's rows over in batches of this size; the pass
        # decodes each as it arrives, while the JVM still reads and converts the next.
        "spark.sql.execution.arrow.maxRecordsPerBatch": "10000",
        # No byte cap besides (Spark 3's behaviour): Spark 4 measures the Arrow batch
        # after every row to enforce one (64 MiB by default): about an eighth of the JVM's
        # samples in a profile of the pipeline. INT_MAX is the value that turns it off.
        # A batch of 10,000 records must then stay under Arrow's 2 GiB per column:
        # records averaging under 200 KiB (see docs/operations.md, Limits).
        "spark.sql.execution.arrow.maxBytesPerBatch": str(ARROW_NO_BYTE_CAP),
        "spark.sql.adaptive.enabled": "false",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.streaming.numRecentProgressUpdates": "20",
        # The Kafka source sees our own topics only; no metadata-loss surprises.
        "spark.sql.streaming.kafka.useDeprecatedOffsetFetching": "false",
        # The query's offset and commit logs: written through the FileSystem API (temp
        # file, then an atomic rename; checksums kept) rather than FileContext, whose
        # local writes run chmod, readlink and stat as child processes without Hadoop's
        # native library: about 30 ms per log entry against 5-8, twice per batch. Our
        # checkpoint is a local folder, where a rename is atomic.
        "spark.sql.streaming.checkpointFileManagerClass": CHECKPOINT_FILE_MANAGER,
    }
    for key, value in options.conf.items():
        if key in _APPENDED:  # the user's JVM options come after ours, not instead
            conf[key] = f"{conf[key]} {value}"
        else:
            conf[key] = value
    return conf


#: settings whose given value is appended to streamsketch's (log4j, UTC, GC options)
_APPENDED = ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")


#: set to 0 to start sessions without the class archive (to compare, or to rule it out)
CLASS_ARCHIVE_ENV = "STREAMSKETCH_CLASS_ARCHIVE"
#: Java's own switches for the class archive: use it, and say nothing if it cannot be used
#: (another JDK, another class path: the JVM then loads its classes as usual)
_ARCHIVE_QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def class_archive(jars: list[Path]) -> Path:
    """Where the class-data sharing archive of a session with ``jars`` lives.

    A driver JVM spends seconds of its start loading and verifying Spark's classes; an
    archive of them (Java's AppCDS, written once by :func:`write_class_archive`, which
    ``streamsketch jars`` runs) maps them in instead, which takes seconds off a session's
    start and its first job (``benchmarks/bench_startup.py`` measures both ways). The
    name holds a key of the JDK and the jars, so another JDK or another Spark gets an
    archive of its own.
    """
    java = Path(jvm.find_java()).resolve()
    key = hashlib.sha256("\n".join(
        [str(java), str(java.stat().st_mtime_ns), *(str(j) for j in jars)]).encode())
    return jvm.cache_root() / "cds" / f"session-{key.hexdigest()[:16]}.jsa"


def write_class_archive(*, timeout: float = 600.0, log=None) -> Path | None:
    """Write the class archive of this machine's session once (see :func:`class_archive`):
    a session in a process of its own runs a small job and, at its JVM's exit, dumps the
    classes it loaded. Returns the archive, or None when it could not be written (the
    sessions then start without it)."""
    import subprocess

    target = class_archive(list(jvm.resolve("spark", log=log).jars))
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    if log is not None:
        log(f"writing the Spark driver's class archive (once): {target}")
    try:
        subprocess.run([sys.executable, "-c", "import sys; from streaming.runtime.session "
                        "import _archive_classes; _archive_classes(sys.argv[1])", str(tmp)],
                       check=True, timeout=timeout, capture_output=True)
        if tmp.stat().st_size > 0:
            os.replace(tmp, target)
            return target
    except (OSError, subprocess.SubprocessError):
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return None


def _archive_classes(path: str) -> None:
    """The training session of :func:`write_class_archive` (runs in its own process)."""
    options = SparkOptions(master="local[2]", class_archive=False)
    java_opts = spark_conf(options, [])["spark.driver.extraJavaOptions"]
    options = SparkOptions(master="local[2]", class_archive=False, conf={
        "spark.driver.extraJavaOptions": f"{java_opts} -XX:ArchiveClassesAtExit={path} "
                                         f"{_ARCHIVE_QUIET}"})
    spark = build_session(options)
    spark.range(10_000).selectExpr("sum(id)", "count(*)").collect()
    spark.createDataFrame([(1, "a")], "x long, y string").toArrow()
    gateway = spark.sparkContext._gateway  # type: ignore[attr-defined]
    spark.stop()
    proc = getattr(gateway, "proc", None)
    gateway.shutdown()
    if proc is not None:  # the JVM writes the archive as it exits: wait for it
        proc.stdin.close()
        proc.wait(timeout=300)


def build_session(options: SparkOptions | None = None, *, log=None) -> SparkSession:
    """Create (or return the active) Spark session configured for streamsketch.

    The JVM jars come from the verified cache (resolved once if missing); a local
    driver maps its classes from the class archive when there is one
    (:func:`class_archive`).
    """
    options = options or SparkOptions()
    if options.master.startswith("local"):
        # Keep a local driver on loopback: no interface guessing, nothing exposed.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers must run this interpreter, with this environment's packages.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    jvm.find_java()
    jars = list(jvm.resolve("spark", log=log).jars)
    from pyspark.sql import SparkSession

    conf = spark_conf(options, jars)
    use_archive = options.class_archive and os.environ.get(CLASS_ARCHIVE_ENV, "1") != "0"
    if use_archive and "spark.driver.extraJavaOptions" not in options.conf:
        archive = class_archive(jars)
        if archive.exists():
            conf["spark.driver.extraJavaOptions"] += (f" -XX:SharedArchiveFile={archive} "
                                                      f"{_ARCHIVE_QUIET}")
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    with _jvm_stderr(options.log_file):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(options.log_level.upper())
    return spark


@contextlib.contextmanager
def _jvm_stderr(log_file: Path | None) -> Iterator[None]:
    """With a log file, the JVM starts with its standard error there too.

    Its logger already writes to the file; this catches what the JVM prints before or
    beside it (Spark 4's "WARNING: Using incubator modules" line at start, a Python
    worker's traceback). The JVM inherits file descriptor 2 when it is launched, so it
    points at the file only while the session starts; this process's own standard
    error is back in place afterwards.
    """
    if log_file is None:
        yield
        return
    path = Path(log_file).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(target, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)
