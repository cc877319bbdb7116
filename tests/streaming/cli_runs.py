"""``streamsketch run --available-now`` in a process of its own, for the broker tests.

The run gets the test process's environment without ``KAFKA_BOOTSTRAP_SERVERS`` (the
spec names the broker), plus ``extra_env``; it runs in its own process group, which is
killed, with the test failed, if it does not end in time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_available_now(spec_file: Path, timeout: float,
                      extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the spec to the end of what is available; stdout and stderr are captured."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(extra_env or {})
    proc = subprocess.Popen([sys.executable, "-m", "streaming.cli", "run", "--spec",
                             str(spec_file), "--available-now", "--master", "local[2]"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"`streamsketch run` did not end within {timeout:.0f} s; stderr tail: "
                    f"{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
