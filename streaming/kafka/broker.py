"""A real single-node Apache Kafka broker (KRaft), run from its Maven Central jars.

This is the embedded default for ``streamsketch demo``, local runs and tests: the
same broker code as production Kafka, combined broker + controller, its own data
folder, logs to a file, a readiness check and a clean stop.

Layout under ``home``::

    home/server.properties   generated config
    home/data/               KRaft metadata and topic logs
    home/logs/server.log     broker output
    home/broker.pid          pid of the running broker
    home/broker.json         port and bootstrap address of the running broker
"""

from __future__ import annotations

import base64
import errno
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from streaming.errors import BrokerError
from streaming.runtime import jvm

_LOG4J2 = """\
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on (or holds) ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port chosen by the OS."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _cluster_id() -> str:
    """A random KRaft cluster id (base64url of a UUID) that does not start with "-".

    The storage tool's command line would read a leading "-" as an option (Kafka's
    own ``Uuid.randomUuid`` skips such ids for the same reason).
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _check_secret(what: str, value: str) -> None:
    """Refuse what ``server.properties`` or a JAAS line could not carry verbatim."""
    if not value or any(c in value for c in '"\\\n;') or value != value.strip():
        raise BrokerError(f"the {what} must be non-empty and free of quotes, backslashes, "
                          "semicolons, newlines and surrounding spaces")


@dataclass(frozen=True)
class BrokerTls:
    """TLS material of the broker's client listener.

    Args:
        keystore: PKCS12 file holding the broker's private key and certificate chain.
        keystore_password: its password; written to ``server.properties`` (mode 0600)
            and nowhere else, never in ``repr``.
        ca_file: PEM certificate of the CA that signed the broker's certificate. The
            broker's own client and :meth:`LocalKafka.client_config` verify the
            listener (certificate and host name) against it.
    """

    keystore: Path
    keystore_password: str = field(repr=False)
    ca_file: Path

    def __post_init__(self) -> None:
        _check_secret("keystore password", self.keystore_password)
        for path in (self.keystore, self.ca_file):
            if not Path(path).is_file():
                raise BrokerError(f"TLS file {path} does not exist")


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap_servers: str | None
    home: Path

    def line(self) -> str:
        if self.running:
            return f"running: pid {self.pid}, bootstrap {self.bootstrap_servers}, home {self.home}"
        return f"stopped (home {self.home})"


class LocalKafka:
    """Start, stop and inspect a local KRaft broker.

    Args:
        home: folder for config, data and logs.
        port: client (PLAINTEXT) port on 127.0.0.1.
        controller_port: KRaft controller port; default is chosen free at start.
        partitions: default partition count for auto-created topics.
        heap: JVM heap of the broker.
        sasl_plain: ``(user, password)``: the client listener accepts only this user
            with the PLAIN mechanism (the KRaft controller listener stays PLAINTEXT
            on loopback). The password is written to ``server.properties`` (mode
            0600) and nowhere else.
        tls: the client listener speaks TLS with this key and certificate: SSL, or
            SASL_SSL with ``sasl_plain``.

    Example:
        >>> from pathlib import Path
        >>> LocalKafka(Path("/nonexistent-home")).status().running
        False
    """

    def __init__(self, home: Path, *, port: int = 9092, controller_port: int | None = None,
                 partitions: int = 2, heap: str = "512m",
                 sasl_plain: tuple[str, str] | None = None,
                 tls: BrokerTls | None = None) -> None:
        self.home = Path(home).expanduser().resolve()  # the broker runs with cwd = home
        self.port = port
        self.controller_port = controller_port
        self.partitions = partitions
        self.heap = heap
        if sasl_plain is not None:
            _check_secret("SASL user", sasl_plain[0])
            _check_secret("SASL password", sasl_plain[1])
        self.sasl_plain = sasl_plain
        self.tls = tls

    def __repr__(self) -> str:  # never a password
        sasl = f", sasl user {self.sasl_plain[0]!r}" if self.sasl_plain else ""
        return f"LocalKafka({str(self.home)!r}, port={self.port}, {self.security_protocol}{sasl})"

    # -- paths ---------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def info_file(self) -> Path:
        return self.home / "broker.json"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def security_protocol(self) -> str:
        """Protocol of the client listener: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT``
        or ``SASL_SSL``."""
        transport = "SSL" if self.tls else "PLAINTEXT"
        return f"SASL_{transport}" if self.sasl_plain else transport

    def client_config(self) -> dict[str, str]:
        """kafka-python client settings that reach this broker (empty for PLAINTEXT)."""
        config = {}
        if self.tls:
            config["ssl_cafile"] = str(self.tls.ca_file)
        if self.sasl_plain:
            user, password = self.sasl_plain
            config.update({"sasl_mechanism": "PLAIN", "sasl_plain_username": user,
                           "sasl_plain_password": password})
        if config:
            config["security_protocol"] = self.security_protocol
        return config

    # -- status --------------------------------------------------------
    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def status(self) -> BrokerStatus:
        pid = self._read_pid()
        if pid is None or not _pid_alive(pid):
            return BrokerStatus(False, None, None, self.home)
        try:
            info = json.loads(self.info_file.read_text())
            bootstrap = info.get("bootstrap_servers")
        except (OSError, ValueError):
            bootstrap = None
        return BrokerStatus(True, pid, bootstrap, self.home)

    # -- start ---------------------------------------------------------
    def _write_config(self, controller_port: int) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        client = self.security_protocol
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "listeners": f"{client}://127.0.0.1:{self.port},"
                         f"CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"{client}://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": client,
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{client}:{client}",
            "log.dirs": str(self.data_dir.resolve()),
            "num.partitions": str(self.partitions),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            # A record of up to 8 MiB is accepted so oversize input reaches the
            # pipeline's quarantine instead of failing in the producer.
            "message.max.bytes": str(8 * 1024 * 1024),
            "log.retention.check.interval.ms": "10000",
        }
        if self.sasl_plain:
            user, password = self.sasl_plain
            # The broker authenticates to its own listener as the same user.
            props.update({
                "sasl.enabled.mechanisms": "PLAIN",
                "sasl.mechanism.inter.broker.protocol": "PLAIN",
                f"listener.name.{client.lower()}.plain.sasl.jaas.config":
                    "org.apache.kafka.common.security.plain.PlainLoginModule required "
                    f'username="{user}" password="{password}" user_{user}="{password}";',
            })
        if self.tls:
            # The broker's own client checks the listener against the CA, host name included.
            props.update({
                "ssl.keystore.type": "PKCS12",
                "ssl.keystore.location": str(Path(self.tls.keystore).resolve()),
                "ssl.keystore.password": self.tls.keystore_password,
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(Path(self.tls.ca_file).resolve()),
                "ssl.endpoint.identification.algorithm": "https",
            })
        path = self.home / "server.properties"
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.home / "log4j2.properties").write_text(
            _LOG4J2.format(log_file=self.log_file.resolve()))
        return path

    def _java_cmd(self, java: str, classpath: str, main: str, *args: str) -> list[str]:
        return [
            java, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={(self.home / 'log4j2.properties').resolve()}",
            f"-Dkafka.logs.dir={self.log_file.parent.resolve()}",
            "-cp", classpath, main, *args,
        ]

    def start(self, *, timeout: float = 90.0, log=None) -> BrokerStatus:
        """Start the broker and wait until it answers metadata requests."""
        st = self.status()
        if st.running:
            raise BrokerError(f"a broker from {self.home} is already running (pid {st.pid}, "
                              f"{st.bootstrap_servers}); `streamsketch kafka stop` first")
        if port_in_use(self.port):
            raise BrokerError(f"port {self.port} is already in use on 127.0.0.1; stop what holds "
                              "it or choose another with --port")
        controller_port = self.controller_port or free_port()
        if port_in_use(controller_port):
            raise BrokerError(f"controller port {controller_port} is already in use")
        java = jvm.find_java()
        jars = jvm.resolve("kafka", log=log)
        config = self._write_config(controller_port)
        if not (self.data_dir / "meta.properties").exists():
            cluster_id = _cluster_id()
            fmt = subprocess.run(
                self._java_cmd(java, jars.classpath, "kafka.tools.StorageTool", "format",
                               "-t", cluster_id, "-c", str(config), "--ignore-formatted"),
                capture_output=True, text=True, timeout=120)
            if fmt.returncode != 0:
                detail = (fmt.stderr or fmt.stdout).strip().splitlines()
                raise BrokerError("formatting the KRaft storage failed: "
                                  + (detail[-1] if detail else f"exit {fmt.returncode}"))
        out = (self.home / "logs" / "stdout.log").open("ab")
        proc = subprocess.Popen(
            self._java_cmd(java, jars.classpath, "kafka.Kafka", str(config)),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=self.home)
        out.close()
        self.pid_file.write_text(f"{proc.pid}\n")
        self.info_file.write_text(json.dumps({"bootstrap_servers": self.bootstrap_servers,
                                              "port": self.port,
                                              "controller_port": controller_port}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise BrokerError(f"the broker exited with code {proc.returncode} while starting: "
                                  f"{self._last_error_line()} (log: {self.log_file})")
            remaining = deadline - time.monotonic()
            if remaining > 0 and broker_ready(self.bootstrap_servers,
                                              timeout=min(2.0, max(remaining, 0.2)),
                                              client_config=self.client_config()):
                return self.status()
            time.sleep(0.5)
        self.stop()
        raise BrokerError(f"the broker did not become ready within {timeout:.0f} s "
                          f"(log: {self.log_file})")

    def _last_error_line(self) -> str:
        for path in (self.home / "logs" / "stdout.log", self.log_file):
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in reversed(lines):
                if "ERROR" in line or "Exception" in line:
                    return line.strip()[:300]
        return "no error in the log"

    # -- stop ----------------------------------------------------------
    def stop(self, *, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``). False if none ran."""
        pid = self._read_pid()
        if pid is None or not _pid_alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(pid):
            _reap(pid)
            time.sleep(0.2)
        if _pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def broker_ready(bootstrap_servers: str, *, timeout: float = 5.0,
                 client_config: dict[str, str] | None = None) -> bool:
    """True when a broker at ``bootstrap_servers`` answers a metadata request.

    ``client_config``: extra kafka-python settings, e.g. SASL (see
    :meth:`LocalKafka.client_config`).
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    host, _, port = bootstrap_servers.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)),
                                      timeout=min(timeout, 2.0)):
            pass
    except (OSError, ValueError):
        return False
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers,
                                 request_timeout_ms=int(timeout * 1000),
                                 client_id="streamsketch-ready", **(client_config or {}))
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()
