"""``streamsketch serve``: the query answers over HTTP, as JSON, without a JVM.

Routes (``GET`` only)::

    /                          what this server answers: windows, sketches, routes
    /health                    {"ok": true}
    /query/<what>              what = aggregate | distinct | topk | contains | similarity
                                      | quantile | overlap

Query parameters mirror ``streamsketch query``'s options: ``window``, ``from``,
``to`` (ISO-8601, or epoch milliseconds as Grafana's ``${__from}`` gives them),
``group`` (``key=value``, repeatable), ``sketch``, ``k``, ``value``,
``vs_from``, ``vs_to``, ``vs_group``, ``q``. The answer is the JSON ``streamsketch query --json``
prints. A bad parameter is HTTP 400, a range holding no window HTTP 404 and a
table not written yet HTTP 503, all as ``{"error": "<one line>"}``.

Every request reads the tables' latest snapshot, so answers follow the pipeline
as it writes. The server binds only where the user says (127.0.0.1 by default)
and starts in :func:`serve_forever` only; importing this module starts nothing.
Ctrl-C or SIGTERM stops it: one line, exit code 0.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

DEFAULT_PORT = 9110


def start(spec: Any, host: str, port: int) -> tuple[Any, Any]:
    """A server answering in a background thread (for tests and embedding)."""
    from streaming.query.api import start as start_api

    return start_api(spec, host, port)


def _cmd_serve(args: argparse.Namespace) -> int:
    from streaming.cli.signals import StopSignals
    from streaming.query.api import QueryServer
    from streaming.query.questions import load_query_spec, shown

    spec = load_query_spec(args.spec, args.tables, table=None)  # tables may come later
    server = QueryServer(spec, args.host, args.port)
    print(f"answering queries on {server.url} (tables under {shown(Path(spec.sink.path))}); "
          "Ctrl-C stops", file=sys.stderr, flush=True)
    # the server answers in a thread; this one waits for Ctrl-C or SIGTERM (the
    # answers read tables only: stopping in the middle of one loses nothing)
    thread = threading.Thread(target=server.serve_forever, name="streamsketch-serve",
                              daemon=True)
    try:
        with StopSignals() as term:
            thread.start()
            while not term.event.wait(0.5):
                pass
        print(f"serve: stopped on {term.name}", file=sys.stderr, flush=True)
    finally:
        server.shutdown()
        server.server_close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from streaming.cli.common import local_dir, port
    from streaming.spec.model import default_spec_path

    p = sub.add_parser("serve", help="answer queries over HTTP as JSON (no JVM)")
    p.add_argument("--spec", type=Path, default=default_spec_path(),
                   help="pipeline spec (TOML); default: the bundled clickstream spec")
    p.add_argument("--tables", type=local_dir, default=None, metavar="DIR",
                   help="folder holding the tables (default: the spec's [sink] path)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default %(default)s; 0.0.0.0 for every "
                        "interface)")
    p.add_argument("--port", type=_port_or_zero(port), default=DEFAULT_PORT,
                   help="port to listen on (default %(default)s; 0 picks a free one)")
    p.set_defaults(func=_cmd_serve)


def _port_or_zero(port: Any) -> Any:
    def parse(text: str) -> int:
        return 0 if text == "0" else port(text)

    return parse
