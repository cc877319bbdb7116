"""Jar cache: resolution, verification, damage detection (Maven replaced by a fake)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from streaming.errors import ArtifactError, JavaNotFoundError
from streaming.runtime import jvm


def _jar_bytes(name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{name}/Main.class", b"\xca\xfe\xba\xbe" + name.encode() * 50)
    return buf.getvalue()


@pytest.fixture
def fake_maven(monkeypatch, tmp_path):
    """Point the cache at tmp_path and replace Maven with a function writing jars."""
    monkeypatch.setenv("STREAMSKETCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(jvm, "find_java", lambda: "/usr/bin/java")
    calls = []

    def run(coords, staging, m2, timeout):
        calls.append(list(coords))
        for name in ("alpha-1.0.jar", "beta_2.13-4.1.1.jar", "scala-library-2.13.16.jar"):
            (Path(staging) / name).write_bytes(_jar_bytes(name))

    monkeypatch.setattr(jvm, "_run_maven", run)
    monkeypatch.setattr(jvm, "pyspark_jars_dir", lambda: tmp_path / "pyspark-jars")
    (tmp_path / "pyspark-jars").mkdir()
    (tmp_path / "pyspark-jars" / "scala-library-2.13.18.jar").write_bytes(b"x")
    return calls


def test_resolve_once_then_offline(fake_maven):
    first = jvm.resolve("kafka")
    assert [j.name for j in first.jars] == ["alpha-1.0.jar", "beta_2.13-4.1.1.jar",
                                            "scala-library-2.13.16.jar"]
    assert len(fake_maven) == 1
    second = jvm.resolve("kafka", offline_only=True)
    assert second == first
    assert len(fake_maven) == 1, "a valid cache must not call Maven again"


def test_spark_set_leaves_out_jars_pyspark_ships(fake_maven):
    resolved = jvm.resolve("spark")
    names = [j.name for j in resolved.jars]
    assert "scala-library-2.13.16.jar" not in names
    assert "alpha-1.0.jar" in names


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_damaged_cache_is_detected_and_resolved_again(fake_maven, damage):
    resolved = jvm.resolve("kafka")
    jar = resolved.jars[0]
    if damage == "truncate":
        jar.write_bytes(jar.read_bytes()[:20])
    elif damage == "flip":
        data = bytearray(jar.read_bytes())
        data[len(data) // 2] ^= 0xFF
        jar.write_bytes(bytes(data))
    elif damage == "delete":
        jar.unlink()
    else:
        (resolved.folder / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not cached"):
        jvm.resolve("kafka", offline_only=True)
    again = jvm.resolve("kafka")
    assert len(fake_maven) == 2
    assert jvm._verify(again.folder, "kafka", jvm.artifact_coordinates("kafka")) is not None


def test_interrupted_resolution_leaves_nothing_usable(fake_maven, monkeypatch):
    def crash(coords, staging, m2, timeout):
        (Path(staging) / "alpha-1.0.jar").write_bytes(_jar_bytes("alpha")[:30])
        raise KeyboardInterrupt

    monkeypatch.setattr(jvm, "_run_maven", crash)
    with pytest.raises(KeyboardInterrupt):
        jvm.resolve("kafka")
    jars_root = jvm.cache_root() / "jars"
    assert not any(p.name.startswith("kafka-") for p in jars_root.iterdir())
    with pytest.raises(ArtifactError):
        jvm.resolve("kafka", offline_only=True)


def test_damaged_download_is_retried_then_reported(fake_maven, monkeypatch):
    def broken(coords, staging, m2, timeout):
        fake_maven.append(coords)
        (Path(staging) / "alpha-1.0.jar").write_bytes(b"PK\x03\x04 not really a zip")

    monkeypatch.setattr(jvm, "_run_maven", broken)
    with pytest.raises(ArtifactError, match="damaged: alpha-1.0.jar"):
        jvm.resolve("kafka")
    assert len(fake_maven) == 2


def test_manifest_records_sizes_and_hashes(fake_maven):
    resolved = jvm.resolve("kafka")
    manifest = json.loads((resolved.folder / "manifest.json").read_text())
    assert manifest["coordinates"] == jvm.artifact_coordinates("kafka")
    for entry in manifest["jars"]:
        path = resolved.folder / entry["name"]
        assert entry["size"] == path.stat().st_size
        assert entry["sha256"] == jvm._sha256(path)


def test_unreachable_repository_message_is_one_actionable_line():
    out = "[ERROR] Failed to execute goal ... Could not transfer artifact x from/to central: " \
          "Unknown host repo.example"
    msg = jvm._maven_failure_message(out)
    assert "\n" not in msg
    assert "cannot reach the Maven repository" in msg and "streamsketch jars" in msg


def test_missing_java_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nojava"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(JavaNotFoundError, match="Java 17"):
        jvm.find_java()


def test_old_java_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho \'openjdk version "1.8.0_402"\' >&2\n')
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(JavaNotFoundError, match="Java 8 found"):
        jvm.find_java()


@pytest.mark.parametrize(("name", "artifact"), [
    ("kafka_2.13-4.1.1.jar", "kafka_2.13"),
    ("delta-spark_4.2_2.13-4.4.0.jar", "delta-spark_4.2_2.13"),
    ("zstd-jni-1.5.6-10.jar", "zstd-jni"),
    ("scala-library-2.13.18.jar", "scala-library"),
    ("spark-sql-kafka-0-10_2.13-4.2.0.jar", "spark-sql-kafka-0-10_2.13"),
])
def test_artifact_name_from_jar_file(name, artifact):
    assert jvm._artifact_name(name) == artifact


def test_coordinates_follow_installed_pyspark():
    import pyspark

    coords = jvm.artifact_coordinates("spark")
    assert f"org.apache.spark:spark-sql-kafka-0-10_2.13:{pyspark.__version__}" in coords
    mm = ".".join(pyspark.__version__.split(".")[:2])
    assert any(c.startswith(f"io.delta:delta-spark_{mm}_2.13:") for c in coords)
