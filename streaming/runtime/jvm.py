"""JVM artifacts from Maven Central, resolved once and cached.

Two artifact sets are needed:

* ``spark``: Spark's Kafka connector and delta-spark, matched to the installed
  PySpark (Scala 2.13). Jars PySpark already ships are left out so the class
  path has one copy of each library.
* ``kafka``: the Apache Kafka broker (KRaft) with its runtime dependencies,
  used by the embedded local broker.

Maven does the resolving (``mvn dependency:copy-dependencies`` on a generated
POM, strict checksums, a private local repository inside the cache). The result
is copied into a folder named after the exact coordinates, with a manifest of
every jar's size and SHA-256; the folder appears under its final name only when
complete (atomic rename), and every load checks the manifest. A half-finished or
damaged cache is therefore detected, removed and resolved again, never used. A
second run with a valid cache does not touch the network.

Example:
    >>> from streaming.runtime.jvm import artifact_coordinates
    >>> any(c.startswith("io.delta:delta-spark_") for c in artifact_coordinates("spark"))
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from streaming.errors import ArtifactError, JavaNotFoundError

ArtifactSet = Literal["spark", "kafka"]
ARTIFACT_SETS: tuple[ArtifactSet, ...] = ("spark", "kafka")

#: Apache Kafka broker version run by ``streamsketch kafka start`` (and pinned in
#: docker-compose.yml, so the embedded and the containerised broker agree).
KAFKA_VERSION = "4.1.1"
SCALA_BINARY = "2.13"
LOG4J_VERSION = "2.25.4"
SLF4J_VERSION = "2.0.17"
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
DEFAULT_REPOSITORY = "https://repo.maven.apache.org/maven2"

_MANIFEST = "manifest.json"


def cache_root() -> Path:
    """Where jars and the private Maven repository live.

    ``STREAMSKETCH_CACHE`` wins, then ``$XDG_CACHE_HOME/streamsketch``, then
    ``~/.cache/streamsketch``. Never inside the repository.
    """
    env = os.environ.get("STREAMSKETCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "streamsketch"


def _pyspark_version() -> str:
    import pyspark

    return str(pyspark.__version__)


def _delta_version() -> str:
    from importlib.metadata import version

    return version("delta-spark")


def pyspark_jars_dir() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def _pyspark_jar_version(artifact: str) -> str | None:
    for jar in pyspark_jars_dir().glob(f"{artifact}-*.jar"):
        m = _JAR_NAME.match(jar.name)
        if m and m.group("artifact") == artifact:
            return m.group("version")
    return None


def artifact_coordinates(which: ArtifactSet) -> list[str]:
    """Maven coordinates (``group:artifact:version``) of an artifact set."""
    if which == "spark":
        spark = _pyspark_version()
        spark_mm = ".".join(spark.split(".")[:2])
        coords = [
            f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY}:{spark}",
            f"io.delta:delta-spark_{spark_mm}_{SCALA_BINARY}:{_delta_version()}",
        ]
        jackson = _pyspark_jar_version("jackson-databind")
        if jackson:
            # delta-kernel pulls jackson-datatype-jdk8 at an old version; align it with
            # the jackson-databind PySpark ships so the modules match.
            coords.append(f"com.fasterxml.jackson.datatype:jackson-datatype-jdk8:{jackson}")
        return coords
    if which == "kafka":
        return [
            f"org.apache.kafka:kafka_{SCALA_BINARY}:{KAFKA_VERSION}",
            # The broker logs through SLF4J; Kafka 4 ships log4j2 configuration
            # support but leaves the binding to the distribution.
            f"org.apache.logging.log4j:log4j-slf4j2-impl:{LOG4J_VERSION}",
            f"org.apache.logging.log4j:log4j-core:{LOG4J_VERSION}",
            # A transitive dependency drags in slf4j-api 1.7, which the SLF4J 2 binding
            # above ignores; pin the matching API.
            f"org.slf4j:slf4j-api:{SLF4J_VERSION}",
        ]
    raise ArtifactError(f"unknown artifact set {which!r}; expected one of {ARTIFACT_SETS}")


def _set_key(which: ArtifactSet, coords: list[str]) -> str:
    digest = hashlib.sha256("\n".join(coords).encode()).hexdigest()[:12]
    return f"{which}-{digest}"


@dataclass(frozen=True)
class ResolvedArtifacts:
    """A verified folder of jars."""

    which: ArtifactSet
    folder: Path
    jars: tuple[Path, ...]

    @property
    def classpath(self) -> str:
        return os.pathsep.join(str(j) for j in self.jars)


def find_java() -> str:
    """Path of the ``java`` executable, or a one-line error saying what to do."""
    java_home = os.environ.get("JAVA_HOME")
    candidates = []
    if java_home:
        candidates.append(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found:
        candidates.append(Path(found))
    for cand in candidates:
        if cand.exists() and os.access(cand, os.X_OK):
            try:
                out = subprocess.run([str(cand), "-version"], capture_output=True, text=True,
                                     timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if out.returncode == 0:
                major = _java_major(out.stderr + out.stdout)
                if major is not None and major < 17:
                    raise JavaNotFoundError(
                        f"Java {major} found at {cand}; Spark 4 and Kafka 4 need Java 17 or newer "
                        "(install openjdk-17-jre-headless and set JAVA_HOME)")
                return str(cand)
    raise JavaNotFoundError(
        "no Java runtime found: install Java 17+ (e.g. `apt-get install openjdk-17-jre-headless`) "
        "or set JAVA_HOME")


def _java_major(version_text: str) -> int | None:
    m = re.search(r'version "(\d+)(?:\.(\d+))?', version_text)
    if not m:
        return None
    first = int(m.group(1))
    if first == 1 and m.group(2):  # "1.8.0_x"
        return int(m.group(2))
    return first


def _find_maven() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise ArtifactError(
            "Maven (`mvn`) is needed once to fetch the JVM jars and was not found: "
            "install it (e.g. `apt-get install maven`) or run `make jars` where it is available")
    return mvn


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(folder: Path, which: ArtifactSet, coords: list[str]) -> ResolvedArtifacts | None:
    """The artifact set in ``folder`` if it is complete and intact, else None."""
    manifest_path = folder / _MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("coordinates") != coords or not isinstance(manifest.get("jars"), list):
        return None
    jars = []
    for entry in manifest["jars"]:
        try:
            path = folder / entry["name"]
            if path.stat().st_size != entry["size"] or _sha256(path) != entry["sha256"]:
                return None
        except (OSError, KeyError, TypeError):
            return None
        jars.append(path)
    if not jars:
        return None
    return ResolvedArtifacts(which, folder, tuple(jars))


def _pom(coords: list[str], repository: str) -> str:
    deps = []
    for c in coords:
        group, artifact, version = c.split(":")
        deps.append(
            f"<dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
            f"<version>{version}</version></dependency>")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<project xmlns="http://maven.apache.org/POM/4.0.0">'
        "<modelVersion>4.0.0</modelVersion>"
        "<groupId>streamsketch.local</groupId><artifactId>jvm-deps</artifactId>"
        "<version>1</version><packaging>pom</packaging>"
        f"<repositories><repository><id>central</id><url>{repository}</url></repository>"
        "</repositories>"
        f"<dependencies>{''.join(deps)}</dependencies></project>\n")


_JAR_NAME = re.compile(r"^(?P<artifact>.+?)-(?P<version>\d[^-]*(?:-[^.]+)?)\.jar$")


def _artifact_name(jar_file: str) -> str:
    m = _JAR_NAME.match(jar_file)
    return m.group("artifact") if m else jar_file


def _maven_failure_message(output: str) -> str:
    lowered = output.lower()
    if any(s in lowered for s in ("unknown host", "could not transfer", "connection refused",
                                  "connect timed out", "network is unreachable",
                                  "no route to host", "temporary failure in name resolution")):
        return ("cannot reach the Maven repository to fetch the JVM jars; connect to the network "
                "(or set STREAMSKETCH_MAVEN_REPO to a reachable mirror) and run "
                "`streamsketch jars` once, after which runs are offline")
    lines = [ln.strip() for ln in output.splitlines() if "[ERROR]" in ln and ln.strip()]
    detail = lines[0].replace("[ERROR]", "").strip() if lines else output.strip()[-300:]
    return f"Maven could not resolve the JVM jars: {detail}"


def _run_maven(coords: list[str], staging: Path, m2: Path, timeout: float) -> None:
    mvn = _find_maven()
    repository = os.environ.get("STREAMSKETCH_MAVEN_REPO", DEFAULT_REPOSITORY)
    with tempfile.TemporaryDirectory(prefix="streamsketch-pom-") as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_pom(coords, repository))
        cmd = [
            mvn, "-B", "-q", "--strict-checksums", "-f", str(pom),
            f"-Dmaven.repo.local={m2}",
            f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={staging}", "-DincludeScope=runtime",
        ]
        env = dict(os.environ)
        env.setdefault("MAVEN_OPTS", "-Xmx512m")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as exc:
            raise ArtifactError(
                f"Maven did not finish resolving the JVM jars within {timeout:.0f} s; "
                "check the network and run `streamsketch jars` again") from exc
        if proc.returncode != 0:
            raise ArtifactError(_maven_failure_message(proc.stdout + proc.stderr))


def _is_valid_jar(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return len(zf.namelist()) > 0
    except (OSError, zipfile.BadZipFile):
        return False


def resolve(which: ArtifactSet, *, offline_only: bool = False, timeout: float = 900.0,
            log=None) -> ResolvedArtifacts:
    """Return the verified jars of ``which``, resolving them first if needed.

    Args:
        which: ``"spark"`` or ``"kafka"``.
        offline_only: raise instead of downloading when the cache is missing.
        timeout: seconds Maven may take.
        log: optional callable receiving progress lines.
    """
    find_java()
    coords = artifact_coordinates(which)
    root = cache_root()
    jars_root = root / "jars"
    final = jars_root / _set_key(which, coords)
    resolved = _verify(final, which, coords)
    if resolved is not None:
        return resolved
    if final.exists():
        if log:
            log(f"jar cache at {final} is incomplete or damaged; resolving again")
        shutil.rmtree(final, ignore_errors=True)
    if offline_only:
        raise ArtifactError(
            f"JVM jars for {which!r} are not cached under {jars_root}; run `streamsketch jars`")
    if log:
        log(f"resolving {which} jars from Maven Central into {final} (once) ...")
    jars_root.mkdir(parents=True, exist_ok=True)
    m2 = root / "m2"
    excluded: set[str] = set()
    if which == "spark":
        excluded = {_artifact_name(p.name) for p in pyspark_jars_dir().glob("*.jar")}
    for attempt in (1, 2):
        staging = Path(tempfile.mkdtemp(prefix=f".{which}-staging-", dir=jars_root))
        try:
            _run_maven(coords, staging, m2, timeout)
            entries = []
            bad = []
            for jar in sorted(staging.glob("*.jar")):
                if _artifact_name(jar.name) in excluded:
                    jar.unlink()
                    continue
                if not _is_valid_jar(jar):
                    bad.append(jar.name)
                    continue
                entries.append({"name": jar.name, "size": jar.stat().st_size,
                                "sha256": _sha256(jar)})
            if bad:
                if attempt == 1:
                    # A damaged file in the private Maven repository: wipe it and retry.
                    shutil.rmtree(m2, ignore_errors=True)
                    continue
                raise ArtifactError(f"downloaded jars are damaged: {', '.join(bad)}")
            if not entries:
                raise ArtifactError(f"Maven returned no jars for {which!r}")
            manifest = {"coordinates": coords, "jars": entries}
            (staging / _MANIFEST).write_text(json.dumps(manifest, indent=1))
            if not final.exists():
                os.replace(staging, final)
            break
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    resolved = _verify(final, which, coords)
    if resolved is None:
        raise ArtifactError(f"jar cache at {final} failed verification right after resolving")
    return resolved
