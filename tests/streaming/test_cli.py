"""CLI conventions: one-line errors with exit code 2, --help everywhere."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streaming.cli.main import build_parser, main

CLI = [sys.executable, "-m", "streaming.cli"]


@pytest.mark.parametrize("argv", [
    ["kafka", "bogus"],
    ["kafka", "start", "--port", "70000"],
    ["kafka", "start", "--port", "abc"],
    ["nosuchcommand"],
    [],
    ["run", "--spec", "streaming/specs/clickstream.toml", "--driver-memory", "2x"],
    ["run", "--spec", "streaming/specs/clickstream.toml", "--driver-memory", "0g"],
])
def test_bad_arguments_are_one_line_and_exit_2(argv):
    proc = subprocess.run(CLI + argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("streamsketch")


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: streamsketch " + command in capsys.readouterr().out


def test_user_error_is_one_line(monkeypatch, capsys):
    from streaming.errors import JavaNotFoundError
    from streaming.runtime import jvm

    def no_java():
        raise JavaNotFoundError("no Java runtime found: install Java 17+")

    monkeypatch.setattr(jvm, "find_java", no_java)
    assert main(["jars", "--set", "kafka"]) == 2
    err = capsys.readouterr().err
    assert err == "streamsketch: error: no Java runtime found: install Java 17+\n"


@pytest.mark.parametrize("text,size", [("512m", "512m"), ("2G", "2g"), (" 1g ", "1g")])
def test_driver_memory_takes_jvm_sizes(text, size):
    args = build_parser().parse_args(["run", "--spec", "s.toml", "--driver-memory", text])
    assert args.driver_memory == size


def test_stored_sketches_that_cannot_merge_are_one_line_and_exit_1(capsys):
    import argparse

    import sketches
    from streaming.cli.main import run_command

    def merge_two_mappings(_args):
        a = sketches.QuantileSketch(0.01).update([1.0])
        b = sketches.QuantileSketch(0.01, mapping="cells").update([2.0])
        a.merge(b)

    assert run_command(argparse.Namespace(func=merge_two_mappings)) == 1
    err = capsys.readouterr().err
    assert err.startswith("streamsketch: error: stored sketches: ") and err.count("\n") == 1
