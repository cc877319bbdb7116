"""``produce`` with its defaults, then ``run``: what was produced is aggregated.

Found on the landed tree: ``produce --count 1000000 --rate 0`` started event time at
now and ran it at 1,000 events/s of event time, so ``run`` quarantined 633,072 of the
1M as ``future_time``, without a word beyond the batch lines. Now the times end at now,
and a batch that quarantines most of its records says why in one loud line.
"""

from __future__ import annotations

import datetime as dt

import pytest
from test_faults_process import cli, counted_once, write_spec

pytestmark = pytest.mark.integration

COUNT = 20_000


def _produce(kafka, topic: str, *extra: str) -> None:
    code, _, err = cli(["produce", "--bootstrap-servers", kafka.bootstrap_servers,
                        "--topic", topic, "--count", str(COUNT), "--rate", "0", "--quiet",
                        *extra])
    assert code == 0, err[-2000:]


def test_produce_as_fast_as_possible_then_run_aggregates_everything(kafka, spark, topic_name,
                                                                    tmp_path):
    from streaming.spec.model import load_spec

    _produce(kafka, topic_name)
    spec_file = write_spec(tmp_path / "job", topic_name, kafka.bootstrap_servers,
                           per_trigger=10_000)
    code, _, err = cli(["run", "--spec", str(spec_file), "--available-now"])
    assert code == 0, err[-2000:]
    assert "streamsketch: WARNING" not in err, err[-2000:]
    assert counted_once(spark, load_spec(spec_file)) == (COUNT, 0)


def test_a_batch_of_future_events_says_so_in_one_loud_line(kafka, spark, topic_name, tmp_path):
    from streaming.spec.model import load_spec

    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    _produce(kafka, topic_name, "--start-time", tomorrow)
    spec_file = write_spec(tmp_path / "job", topic_name, kafka.bootstrap_servers,
                           per_trigger=10_000)
    code, _, err = cli(["run", "--spec", str(spec_file), "--available-now"])
    assert code == 0, err[-2000:]
    alarms = [ln for ln in err.splitlines() if ln.startswith("streamsketch: WARNING: batch")]
    assert alarms and all("as future_time: event times run ahead" in ln for ln in alarms), \
        err[-2000:]
    assert counted_once(spark, load_spec(spec_file)) == (0, COUNT)
