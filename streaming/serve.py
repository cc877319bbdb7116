"""``streamsketch serve``: the query answers over HTTP, as JSON, without a JVM.

Routes (``GET`` only)::

    /                          what this server answers: windows, sketches, routes
    /health                    {"ok": true}
    /query/<what>              what = aggregate | distinct | topk | contains | similarity

Query parameters mirror ``streamsketch query``'s options: ``window``, ``from``,
``to`` (ISO-8601, or epoch milliseconds as Grafana's ``${__from}`` gives them),
``group`` (``key=value``, repeatable), ``sketch``, ``k``, ``value``,
``vs_from``, ``vs_to``. The answer is the JSON ``streamsketch query --json``
prints. A bad parameter is HTTP 400, a range holding no window HTTP 404 and a
table not written yet HTTP 503, all as ``{"error": "<one line>"}``.

Every request reads the tables' latest snapshot, so answers follow the pipeline
as it writes. The server binds only where the user says (127.0.0.1 by default)
and starts in :func:`serve_forever` only; importing this module starts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from streaming.errors import ConfigError, StreamsketchError

DEFAULT_PORT = 9110
_PARAMS = {"window", "from", "to", "group", "sketch", "k", "value", "vs_from", "vs_to"}


def _time(text: str | None) -> str | None:
    """ISO-8601 as is; epoch milliseconds (all digits) as ISO-8601."""
    if text is None or not text.isdigit():
        return text
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=int(text))
    return moment.isoformat()


def answer(spec: Any, what: str, params: dict[str, list[str]]) -> dict[str, Any]:
    """The JSON answer to one request (raises ConfigError / NoDataError)."""
    from streaming import query as q

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
    question = q.question(spec, what, window=one("window"), start=_time(one("from")),
                         end=_time(one("to")), groups=params.get("group"),
                         sketch=one("sketch"), k=k, value=one("value"),
                         vs_start=_time(one("vs_from")), vs_end=_time(one("vs_to")))
    q.check_table(spec, "aggregates" if what == "aggregate" else "sketches")
    result = q.ask(q.DeltaSource(spec), spec, question)
    return {"query": what, "window": question.sel.window.name,
            "from": question.sel.start.isoformat() if question.sel.start else None,
            "to": question.sel.end.isoformat() if question.sel.end else None,
            "group": question.sel.groups, **result}


def index(spec: Any) -> dict[str, Any]:
    from streaming.query import QUERIES

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
        from streaming.query import QUERIES, NoDataError, TablesMissingError

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


def _cmd_serve(args: argparse.Namespace) -> int:
    from streaming.query import load_query_spec, shown

    spec = load_query_spec(args.spec, args.tables, table=None)  # tables may come later
    server = QueryServer(spec, args.host, args.port)
    print(f"answering queries on {server.url} (tables under {shown(Path(spec.sink.path))}); "
          "Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from streaming.cli import _port
    from streaming.spec import default_spec_path

    p = sub.add_parser("serve", help="answer queries over HTTP as JSON (no JVM)")
    p.add_argument("--spec", type=Path, default=default_spec_path(),
                   help="pipeline spec (TOML); default: the bundled clickstream spec")
    p.add_argument("--tables", type=Path, default=None, metavar="DIR",
                   help="folder holding the tables (default: the spec's [sink] path)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default %(default)s; 0.0.0.0 for every "
                        "interface)")
    p.add_argument("--port", type=_port_or_zero(_port), default=DEFAULT_PORT,
                   help="port to listen on (default %(default)s; 0 picks a free one)")
    p.set_defaults(func=_cmd_serve)


def _port_or_zero(port: Any) -> Any:
    def parse(text: str) -> int:
        return 0 if text == "0" else port(text)

    return parse
