"""The README's tour, as written, in its order, right after the demo, on a fresh folder.

The commands come from the README itself (its "The first ten minutes" section), so the test follows
the text a newcomer follows: ``make demo``'s ``streamsketch demo`` first (for a short
while, on the same broker home), then every command of the tour. Two changes only,
both to keep off ports of this machine's other programs: the broker listens on a free
port (``kafka start --port P``, ``demo --port P``; the other commands reach it through
``KAFKA_BOOTSTRAP_SERVERS``, as the spec and ``--help`` say), and the HTTP request
goes through Python's ``urllib`` rather than the ``curl`` binary.

The answers are checked against the generator's own events (same seed, same flags),
not against another run: the distinct users of the tour's hour within the
HyperLogLog's error, from the four minutely windows the events span, and the hourly
counts per country exact. After the demo, a tour that met the demo's events (late
records, extra windows) would fail both.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TIMEOUT_S = 600


def tour_blocks() -> list[list[str]]:
    """The shell blocks of the README's "The first ten minutes" section, one command a line
    (continuations joined, comments and blank lines dropped)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## The first ten minutes\n", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        joined = body.replace("\\\n", " ")
        lines = [re.sub(r"\s+#.*$", "", ln).strip() for ln in joined.splitlines()]
        blocks.append([ln for ln in lines if ln and not ln.startswith("#")])
    return blocks


def _free_port() -> int:
    from streaming.kafka.broker import free_port

    return free_port()


class Shell:
    """Runs the tour's commands in ``cwd`` with the venv's ``streamsketch`` first on PATH."""

    def __init__(self, cwd: Path, port: int) -> None:
        self.cwd = cwd
        self.port = port
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("STREAMSKETCH_HOME", "KAFKA_BOOTSTRAP_SERVERS")}
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{port}"
        self.background: subprocess.Popen | None = None
        self.outputs: list[tuple[str, str, str]] = []

    def argv(self, line: str) -> list[str]:
        argv = shlex.split(line)
        if argv[:3] == ["streamsketch", "kafka", "start"]:
            argv += ["--port", str(self.port)]
        return argv

    def run(self, line: str) -> str:
        if line == "source .venv/bin/activate":
            return ""  # PATH already leads to the venv
        if line.endswith(" &"):
            self.background = subprocess.Popen(self.argv(line[:-2]), cwd=self.cwd,
                                               env=self.env, stdout=subprocess.PIPE,
                                               stderr=subprocess.PIPE, text=True)
            return ""
        if line.startswith("curl "):
            return self.curl(shlex.split(line)[1])
        if line == "kill %1":
            assert self.background is not None, "kill %1 with nothing in the background"
            self.background.send_signal(signal.SIGTERM)
            out, err = self.background.communicate(timeout=60)
            self.outputs.append((line, out, err))
            assert "Traceback" not in err, err
            assert self.background.returncode == 0, err
            assert err.rstrip().endswith("serve: stopped on SIGTERM"), err
            return out
        proc = subprocess.run(self.argv(line), cwd=self.cwd, env=self.env, text=True,
                              capture_output=True, timeout=TIMEOUT_S)
        self.outputs.append((line, proc.stdout, proc.stderr))
        assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr, f"{line}\n{proc.stderr[-3000:]}"
        assert "WARNING: batch" not in proc.stderr, f"{line}\n{proc.stderr[-3000:]}"
        return proc.stdout

    def curl(self, url: str) -> str:
        deadline = time.monotonic() + 60
        while True:  # the server is up once it answers
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    return r.read().decode()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)


def _produced(line: str) -> list:
    """The records the tour's ``produce`` line sends (its flags, the CLI's defaults)."""
    from streaming.cli.main import build_parser
    from streaming.cli.produce import event_start
    from streaming.kafka.generator import GeneratorConfig, generate

    args = build_parser().parse_args(shlex.split(line)[1:])
    event_rate = args.event_rate or (args.rate if args.rate > 0 else None) or 1000.0
    start = event_start(args.start_time, args.rate or None, args.count, event_rate,
                        dt.datetime.now(dt.UTC))
    config = GeneratorConfig(seed=args.seed, rate=event_rate, start_time=start,
                             users=args.users, pages=args.pages, late=args.late,
                             late_by=args.late_by, malformed=args.malformed,
                             out_of_order=args.out_of_order, max_disorder=args.max_disorder)
    return list(generate(config, args.count))


def _at(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def test_the_tour_as_written_right_after_the_demo(tmp_path):
    from streaming.spec.model import load_spec

    blocks = tour_blocks()
    tour = blocks[0]
    assert tour[0] == "source .venv/bin/activate" and tour[-1] == "streamsketch kafka stop"
    work = tmp_path / "clone"
    shutil.copytree(ROOT / "streaming" / "specs", work / "streaming" / "specs")
    shell = Shell(work, _free_port())

    # `make demo` first, on the same home and broker port, as a newcomer would
    demo = subprocess.run([str(BIN / "streamsketch"), "demo", "--port", str(shell.port),
                           "--duration", "20"], cwd=work, env=shell.env, text=True,
                          capture_output=True, timeout=TIMEOUT_S)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert re.search(r"batch \d+: [1-9]", demo.stdout + demo.stderr), demo.stdout[-2000:]

    answers = {}
    try:
        for line in tour:
            answers[line] = shell.run(line)
            if line.startswith("streamsketch kafka stop"):
                break
            if line.startswith("streamsketch query quantile"):
                # the later blocks need the broker: the HTTP answers, then the backfill
                for later in blocks[1:]:
                    for more in later:
                        answers[more] = shell.run(more)
    finally:
        if shell.background is not None and shell.background.poll() is None:
            shell.background.kill()
        subprocess.run([str(BIN / "streamsketch"), "kafka", "stop"], cwd=work, env=shell.env,
                       capture_output=True, timeout=120)

    produce = next(ln for ln in tour if ln.startswith("streamsketch produce"))
    records = _produced(produce)
    spec = load_spec(work / "streaming" / "specs" / "clickstream.toml")
    events = [r.event for r in records if r.event is not None]

    # distinct users of the tour's hour: exact from the generator, HLL-close from the tables
    q_line = next(ln for ln in tour if ln.startswith("streamsketch query distinct"))
    q_args = shlex.split(q_line)
    lo, hi = (_at(q_args[q_args.index(flag) + 1]) for flag in ("--from", "--to"))
    in_range = [e for e in events if lo <= _at(e["ts"]) < hi]
    exact = len({e["user_id"] for e in in_range})
    minutes = len({_at(e["ts"]).replace(second=0, microsecond=0) for e in in_range})
    m = re.search(r"distinct ≈ ([\d,]+) .*; (\d+) sketches merged", answers[q_line])
    assert m, answers[q_line]
    estimate, merged = int(m.group(1).replace(",", "")), int(m.group(2))
    assert merged == minutes, (merged, minutes)
    precision = next(s.param_dict["precision"] for w in spec.windows if w.name == "minutely"
                     for s in w.sketches if s.name == "users")
    sigma = 1.04 / (2 ** precision) ** 0.5
    assert abs(estimate - exact) <= 4 * sigma * exact, (estimate, exact)

    # the same answer over HTTP
    curl = next(ln for ln in blocks[1] if ln.startswith("curl "))
    assert round(json.loads(answers[curl])["estimate"]) == estimate

    # counts per country over all the hourly windows, exact: a query with no range
    # merges the whole hours of a sliding window (each event once), late events' included
    agg_line = next(ln for ln in tour if ln.startswith("streamsketch query aggregate"))
    counted = {}
    for row in answers[agg_line].splitlines():
        head, body = row.split(": ", 1)
        fields = dict(kv.split("=", 1) for kv in body.split(", "))
        counted[head] = (int(fields["windows"]), int(fields["count"]))
    hours: dict[str, set] = {}
    for e in events:
        hours.setdefault(f"country={e['country']}", set()).add(e["ts"][:13])
    expected = {c: (len(h), Counter(f"country={e['country']}" for e in events)[c])
                for c, h in hours.items()}
    assert counted == expected
