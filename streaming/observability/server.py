"""``/metrics`` served from a child process, so scrapers never take the driver's GIL.

The driver binds the listening socket (a busy port is a :class:`ConfigError` at once,
port 0 picks a free one) and hands it to a small stdlib-only Python process that
accepts, parses and answers every HTTP request. That process asks the driver for a
fresh exposition over a socket pair at most once per ``max_age`` seconds, however
many scrapers there are; between renders every scraper gets the same bytes. The
driver's side is one thread blocked in ``recv`` (no GIL held) that renders on
request, so ten scrapers cost the pipeline what one does: one render per
``max_age``.

Either side ending ends the other: the child exits when the driver's end of the pair
closes (including a SIGKILL of the driver), and the driver counts a child that died
under it in ``streamsketch_metrics_errors_total{where="server"}``.

The child adds two series of its own to every answer:
``streamsketch_metrics_snapshot_age_seconds`` (how old the rendered bytes are) and
``streamsketch_metrics_scrapes_total`` (requests it answered).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from streaming.errors import ConfigError

#: snapshot length prefix on the driver → child stream
_LEN = struct.Struct("!Q")
#: how long a scrape waits for a fresh render before it takes the previous bytes
WAIT_FOR_RENDER_S = 0.5
#: how long the first scrape waits for the first render (there are no bytes before it)
FIRST_RENDER_S = 10.0


class SnapshotServer:
    """The driver's handle on the serving process: ``server_port``, ``shutdown()``.

    Args:
        render: returns the exposition bytes; called on a thread of the driver.
        host: address to bind.
        port: port to bind; 0 picks a free one.
        content_type: the ``Content-Type`` of the answers.
        max_age: seconds a rendered exposition is served before a new one is asked for.
        on_error: called (no arguments) when ``render`` raised or the child died.

    Raises:
        ConfigError: the address cannot be bound (e.g. the port is in use).
    """

    def __init__(self, render: Callable[[], bytes], host: str, port: int, *,
                 content_type: str, max_age: float,
                 on_error: Callable[[], None] | None = None) -> None:
        self._render = render
        self._on_error = on_error or (lambda: None)
        self._stopping = threading.Event()
        self.renders = 0
        listener = _bind(host, port)
        self.server_address = listener.getsockname()[:2]
        self.server_port: int = self.server_address[1]
        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "streaming.observability.server",
                 "--listen-fd", str(listener.fileno()), "--driver-fd", str(theirs.fileno()),
                 "--max-age", repr(max_age), "--content-type", content_type],
                pass_fds=(listener.fileno(), theirs.fileno()), stdin=subprocess.DEVNULL,
                cwd=_package_root(), env=_child_env())
        except OSError as exc:
            ours.close()
            raise ConfigError(f"cannot start the metrics server process: {exc}") from None
        finally:
            listener.close()  # the child holds it now
            theirs.close()
        self._conn = ours
        self._thread = threading.Thread(target=self._answer, name="streamsketch-metrics",
                                        daemon=True)
        self._thread.start()

    def _answer(self) -> None:
        """Render whenever the child asks; ends when the child's end closes."""
        last = b""
        while True:
            try:
                asked = self._conn.recv(1)  # blocks without the GIL
            except OSError:
                asked = b""
            if not asked:
                break
            try:
                last = self._render()
                self.renders += 1
            except Exception:  # noqa: BLE001 - the previous bytes are still an answer
                self._on_error()
            try:
                self._conn.sendall(_LEN.pack(len(last)) + last)
            except OSError:
                break
        if not self._stopping.is_set():
            self._on_error()  # the serving process ended under us

    def shutdown(self) -> None:
        """Stop the serving process and wait for it (idempotent)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        try:
            self._conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._conn.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._thread.join(5)

    @property
    def alive(self) -> bool:
        """Whether the serving process is running."""
        return self._proc.poll() is None


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
                          ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        # a deep queue: ten scrapers connecting at once must not overflow it
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
                          ) from None
    return sock


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = _package_root()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


# -- the serving process ----------------------------------------------------------------
class _Snapshots:
    """The newest exposition, fetched from the driver when older than ``max_age``.

    One thread reads the driver's end all the time: the answers to our requests, and
    the end of the stream when the driver goes (exited, killed), which ends us.
    """

    def __init__(self, conn: socket.socket, max_age: float) -> None:
        self._conn = conn
        self._max_age = max_age
        self._cond = threading.Condition()
        self._body = b""
        self._at = -1.0          # monotonic time of the newest bytes; < 0: none yet
        self._asked = False      # a request is on its way to the driver
        self.closed = threading.Event()
        threading.Thread(target=self._read, name="driver", daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                head = _recv_exactly(self._conn, _LEN.size)
                body = _recv_exactly(self._conn, _LEN.unpack(head)[0])
                with self._cond:
                    self._body, self._at, self._asked = body, time.monotonic(), False
                    self._cond.notify_all()
        except (OSError, EOFError):
            pass
        self.closed.set()
        with self._cond:
            self._cond.notify_all()

    def get(self) -> tuple[bytes, float]:
        """The bytes to answer with and their age in seconds."""
        with self._cond:
            if self._at < 0 or time.monotonic() - self._at >= self._max_age:
                if not self._asked and not self.closed.is_set():
                    try:
                        self._conn.sendall(b"?")
                        self._asked = True
                    except OSError:
                        pass
                seen = self._at
                wait = FIRST_RENDER_S if seen < 0 else WAIT_FOR_RENDER_S
                self._cond.wait_for(lambda: self._at != seen or self.closed.is_set(), wait)
            age = time.monotonic() - self._at if self._at >= 0 else 0.0
            return self._body, age


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        part = conn.recv(min(n - got, 1 << 20))
        if not part:
            raise EOFError("the driver closed the connection")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _serve(listen_fd: int, driver_fd: int, max_age: float, content_type: str) -> int:
    import socketserver
    from http.server import BaseHTTPRequestHandler

    driver = socket.socket(fileno=driver_fd)
    snapshots = _Snapshots(driver, max_age)
    scrapes = [0]
    count = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's API
            body, age = snapshots.get()
            with count:
                scrapes[0] += 1
                n = scrapes[0]
            body += (
                b"# HELP streamsketch_metrics_snapshot_age_seconds Age of the rendered "
                b"exposition this scrape got\n"
                b"# TYPE streamsketch_metrics_snapshot_age_seconds gauge\n"
                b"streamsketch_metrics_snapshot_age_seconds %.3f\n"
                b"# HELP streamsketch_metrics_scrapes_total Scrapes the metrics server "
                b"answered\n"
                b"# TYPE streamsketch_metrics_scrapes_total counter\n"
                b"streamsketch_metrics_scrapes_total %d\n" % (age, n))
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
        daemon_threads = True

    listener = socket.socket(fileno=listen_fd)
    server = Server(listener.getsockname(), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = listener

    def stop_with_driver() -> None:
        snapshots.closed.wait()
        server.shutdown()

    threading.Thread(target=stop_with_driver, daemon=True).start()
    server.serve_forever(poll_interval=0.5)
    server.server_close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the serving process (started by :class:`SnapshotServer`)."""
    p = argparse.ArgumentParser(prog="python -m streaming.observability.server")
    p.add_argument("--listen-fd", type=int, required=True)
    p.add_argument("--driver-fd", type=int, required=True)
    p.add_argument("--max-age", type=float, required=True)
    p.add_argument("--content-type", required=True)
    a = p.parse_args(argv)
    # Ctrl-C reaches the whole process group: the driver decides when this ends
    # (its end of the pair closing), so no KeyboardInterrupt traceback here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return _serve(a.listen_fd, a.driver_fd, a.max_age, a.content_type)


if __name__ == "__main__":
    sys.exit(main())
