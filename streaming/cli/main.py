"""The ``streamsketch`` command line.

Every user error is one line on stderr and exit code 2; ``--help`` works on every
command. Subcommands live in their own modules and register themselves here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sketches.errors import SketchError
from streaming.cli.common import Parser as _Parser
from streaming.cli.common import info as _info
from streaming.cli.common import port as _port
from streaming.errors import ConfigError, StreamsketchError
from streaming.runtime.home import default_home

EXIT_OK = 0


# -- jars ------------------------------------------------------------------
def _cmd_jars(args: argparse.Namespace) -> int:
    from streaming.runtime import jvm

    sets = jvm.ARTIFACT_SETS if args.set == "all" else (args.set,)
    report: dict[str, dict[str, Any]] = {}
    for which in sets:
        resolved = jvm.resolve(which, offline_only=args.offline, log=_info)
        report[which] = {"folder": str(resolved.folder), "jars": len(resolved.jars)}
    if "spark" in sets:
        from streaming.runtime.session import write_class_archive

        archive = write_class_archive(log=_info)
        report["spark"]["class_archive"] = None if archive is None else str(archive)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for which, info in report.items():
            print(f"{which}: {info['jars']} jars verified in {info['folder']}")
    return EXIT_OK


# -- kafka -----------------------------------------------------------------
def _broker(args: argparse.Namespace):
    from streaming.kafka.broker import LocalKafka

    return LocalKafka(args.home / "kafka", port=args.port)


def _cmd_kafka(args: argparse.Namespace) -> int:
    broker = _broker(args)
    if args.action == "start":
        status = broker.start(timeout=args.timeout, log=_info)
        print(f"kafka {status.line()}")
        print(f"logs: {broker.log_file}")
        return EXIT_OK
    if args.action == "stop":
        stopped = broker.stop()
        print("kafka stopped" if stopped else "kafka was not running")
        return EXIT_OK
    status = broker.status()
    if args.json:
        print(json.dumps({"running": status.running, "pid": status.pid,
                          "bootstrap_servers": status.bootstrap_servers,
                          "home": str(status.home)}))
    else:
        print(f"kafka {status.line()}")
    return EXIT_OK if status.running else 3


Registrar = Callable[[argparse._SubParsersAction], None]


def _register_builtin(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jars", help="resolve and verify the JVM jars (once; then offline)")
    p.add_argument("--set", choices=["all", "spark", "kafka"], default="all")
    p.add_argument("--offline", action="store_true", help="fail instead of downloading")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_jars)

    p = sub.add_parser("kafka", help="run the embedded single-node Kafka broker (KRaft)")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--home", type=Path, default=default_home(),
                   help="state folder; the broker uses HOME/kafka (default: %(default)s)")
    p.add_argument("--port", type=_port, default=9092, help="client port on 127.0.0.1")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    p.add_argument("--json", action="store_true", help="machine-readable status")
    p.set_defaults(func=_cmd_kafka)


def _registrars() -> list[Registrar]:
    regs: list[Registrar] = [_register_builtin]
    from streaming.cli import commands, serve

    regs.extend(commands.REGISTRARS)
    regs.append(serve.register)
    return regs


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="streamsketch",
                     description="Windowed aggregates and mergeable sketches over Kafka streams, "
                                 "into Delta Lake.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for register in _registrars():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command: user errors become one line and their exit code."""
    try:
        return int(args.func(args) or 0)
    except StreamsketchError as exc:
        print(f"streamsketch: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except SketchError as exc:
        # stored sketches that cannot be read or merged (a table holding two quantile
        # mappings, damaged bytes): the data's fault, not the arguments'
        print(f"streamsketch: error: stored sketches: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("streamsketch: interrupted", file=sys.stderr)
        return 130


def require(condition: bool, message: str) -> None:
    """Raise a :class:`ConfigError` (one line, exit 2) unless ``condition``."""
    if not condition:
        raise ConfigError(message)


if __name__ == "__main__":
    sys.exit(main())
