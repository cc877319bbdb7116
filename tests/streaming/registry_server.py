"""A real Schema Registry for the tests: Apicurio Registry 3 (in-memory storage), whose
Confluent-compatible API is ``/apis/ccompat/v7``.

Its server build is on Maven Central (``io.apicurio:apicurio-registry-app:3.3.3``,
classifier ``all``, a tar.gz of the Quarkus app), fetched once with Maven into the
project's cache and unpacked there. It needs Java 21 or newer: ``APICURIO_JAVA`` (a
``java`` executable), else ``JAVA_HOME``'s, else the newest JDK found in the system's
JVM folder. Without Maven or such a Java the tests that need it skip and say why.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streaming.runtime.jvm import cache_root

VERSION = "3.3.3"
COORDS = f"io.apicurio:apicurio-registry-app:{VERSION}:tar.gz:all"
_JVM_FOLDERS = (Path("/usr/lib/jvm"), Path("/usr/java"), Path("/opt/java"))


def _major(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)', out.stderr + out.stdout)
    return int(m.group(1)) if m else None


def java_21() -> str | None:
    """A ``java`` of version 21 or newer, or None."""
    import os

    candidates = [os.environ.get("APICURIO_JAVA", "")]
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    for folder in _JVM_FOLDERS:
        if folder.is_dir():
            candidates += sorted((str(p / "bin" / "java") for p in folder.iterdir()),
                                 reverse=True)
    for java in candidates:
        if java and Path(java).exists() and (_major(java) or 0) >= 21:
            return java
    return None


def server_dir() -> Path:
    """The unpacked server (fetched and unpacked on first use)."""
    home = cache_root() / f"apicurio-registry-{VERSION}"
    if (home / "quarkus-run.jar").exists():
        return home
    mvn = shutil.which("mvn")
    if mvn is None:
        pytest.skip("Apicurio Registry is fetched with Maven (`mvn`), which is not installed")
    m2 = cache_root() / "m2"
    out = subprocess.run([mvn, "-q", "-B", "dependency:get", f"-Dartifact={COORDS}",
                          "-Dtransitive=false", f"-Dmaven.repo.local={m2}"],
                         capture_output=True, text=True, timeout=900)
    archive = (m2 / "io" / "apicurio" / "apicurio-registry-app" / VERSION /
               f"apicurio-registry-app-{VERSION}-all.tar.gz")
    if out.returncode != 0 or not archive.exists():
        pytest.skip(f"could not fetch {COORDS} from Maven Central: "
                    f"{(out.stdout + out.stderr).strip().splitlines()[-1:]}")
    staging = home.with_name(home.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    runner = next(staging.rglob("quarkus-run.jar"))
    shutil.rmtree(home, ignore_errors=True)
    runner.parent.rename(home)
    shutil.rmtree(staging, ignore_errors=True)
    return home


class Registry:
    """One server on 127.0.0.1, free ports; :attr:`url` is the Confluent-compatible base."""

    def __init__(self, log: Path) -> None:
        java = java_21()
        if java is None:
            pytest.skip("Apicurio Registry 3 needs Java 21 or newer; none found (set "
                        "APICURIO_JAVA to a java 21+ executable)")
        home = server_dir()
        self._log = log
        self._proc = subprocess.Popen(
            [java, "-XX:TieredStopAtLevel=1", "-Xmx256m", "-Dquarkus.http.host=127.0.0.1",
             "-Dquarkus.http.port=0", "-Dquarkus.management.host=127.0.0.1",
             "-Dquarkus.management.port=0", "-Dquarkus.http.access-log.enabled=false",
             "-jar", str(home / "quarkus-run.jar")],
            stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=home)
        self.url = self._wait() + "/apis/ccompat/v7"

    def _wait(self, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"Apicurio Registry exited: {self._log.read_text()[-2000:]}")
            # the first "Listening on" is the API (the management port is listed after it)
            m = re.search(r"Listening on: (http://127\.0\.0\.1:\d+)", self._log.read_text())
            if m:
                try:
                    self.get(m.group(1) + "/apis/ccompat/v7/subjects")
                    return m.group(1)
                except OSError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"Apicurio Registry did not start in {timeout:.0f} s")

    @staticmethod
    def get(url: str) -> Any:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def register(self, subject: str, schema_text: str) -> int:
        """Register an Avro schema under ``subject``; its global id."""
        body = json.dumps({"schema": schema_text}).encode()
        request = urllib.request.Request(
            f"{self.url}/subjects/{subject}/versions", data=body, method="POST",
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(json.loads(response.read())["id"])

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)
