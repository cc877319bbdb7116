"""The HTTP side of ``streamsketch serve``: routes, parameters, JSON answers and errors.

Kept apart from :mod:`streaming.cli.serve` (the command) so that the ``http.server``
import is paid only by the process that serves. See :mod:`streaming.cli.serve` for
the routes and the status codes.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from streaming.errors import ConfigError, StreamsketchError

_PARAMS = {"window", "from", "to", "group", "sketch", "k", "value", "vs_from", "vs_to", "q",
           "vs_group"}


def _time(text: str | None, name: str) -> str | None:
    """ISO-8601 as is; epoch milliseconds (ASCII digits) as ISO-8601."""
    if text is None or not (text.isascii() and text.isdigit()):
        return text
    try:
        moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=int(text))
    except OverflowError:
        raise ConfigError(f"{name}: {text} epoch milliseconds is past the year 9999") from None
    return moment.isoformat()


def answer(spec: Any, what: str, params: dict[str, list[str]]) -> dict[str, Any]:
    """The JSON answer to one request (raises ConfigError / NoDataError)."""
    from streaming.query import questions as q

    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise ConfigError(f"unknown parameter {unknown[0]!r} (parameters: "
                          f"{', '.join(sorted(_PARAMS))})")

    def one(name: str) -> str | None:
        values = params.get(name)
        if values and len(values) > 1:
            raise ConfigError(f"parameter {name!r} given {len(values)} times")
        return values[0] if values else None

    k_text = one("k")
    try:
        k = int(k_text) if k_text is not None else 10
    except ValueError:
        raise ConfigError(f"k: not a whole number: {k_text!r}") from None
    question = q.question(spec, what, window=one("window"), start=_time(one("from"), "from"),
                         end=_time(one("to"), "to"), groups=params.get("group"),
                         sketch=one("sketch"), k=k, value=one("value"),
                         vs_start=_time(one("vs_from"), "vs_from"),
                         vs_end=_time(one("vs_to"), "vs_to"), qs=one("q"),
                         vs_groups=params.get("vs_group"))
    q.check_table(spec, "aggregates" if what == "aggregate" else "sketches")
    result = q.ask(q.DeltaSource(spec), spec, question)
    return {"query": what, "window": question.sel.window.name,
            "from": question.sel.start.isoformat() if question.sel.start else None,
            "to": question.sel.end.isoformat() if question.sel.end else None,
            "group": question.sel.groups, **result}


def index(spec: Any) -> dict[str, Any]:
    from streaming.query.questions import QUERIES

    return {"routes": ["/health", *(f"/query/{w}" for w in QUERIES)],
            "parameters": sorted(_PARAMS),
            "tables": spec.sink.path,
            "windows": [{"name": w.name, "size_s": w.size_s, "slide_s": w.slide_s,
                         "group_by": list(w.group_by),
                         "metrics": [m.column for m in w.metrics],
                         "sketches": [{"name": s.name, "kind": s.kind, "field": s.field}
                                      for s in w.sketches]} for w in spec.windows]}


class QueryServer(ThreadingHTTPServer):
    """A threading HTTP server answering queries over one spec's tables."""

    daemon_threads = True

    def __init__(self, spec: Any, host: str, port: int) -> None:
        self.spec = spec
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(f"cannot serve queries on {host}:{port}: "
                              f"{exc.strerror or exc}") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: QueryServer
    server_version = "streamsketch"

    def do_GET(self) -> None:  # noqa: N802 - http.server's API
        from streaming.query.questions import QUERIES, NoDataError, TablesMissingError

        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        try:
            params = parse_qs(url.query, keep_blank_values=True, strict_parsing=False)
            if path == "/":
                self._send(200, index(self.server.spec))
            elif path == "/health":
                self._send(200, {"ok": True})
            elif path.startswith("/query/") and path.count("/") == 2:
                what = path.rsplit("/", 1)[1]
                if what not in QUERIES:
                    self._send(404, {"error": f"no query {what!r} (queries: "
                                              f"{', '.join(QUERIES)})"})
                    return
                self._send(200, answer(self.server.spec, what, params))
            else:
                self._send(404, {"error": f"no route {path!r}; see /"})
        except NoDataError as exc:
            self._send(404, {"error": str(exc)})
        except TablesMissingError as exc:
            self._send(503, {"error": str(exc)})
        except StreamsketchError as exc:
            self._send(400, {"error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - a bug: say so, keep serving
            print(f"streamsketch serve: {self.path}: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)
            self._send(500, {"error": f"internal error: {type(exc).__name__}"})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: dashboards poll; errors of the server itself go to stderr above."""


def start(spec: Any, host: str, port: int) -> tuple[QueryServer, threading.Thread]:
    """A server answering in a background thread (for tests and embedding)."""
    server = QueryServer(spec, host, port)
    thread = threading.Thread(target=server.serve_forever, name="streamsketch-serve",
                              daemon=True)
    thread.start()
    return server, thread
