"""Subcommands beyond the foundation (``jars``, ``kafka``), registered with the CLI."""

from __future__ import annotations

import argparse
import sys

from streaming.cli import default_home


def _cmd_demo(args: argparse.Namespace) -> int:
    from streaming import jvm
    from streaming.kafka_broker import LocalKafka

    for which in jvm.ARTIFACT_SETS:
        jvm.resolve(which, log=lambda m: print(m, file=sys.stderr))
    broker = LocalKafka(args.home / "kafka", port=args.port)
    status = broker.status()
    if not status.running:
        status = broker.start()
    print(f"kafka {status.line()}")
    print("pipeline not built yet: the broker is up and the JVM jars are cached; "
          "stop the broker with `streamsketch kafka stop`")
    return 0


def _register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="local broker + generator + pipeline with a live summary")
    p.add_argument("--home", type=__import__("pathlib").Path, default=default_home())
    p.add_argument("--port", type=int, default=9092)
    p.set_defaults(func=_cmd_demo)


REGISTRARS = [_register]
