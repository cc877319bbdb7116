"""Event logs (streaming.logs) and ``streamsketch replay`` / ``record``.

Unit tests read logs written here, in every format, good and bad. The
integration tests publish to a real broker and read the topic back.
"""

from __future__ import annotations

import argparse
import collections
import csv
import gzip
import json
import signal
import subprocess
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streaming.cli.common import Parser
from streaming.cli.replay import register
from streaming.errors import ConfigError, LogFormatError
from streaming.kafka.generator import GeneratorConfig, generate
from streaming.kafka.producer import produce
from streaming.logs.formats import detect_format, parse_time_ms
from streaming.logs.pacing import Pacer, pace_schedule
from streaming.logs.reader import KEEP_LINES, LogReader, ReadOptions
from streaming.logs.record import record
from streaming.logs.replay import Landed, ReplayConfig, ReplayState, replay
from streaming.logs.writer import LogWriter

START = datetime(2026, 11, 23, 10, tzinfo=UTC)
START_MS = int(START.timestamp() * 1000)
KEYED = ReadOptions(key_field="user_id", time_field="ts")
PACED = ReadOptions(key_field="user_id", time_field="ts", require_time=True)


def _event(i: int, seconds: float = 0.0, **extra) -> dict:
    ts = (START + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")
    return {"event_id": f"e{i}", "ts": ts.replace("+00:00", "Z"), "user_id": f"u{i % 7}",
            "amount": i * 1.5, **extra}


def _line(event: dict) -> bytes:
    # Spaces after separators: a re-serializing reader would not give these bytes back.
    return json.dumps(event).encode()


def _events(n: int) -> list[dict]:
    return [_event(i, i * 0.5) for i in range(n)]


def _read(path: Path, options: ReadOptions = KEYED) -> tuple[list, LogReader]:
    with LogReader(path, options) as reader:
        return list(reader), reader


# -- formats ----------------------------------------------------------------------
def test_jsonl_yields_each_line_byte_for_byte_with_key_time_and_line(tmp_path):
    events = _events(5)
    raw = [_line(e) for e in events]
    path = tmp_path / "log.jsonl"
    # CRLF on one line, a blank line, and no newline at the end.
    path.write_bytes(raw[0] + b"\n" + raw[1] + b"\r\n\n" + b"\n".join(raw[2:]))
    records, reader = _read(path)
    assert [r.line for r in records] == [1, 2, 4, 5, 6]
    assert [r.value for r in records] == raw
    assert [r.key for r in records] == [e["user_id"].encode() for e in events]
    assert [r.time_ms for r in records] == [START_MS + 500 * i for i in range(5)]
    assert reader.bad.counts == {} and reader.blank_lines == 1


def test_gzip_reads_like_the_plain_file_even_as_several_members(tmp_path):
    raw = b"".join(_line(e) + b"\n" for e in _events(300))
    (tmp_path / "a.jsonl").write_bytes(raw)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(raw[:5000]) + gzip.compress(raw[5000:]))
    plain, _ = _read(tmp_path / "a.jsonl")
    zipped, reader = _read(tmp_path / "a.jsonl.gz")
    assert zipped == plain and len(plain) == 300 and reader.bad.counts == {}


def test_parquet_rows_come_in_order_as_compact_json_across_row_groups(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 20_000
    ts = [START + timedelta(milliseconds=250 * i) for i in range(n)]
    table = pa.table({"user_id": [f"u{i % 7}" for i in range(n)], "ts": ts,
                      "n": list(range(n)), "amount": [None if i % 3 else i / 4 for i in range(n)]})
    pq.write_table(table, tmp_path / "log.parquet", row_group_size=3000)
    records, reader = _read(tmp_path / "log.parquet")
    assert len(records) == n and [r.line for r in records[:3]] == [1, 2, 3]
    assert records[4].value == b'{"user_id":"u4","ts":"2026-11-23T10:00:01.000Z","n":4,' \
                               b'"amount":null}'
    assert records[3].value.endswith(b'"amount":0.75}')
    assert [r.time_ms for r in records[:2]] == [START_MS, START_MS + 250]
    assert records[-1].key == f"u{(n - 1) % 7}".encode() and reader.bytes_read() == reader.size


def test_csv_rows_are_typed_json_and_keep_file_line_numbers(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text('user_id,ts,amount,zip,note,ok\n'
                    'u1,2026-11-23T10:00:00Z,12.5,007,"two\nlines",true\n'
                    'u2,2026-11-23T10:00:01Z,,123,plain,false\n', newline="")
    records, _ = _read(path)
    assert [r.line for r in records] == [2, 4]  # the first row spans lines 2-3
    assert json.loads(records[0].value) == {"user_id": "u1", "ts": "2026-11-23T10:00:00Z",
                                            "amount": 12.5, "zip": "007",
                                            "note": "two\nlines", "ok": True}
    assert json.loads(records[1].value)["amount"] is None
    assert records[1].key == b"u2" and records[1].time_ms == START_MS + 1000


def test_format_comes_from_the_name_unless_given(tmp_path):
    assert [detect_format(n) for n in ("a.json", "a.jsonl", "b.gz", "c.parquet", "d.csv")] == \
        ["jsonl", "jsonl", "jsonl.gz", "parquet", "csv"]
    with pytest.raises(ConfigError, match="--format"):
        detect_format("events.txt")
    path = tmp_path / "events.txt"
    path.write_bytes(gzip.compress(_line(_event(1)) + b"\n"))
    records, _ = _read(path, ReadOptions(format="jsonl.gz", key_field="user_id"))
    assert records[0].key == b"u1"


def test_epoch_times_parse_per_the_option():
    assert parse_time_ms(1_795_428_000_123, "epoch_ms") == 1_795_428_000_123
    assert parse_time_ms("1795428000.25", "epoch_s") == 1_795_428_000_250
    assert parse_time_ms("2026-11-23T10:00:00", "iso8601") == START_MS  # naive is UTC
    assert parse_time_ms("2026-11-23T11:00:00+01:00", "iso8601") == START_MS
    assert parse_time_ms(True, "epoch_ms") is None and parse_time_ms(5, "iso8601") is None


# -- recorded envelopes -------------------------------------------------------------------
def test_recorded_envelopes_give_back_exact_key_and_value_bytes(tmp_path):
    cases = [(b"u1", b'{"a": 1}'), (None, b"\xff\xfe not utf-8"), (b"\x00\xff", None),
             (b"k", b""), (b"k2", '{"page":"/p/caf\u00e9"}'.encode())]
    for name in ("rec.jsonl", "rec.jsonl.gz"):
        with LogWriter(tmp_path / name) as writer:
            for i, (k, v) in enumerate(cases):
                writer.write(key=k, value=v, timestamp_ms=START_MS + i, topic="t", partition=0,
                             offset=i)
        records, reader = _read(tmp_path / name, PACED)
        assert [(r.key, r.value) for r in records] == cases
        assert [r.time_ms for r in records] == [START_MS + i for i in range(len(cases))]
        assert reader.bad.counts == {}


def test_recordings_are_not_overwritten_unless_asked(tmp_path):
    (tmp_path / "rec.jsonl").write_text("keep")
    with pytest.raises(ConfigError, match="--force"):
        LogWriter(tmp_path / "rec.jsonl")
    LogWriter(tmp_path / "rec.jsonl", overwrite=True).close()
    assert (tmp_path / "rec.jsonl").read_text() == ""


def test_an_envelope_of_another_version_is_an_error_not_a_guess(tmp_path):
    path = tmp_path / "rec.jsonl"
    path.write_text('{"_streamsketch_record":2,"key":null,"value":"x"}\n')
    with pytest.raises(LogFormatError, match="version 2"):
        _read(path)


# -- bad input --------------------------------------------------------------------------------
def _mixed_lines() -> list[bytes]:
    lines = [_line(e) for e in _events(12)]
    lines[2] = b"not json at all"
    lines[4] = _line(_event(4, page="/p/caf\x00")).replace(b"\\u0000", b"\xe9")
    lines[6] = b"[1, 2, 3]"
    lines[8] = _line({k: v for k, v in _event(8).items() if k != "ts"})
    lines[10] = _line(_event(10, 0)).replace(b"2026-11-23T10", b"yesterday T10")
    return lines


def test_bad_lines_are_counted_with_line_numbers_and_published_as_is(tmp_path):
    lines = _mixed_lines()
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    records, reader = _read(path, PACED)
    assert [r.value for r in records] == lines  # nothing dropped, nothing rewritten
    assert reader.bad.counts == {"invalid_json": 1, "invalid_utf8": 1, "not_an_object": 1,
                                 "missing_time": 1, "bad_time": 1}
    assert reader.bad.lines == {"invalid_json": [3], "invalid_utf8": [5], "not_an_object": [7],
                                "missing_time": [9], "bad_time": [11]}
    assert {r.line: r.bad for r in records if r.bad} == {3: "invalid_json", 5: "invalid_utf8",
                                                        7: "not_an_object", 9: "missing_time",
                                                        11: "bad_time"}
    # Without pacing, a missing or bad time is not a defect.
    _, reader = _read(path, KEYED)
    assert set(reader.bad.counts) == {"invalid_json", "invalid_utf8", "not_an_object"}


def test_skip_bad_drops_them_and_still_counts_them(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(_mixed_lines()))
    records, reader = _read(path, ReadOptions(key_field="user_id", time_field="ts",
                                              require_time=True, skip_bad=True))
    assert [r.line for r in records] == [1, 2, 4, 6, 8, 10, 12]
    assert reader.bad.total == 5 and reader.bad.dropped == 5
    assert all(not v["published"] for v in reader.bad.to_dict().values())


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.97])
def test_a_truncated_gzip_yields_what_precedes_the_cut_and_counts_the_rest(tmp_path, cut):
    lines = [_line(e) for e in _events(3000)]
    data = gzip.compress(b"\n".join(lines) + b"\n")
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: int(len(data) * cut)])
    records, reader = _read(path)
    n = len(records)
    assert 0 < n < 3000 and [r.value for r in records] == lines[:n]
    assert reader.bad.counts == {"truncated": 1} and reader.bad.lines == {"truncated": [n + 1]}


def test_corrupt_gzip_data_ends_the_read_without_a_crash(tmp_path):
    data = bytearray(gzip.compress(b"".join(_line(e) + b"\n" for e in _events(3000)), 1))
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(bytes(data))
    records, reader = _read(path)
    # Until its checksum, zlib may inflate the damage into plausible text; what comes
    # well before it is intact.
    assert [r.value for r in records[:1000]] == [_line(e) for e in _events(1000)]
    assert reader.bad.counts.get("corrupt") == 1
    assert set(reader.bad.counts) <= {"corrupt", "invalid_json", "invalid_utf8"}


def test_a_file_not_in_its_format_is_a_format_error(tmp_path):
    for name, what in (("plain.jsonl.gz", "not a gzip file"), ("rows.parquet", "not a Parquet")):
        path = tmp_path / name
        path.write_bytes(b'{"a":1}\n')
        with pytest.raises(LogFormatError, match=what):
            _read(path)


def test_csv_rows_with_the_wrong_width_are_bad_rows(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes(b"user_id,ts\nu1,2026-11-23T10:00:00Z\nu2\nu3,x,extra\n\xff,y\n")
    records, reader = _read(path)
    assert reader.bad.lines == {"bad_row": [3, 4], "invalid_utf8": [5]}
    assert records[1].value == b'["u2"]' and len(records) == 4


def test_only_the_first_line_numbers_are_kept_but_all_are_counted(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"nope\n" * (KEEP_LINES + 50))
    _, reader = _read(path)
    assert reader.bad.counts == {"invalid_json": KEEP_LINES + 50}
    assert reader.bad.lines["invalid_json"] == list(range(1, KEEP_LINES + 1))


def test_records_after_a_line_skip_the_acknowledged_prefix(tmp_path):
    events = _events(10)
    for name in ("a.jsonl", "a.jsonl.gz", "a.csv"):
        path = tmp_path / name
        if name.endswith(".csv"):
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(events[0]))
                w.writeheader()
                w.writerows(events)
        else:
            data = b"".join(_line(e) + b"\n" for e in events)
            path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        with LogReader(path, KEYED) as reader:
            rest = list(reader.records(after_line=6))
        first = 7
        assert [r.line for r in rest] == list(range(first, first + len(rest))) and rest
        assert [json.loads(r.value)["event_id"] for r in rest][-1] == "e9"


def test_a_large_gzip_log_is_streamed_not_loaded(tmp_path):
    # 50k lines of 1 kB: 50 MB of text (few lines, so tracemalloc stays quick).
    pad = b"x" * 950
    body = b"".join(b'{"user_id":"u%d","ts":"2026-11-23T10:00:00Z","n":%d,"pad":"%s"}\n'
                    % (i % 1000, i, pad) for i in range(50_000))
    path = tmp_path / "big.jsonl.gz"
    path.write_bytes(gzip.compress(body, 1))
    tracemalloc.start()
    try:
        count = 0
        with LogReader(path, KEYED) as reader:
            for _ in reader:
                count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 50_000
    assert peak < len(body) / 10, f"peak {peak / 1e6:.1f} MB for {len(body) / 1e6:.0f} MB of log"


# -- pacing ------------------------------------------------------------------------------
def test_pacing_keeps_the_scaled_gaps():
    times = [START_MS + s * 1000 for s in (0, 60, 60, 3600, 3660)]
    assert pace_schedule(times, speed=60) == [0.0, 1.0, 1.0, 60.0, 61.0]
    assert pace_schedule(times, speed=0.5) == [0.0, 120.0, 120.0, 7200.0, 7320.0]


def test_pacing_never_goes_backwards_and_waits_for_untimed_records():
    times = [START_MS, START_MS + 4000, START_MS + 1000, None, START_MS + 6000]
    assert pace_schedule(times, speed=2) == [0.0, 2.0, 2.0, 2.0, 3.0]
    assert pace_schedule([None, None, START_MS + 50], speed=1) == [0.0, 0.0, 0.0]


def test_max_rate_caps_records_per_second_with_or_without_speed():
    assert pace_schedule([None] * 4, max_rate=4) == [0.0, 0.25, 0.5, 0.75]
    times = [START_MS, START_MS, START_MS + 10_000, START_MS + 10_000]
    assert pace_schedule(times, speed=10, max_rate=2) == [0.0, 0.5, 1.0, 1.5]
    assert Pacer().due(START_MS) == 0.0


# -- resume bookkeeping ------------------------------------------------------------------------
def test_landed_records_are_matched_in_order_per_partition():
    landed = Landed({0: [(b"a", b"1"), (b"a", b"1")], 1: [(b"b", b"2")], 2: []})
    assert landed.take(0, b"a", b"1") and landed.take(1, b"b", b"2")
    assert not landed.take(1, b"b", b"2")  # partition 1 is matched out: send the rest
    assert landed.take(0, b"a", b"1") and not landed and landed.found == 3
    other = Landed({0: [(b"x", b"foreign")]})
    assert not other.take(0, b"a", b"1") and other.mismatched == [0] and not other


def test_landed_records_move_the_saved_offsets_past_them():
    landed = Landed({0: [(b"a", b"1"), (b"b", b"2")], 1: [(b"c", b"3")]}, start={0: 10, 1: 5})
    assert landed.take(0, b"a", b"1") and landed.offsets == {0: 11}
    assert not landed.take(1, b"x", b"9") and landed.offsets == {0: 11}  # a mismatch
    assert landed.take(0, b"b", b"2") and landed.offsets == {0: 12}


def test_state_is_refused_for_other_logs_or_another_topic(tmp_path):
    log = tmp_path / "a.jsonl"
    log.write_bytes(_line(_event(1)) + b"\n")
    state = ReplayState.new(tmp_path / "s.json", "t1", 2, [log])
    state.logs[0].update(line=1, records=1, done=True)
    state.next_offsets = {0: 5, 1: 7}
    state.save()
    back = ReplayState.load(tmp_path / "s.json", "t1", [log])
    assert back.logs == state.logs and back.next_offsets == {0: 5, 1: 7}
    with pytest.raises(ConfigError, match="not 't2'"):
        ReplayState.load(tmp_path / "s.json", "t2", [log])
    log.write_bytes(_line(_event(2)) + b"\n")
    with pytest.raises(ConfigError, match="changed"):
        ReplayState.load(tmp_path / "s.json", "t1", [log])


def test_a_background_save_lands_in_order_and_its_error_is_raised(tmp_path):
    log = tmp_path / "a.jsonl"
    log.write_bytes(_line(_event(1)) + b"\n")
    state = ReplayState.new(tmp_path / "s.json", "t1", 2, [log])
    for line in range(1, 6):
        state.logs[0].update(line=line, records=line)
        state.next_offsets = {0: line, 1: 2 * line}
        state.save_in_background()
    state.logs[0].update(line=99)  # after the last save: not in the file
    state.wait()
    back = ReplayState.load(tmp_path / "s.json", "t1", [log])
    assert back.logs[0]["line"] == 5 and back.next_offsets == {0: 5, 1: 10}
    assert not list(tmp_path.glob(".s.json.*.tmp"))
    lost = ReplayState.new(tmp_path / "gone" / "s.json", "t1", 2, [log])
    lost.save_in_background()
    with pytest.raises(ConfigError, match="cannot write the replay state"):
        lost.wait()
    lost.wait()  # raised once


# -- command line ----------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="streamsketch")
    register(parser.add_subparsers(dest="command", parser_class=Parser))
    return parser


@pytest.mark.parametrize("argv", [
    ["replay", "x.jsonl", "--topic", "t", "--speed", "0"],
    ["replay", "x.jsonl", "--backfill", "--records-per-batch", "0"],
    ["replay", "x.jsonl", "--topic", "t", "--resume", "--restart"],
    ["replay", "x.jsonl", "--topic", "t", "--format", "xml"],
    ["record", "--topic", "t"], ["record", "--topic", "t", "--out", "o", "--from-time", "now"],
])
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"streamsketch {argv[0]}: error:"), err


def test_a_missing_log_or_unknown_format_is_one_line_exit_2(tmp_path):
    for argv in (["replay", str(tmp_path / "none.jsonl"), "--topic", "t"],
                 ["replay", str(tmp_path / "x.txt"), "--topic", "t"],
                 # neither a topic nor a backfill; a backfill without its spec, or with a topic
                 ["replay", str(tmp_path / "x.txt")],
                 ["replay", str(tmp_path / "x.txt"), "--backfill"],
                 ["replay", str(tmp_path / "x.txt"), "--backfill", "--spec", "s.toml",
                  "--topic", "t"]):
        (tmp_path / "x.txt").write_text("{}")
        proc = subprocess.run([sys.executable, "-m", "streaming.cli", *argv],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr


# -- against a real broker ----------------------------------------------------------
def _consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    got: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                got.extend(batch)
        for batch in consumer.poll(timeout_ms=1000).values():  # anything beyond?
            got.extend(batch)
    finally:
        consumer.close()
    return got


def _expected_key(line: bytes) -> bytes | None:
    try:
        return json.loads(line)["user_id"].encode()
    except (ValueError, KeyError, TypeError):
        return None


def _mixed_log(tmp_path: Path, n: int) -> tuple[Path, list[bytes]]:
    cfg = GeneratorConfig(seed=11, start_time=START, malformed=0.03)
    lines = [r.value.replace(b"\n", b" ") for r in generate(cfg, n) if r.value]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines[:n // 2]) + b"\n\n" + b"\n".join(lines[n // 2:]) + b"\n")
    return path, lines


def _assert_exactly_once(got: list, lines: list[bytes]) -> None:
    assert sorted((m.key or b"", m.value) for m in got) == sorted(
        (_expected_key(v) or b"", v) for v in lines)
    assert collections.Counter(m.value for m in got) == collections.Counter(lines)


@pytest.mark.integration
def test_replay_publishes_every_record_once_byte_for_byte(kafka, topic_name, tmp_path):
    path, lines = _mixed_log(tmp_path, 3000)
    stats = replay([path], ReplayConfig(topic=topic_name, bootstrap_servers=kafka.bootstrap_servers,
                                        read=KEYED, partitions=3))
    assert stats.records == len(lines) and stats.failed == 0 and stats.complete
    bad = stats.logs[0]["bad"]
    assert bad and all(v["published"] for v in bad.values()) and stats.logs[0]["blank_lines"] == 1
    _assert_exactly_once(_consume_all(kafka.bootstrap_servers, topic_name, len(lines)), lines)
    # Done means done: a second run must say what it wants.
    with pytest.raises(ConfigError, match="--resume"):
        replay([path], ReplayConfig(topic=topic_name, bootstrap_servers=kafka.bootstrap_servers))


@pytest.mark.integration
def test_paced_replay_keeps_the_scaled_gaps(kafka, topic_name, tmp_path):
    # Three bursts at event time 0 s, 2 s and 5 s, one record out of order; speed 2.
    offsets = [i * 0.05 for i in range(10)] + [2 + i * 0.05 for i in range(10)] + [1.0] + \
              [5 + i * 0.05 for i in range(10)]
    path = tmp_path / "paced.jsonl"
    path.write_bytes(b"".join(_line(_event(i, s)) + b"\n" for i, s in enumerate(offsets)))
    due = pace_schedule([START_MS + round(s * 1000) for s in offsets], speed=2)
    t0 = time.monotonic()
    stats = replay([path], ReplayConfig(topic=topic_name, bootstrap_servers=kafka.bootstrap_servers,
                                        read=PACED, speed=2.0))
    assert stats.records == len(offsets) and time.monotonic() - t0 < 15
    got = _consume_all(kafka.bootstrap_servers, topic_name, len(offsets))
    sent = {json.loads(m.value)["event_id"]: m.timestamp / 1000 for m in got}
    rel = [sent[f"e{i}"] - sent["e0"] for i in range(len(offsets))]
    total = max(rel)
    assert 0.7 * due[-1] <= total <= 1.4 * due[-1], (total, due[-1])
    for i in (10, 21, 30):  # each burst starts when due (never early), on a noisy machine late
        assert due[i] - 0.05 <= rel[i] <= due[i] * 1.4 + 0.3, (i, rel[i], due[i])
    assert due[19] - 0.05 <= rel[20] <= due[19] + 0.3  # the late record did not wait


def _replay_cmd(kafka, topic: str, log: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "streaming.cli", "replay", str(log), "--topic", topic,
            "--bootstrap-servers", kafka.bootstrap_servers, "--json", "--quiet", *extra]


def _wait_for_checkpoint(state: Path, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(state.read_text())["logs"][0]["line"] > 0:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint within {timeout} s")


@pytest.mark.integration
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_an_interrupted_replay_resumed_publishes_each_record_once(kafka, topic_name, tmp_path,
                                                                   how):
    path, lines = _mixed_log(tmp_path, 6000)
    state = Path(str(path) + ".replay-state.json")
    cmd = _replay_cmd(kafka, topic_name, path, "--max-rate", "1500", "--checkpoint-seconds",
                      "0.4")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(state, proc)
        time.sleep(0.3)  # records in flight and acknowledged past the checkpoint
        proc.send_signal(how)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if how == signal.SIGINT:
        assert proc.returncode == 130, err
        assert "Traceback" not in err, err
        first = json.loads(out)
        assert first["interrupted"] and 0 < first["records"] < len(lines)
    else:
        assert proc.returncode == -signal.SIGKILL
    done = subprocess.run(_replay_cmd(kafka, topic_name, path, "--resume"), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    second = json.loads(done.stdout)
    assert second["complete"]
    assert second["resumed_skipped"] + second["already_in_topic"] + second["records"] == \
        len(lines)
    _assert_exactly_once(_consume_all(kafka.bootstrap_servers, topic_name, len(lines)), lines)


@pytest.mark.integration
def test_record_then_replay_reproduces_keys_and_values(kafka, topic_name, tmp_path):
    source = topic_name + "-src"
    cfg = GeneratorConfig(seed=5, start_time=START, malformed=0.1, out_of_order=0.1)
    n = 2000
    produce(kafka.bootstrap_servers, source, cfg, count=n, partitions=3)
    out = tmp_path / "rec.jsonl.gz"
    proc = subprocess.run([sys.executable, "-m", "streaming.cli", "record", "--topic",
                           source, "--out", str(out), "--bootstrap-servers",
                           kafka.bootstrap_servers, "--json", "--timeout", "20"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["records"] == n and json.loads(proc.stdout)["complete"]
    with LogReader(out, PACED) as reader:
        times = [r.time_ms for r in reader]
    assert times == sorted(times) and reader.bad.counts == {}  # merged by timestamp

    stats = replay([out], ReplayConfig(topic=topic_name, bootstrap_servers=kafka.bootstrap_servers,
                                       read=KEYED, partitions=3))
    assert stats.records == n and stats.failed == 0
    original = _consume_all(kafka.bootstrap_servers, source, n)
    copy = _consume_all(kafka.bootstrap_servers, topic_name, n)
    assert sorted((m.key, m.value or b"") for m in copy) == \
        sorted((m.key, m.value or b"") for m in original)
    assert sum(m.value is None for m in copy) == sum(m.value is None for m in original) > 0

    def per_key(msgs):
        by_key = collections.defaultdict(list)
        for m in sorted(msgs, key=lambda m: (m.partition, m.offset)):
            by_key[m.key].append(m.value)
        return dict(by_key)

    assert per_key(copy) == per_key(original)
    # A time range of Kafka timestamps records a subset; --to-time is exclusive.
    stamps = sorted(m.timestamp for m in original)
    low, high = stamps[n // 4], stamps[3 * n // 4]
    part = record(kafka.bootstrap_servers, source, tmp_path / "part.jsonl",
                  from_time=datetime.fromtimestamp(low / 1000, UTC),
                  to_time=datetime.fromtimestamp(high / 1000, UTC))
    assert part.complete and part.records == sum(low <= s < high for s in stamps)
    with LogReader(tmp_path / "part.jsonl", PACED) as reader:
        got = [r.time_ms for r in reader]
    assert got and min(got) >= low and max(got) < high



def _assert_in_log_order_per_partition(got: list, lines: list[bytes]) -> None:
    counts = collections.Counter(lines)  # the generator repeats a few lines on purpose
    position = {v: i for i, v in enumerate(lines) if counts[v] == 1}
    assert len(position) > 0.99 * len(lines)
    for p in {m.partition for m in got}:
        ours = [position[m.value] for m in sorted(got, key=lambda m: m.offset)
                if m.partition == p and m.value in position]
        assert ours == sorted(ours), f"partition {p} is out of log order"


@pytest.mark.integration
def test_an_unpaced_replay_killed_mid_batch_resumes_exactly_once_in_order(kafka, topic_name,
                                                                          tmp_path):
    # big enough that an idle machine is still replaying 0.3 s after the first checkpoint
    path, lines = _mixed_log(tmp_path, 400_000)
    state = Path(str(path) + ".replay-state.json")
    proc = subprocess.Popen(_replay_cmd(kafka, topic_name, path, "--partitions", "3",
                                        "--checkpoint-records", "20000"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(state, proc)
        time.sleep(0.3)  # full batches acknowledged past the checkpoint, others in flight
        proc.send_signal(signal.SIGKILL)  # open batches and unacknowledged ones are lost
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = json.loads(state.read_text())["logs"][0]
    assert 0 < saved["records"] < len(lines) and not saved["done"]
    done = subprocess.run(_replay_cmd(kafka, topic_name, path, "--resume"), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    second = json.loads(done.stdout)
    assert second["complete"] and second["failed"] == 0
    assert second["resumed_skipped"] == saved["records"]
    assert second["resumed_skipped"] + second["already_in_topic"] + second["records"] == \
        len(lines)
    got = _consume_all(kafka.bootstrap_servers, topic_name, len(lines))
    _assert_exactly_once(got, lines)
    _assert_in_log_order_per_partition(got, lines)


@pytest.mark.integration
def test_a_record_the_broker_refuses_fails_the_replay_and_the_state_stays_behind_it(
        kafka, topic_name, tmp_path):
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    try:
        admin.create_topics({topic_name: {"num_partitions": 2,
                                          "configs": {"max.message.bytes": "20000"}}},
                            wait_for_metadata=True)
    finally:
        admin.close()
    lines = [_line(_event(i, i * 0.01)) for i in range(4000)]
    big = 2001  # 1-based line of an event larger than the topic allows
    lines[big - 1] = _line(_event(big - 1, pad="x" * 50_000))
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    proc = subprocess.run(_replay_cmd(kafka, topic_name, path, "--checkpoint-records", "300"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["failed"] >= 1 and not stats["complete"]
    assert "MessageSizeTooLargeError" in stats["first_error"]
    assert "records were not delivered" in proc.stderr and "--resume" in proc.stderr
    saved = json.loads(Path(str(path) + ".replay-state.json").read_text())["logs"][0]
    assert 0 < saved["line"] < big and not saved["done"]
    got = _consume_all(kafka.bootstrap_servers, topic_name, big - 1, timeout=20)
    assert lines[big - 1] not in {m.value for m in got}
    assert collections.Counter(m.value for m in got).most_common(1)[0][1] == 1
    assert set(lines[:saved["line"]]) <= {m.value for m in got}


@pytest.mark.integration
def test_the_saved_offsets_move_past_records_found_already_in_the_topic(kafka, topic_name,
                                                                        tmp_path):
    from kafka.partitioner.default import murmur2

    def part(key: str) -> int:
        return (murmur2(key.encode()) & 0x7FFFFFFF) % 2

    users = {p: next(f"u{i}" for i in range(100) if part(f"u{i}") == p) for p in (0, 1)}
    # Lines 1-100 alternate partitions; lines 101-200 all go to partition 1.
    events = [dict(_event(i), user_id=users[i % 2 if i < 100 else 1]) for i in range(200)]
    lines = [_line(e) for e in events]
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    prefix = tmp_path / "prefix.jsonl"  # the first 100 lines, published beforehand
    prefix.write_bytes(b"\n".join(lines[:100]) + b"\n")
    config = ReplayConfig(topic=topic_name, bootstrap_servers=kafka.bootstrap_servers,
                          read=KEYED, partitions=2)
    assert replay([prefix], config).records == 100
    # A checkpoint at line 50, as if the replay of the log was killed after line 100 landed.
    state = ReplayState.new(tmp_path / "log.state.json", topic_name, 2, [log])
    state.logs[0].update(line=50, records=50)
    state.next_offsets = {0: 25, 1: 25}
    state.save()
    resumed = replay([log], ReplayConfig(topic=topic_name, read=KEYED, partitions=2,
                                         bootstrap_servers=kafka.bootstrap_servers,
                                         resume=True, state_path=state.path))
    assert (resumed.resumed_skipped, resumed.already_in_topic, resumed.records) == (50, 50, 100)
    saved = json.loads(state.path.read_text())
    # Partition 0 got nothing new; its offset still moves past the 25 records found there.
    assert saved["next_offsets"] == {"0": 50, "1": 150}
    _assert_exactly_once(_consume_all(kafka.bootstrap_servers, topic_name, 200), lines)
