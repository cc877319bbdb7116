"""The clickstream generator: seeded, realistic, with exactly the defects it claims.

Unit tests need no broker; the integration tests send to a real one and read
every record back.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from streaming.cli.common import Parser
from streaming.errors import ConfigError
from streaming.kafka.generator import (
    ACTIONS,
    COUNTRIES,
    DEVICES,
    INTERNAL_REFERRER,
    KINDS,
    LATE,
    MALFORMED_REASONS,
    OUT_OF_ORDER,
    REFERRERS,
    SESSION_GAP_SECONDS,
    VALID,
    GeneratorConfig,
    generate,
    generate_batches,
)
from streaming.kafka.producer import produce

START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
FIELD_TYPES = {"event_id": str, "ts": str, "user_id": str, "session_id": str, "page": str,
               "action": str, "amount": (float, type(None)), "country": str, "device": str,
               "referrer": str}
MIXED = GeneratorConfig(seed=11, start_time=START, out_of_order=0.10, late=0.05, malformed=0.07)
N_MIXED = 40_000


@pytest.fixture(scope="module")
def mixed() -> list:
    return list(generate(MIXED, N_MIXED))


def _ts(text: str) -> datetime:
    assert ISO_MS.fullmatch(text), text
    return datetime.fromisoformat(text)


def _clock(config: GeneratorConfig, event: dict) -> datetime:
    """The simulated clock of an event: start + seq / rate (floored to the millisecond)."""
    seq = int(event["event_id"].rsplit("-", 1)[1])
    return config.start_time + timedelta(milliseconds=math.floor(seq * 1000 / config.rate))


def _within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


# -- determinism ---------------------------------------------------------------
def test_same_seed_same_bytes_and_a_shorter_run_is_a_prefix():
    a = [(r.key, r.value, r.kind) for r in generate(MIXED, 6000)]
    b = [(r.key, r.value, r.kind) for r in generate(MIXED, 6000)]
    assert a == b
    assert [(r.key, r.value, r.kind) for r in generate(MIXED, 1234)] == a[:1234]


@pytest.mark.parametrize("config", [
    MIXED,
    GeneratorConfig(seed=3, start_time=START, users=40, pages=6, rate=0.5, malformed=0.4),
    GeneratorConfig(seed=5, start_time=START, rate=1e6, users=2_000_000),
], ids=["mixed", "few-users-slow-clock", "many-users-fast-clock"])
def test_the_wire_path_sends_the_records_of_generate_byte_for_byte(config):
    """``produce`` builds records column by column: the same keys, values and kinds."""
    import itertools

    from streaming.kafka.generator import KINDS, wire_chunks

    n = 3 * 4096 + 17
    want = list(generate(config, n))
    got = list(itertools.islice(
        ((k, v, KINDS[int(kind)]) for chunk in wire_chunks(config)
         for k, v, kind in zip(chunk.keys.to_pylist(), chunk.values.to_pylist(), chunk.kinds,
                               strict=True)), n))
    assert got == [(r.key, r.value, r.kind) for r in want]


def test_different_seed_different_records():
    other = GeneratorConfig(seed=12, start_time=START, out_of_order=0.1, late=0.05, malformed=0.07)
    a = [r.value for r in generate(MIXED, 500)]
    b = [r.value for r in generate(other, 500)]
    assert sum(x == y for x, y in zip(a, b, strict=True)) == 0


@pytest.mark.parametrize("batch_size", [1, 7, 4096, 5000])
def test_batches_hold_the_same_records(batch_size):
    expected = [(r.key, r.value) for r in generate(MIXED, 9000)]
    batches = list(generate_batches(MIXED, 9000, batch_size))
    assert all(len(b) == batch_size for b in batches[:-1]) and 0 < len(batches[-1]) <= batch_size
    assert [(r.key, r.value) for b in batches for r in b] == expected


def test_no_start_time_starts_now():
    before = datetime.now(UTC)
    first = next(generate(GeneratorConfig(seed=1), 1))
    assert before - timedelta(seconds=1) <= _ts(first.event["ts"]) <= datetime.now(UTC)


# -- kinds -------------------------------------------------------------------
def test_kind_counts_match_the_fractions(mixed):
    counts = collections.Counter(r.kind for r in mixed)
    assert set(counts) <= set(KINDS)
    assert _within(counts[OUT_OF_ORDER], N_MIXED, MIXED.out_of_order)
    assert _within(counts[LATE], N_MIXED, MIXED.late)
    per_reason = MIXED.malformed / len(MALFORMED_REASONS)
    for reason in MALFORMED_REASONS:
        assert _within(counts[f"malformed:{reason}"], N_MIXED, per_reason), reason
    assert counts[VALID] == N_MIXED - sum(v for k, v in counts.items() if k != VALID)


def test_clean_config_gives_only_valid_records():
    assert {r.kind for r in generate(GeneratorConfig(seed=3, start_time=START), 5000)} == {VALID}


def test_valid_values_are_json_with_the_declared_types(mixed):
    for r in mixed:
        if r.event is None:
            continue
        parsed = json.loads(r.value.decode("utf-8"))
        assert parsed == r.event
        assert set(parsed) == set(FIELD_TYPES)
        for name, kind in FIELD_TYPES.items():
            assert isinstance(parsed[name], kind), (name, parsed)
        assert r.key == parsed["user_id"].encode()
        assert parsed["action"] in ACTIONS and parsed["device"] in DEVICES
        assert parsed["country"] in COUNTRIES
        assert parsed["referrer"] in REFERRERS + (INTERNAL_REFERRER,)
        assert re.fullmatch(r"/p/\d{5}", parsed["page"]) and re.fullmatch(r"u\d{6}",
                                                                          parsed["user_id"])
        _ts(parsed["ts"])


def test_event_time_follows_the_simulated_clock(mixed):
    ms = timedelta(milliseconds=1)
    seen = collections.Counter()
    for r in mixed:
        if r.event is None:
            continue
        behind = _clock(MIXED, r.event) - _ts(r.event["ts"])
        if r.kind == VALID:
            assert abs(behind) <= ms
        elif r.kind == OUT_OF_ORDER:
            assert timedelta(0) < behind <= timedelta(seconds=MIXED.max_disorder) + ms
        else:
            assert timedelta(seconds=MIXED.late_by) <= behind
            assert behind <= timedelta(seconds=1.25 * MIXED.late_by) + ms
        seen[r.kind] += 1
    assert seen[VALID] and seen[OUT_OF_ORDER] and seen[LATE]


def test_rate_spaces_events_in_event_time():
    cfg = GeneratorConfig(seed=2, start_time=START, rate=4.0)
    times = [_ts(r.event["ts"]) for r in generate(cfg, 9)]
    assert times[0] == START and times[-1] == START + timedelta(seconds=2)


def test_malformed_records_are_really_malformed(mixed):
    by_reason = collections.defaultdict(list)
    for r in mixed:
        if r.kind.startswith("malformed:"):
            assert r.event is None and re.fullmatch(r"u\d{6}", r.key.decode())
            by_reason[r.kind.split(":", 1)[1]].append(r.value)
    assert set(by_reason) == set(MALFORMED_REASONS)
    for value in by_reason["invalid_json"]:
        with pytest.raises(json.JSONDecodeError):
            json.loads(value.decode("utf-8"))
    for value in by_reason["invalid_utf8"]:
        with pytest.raises(UnicodeDecodeError):
            value.decode("utf-8")
    for value in by_reason["wrong_type"]:
        event = json.loads(value)
        assert isinstance(event["amount"], str) and event["action"] == "purchase"
        with pytest.raises(ValueError):
            float(event["amount"])
    for value in by_reason["missing_time"]:
        event = json.loads(value)
        assert "ts" not in event and set(event) == set(FIELD_TYPES) - {"ts"}
    for value in by_reason["bad_time"]:
        event = json.loads(value)
        with pytest.raises(ValueError):
            datetime.fromisoformat(event["ts"])
    assert all(v is None for v in by_reason["null_value"])
    assert all(v == b"" for v in by_reason["empty_value"])


# -- realism -----------------------------------------------------------------
def test_page_and_user_popularity_are_heavy_tailed(mixed):
    events = [r.event for r in mixed if r.event is not None]
    pages = collections.Counter(e["page"] for e in events)
    users = collections.Counter(e["user_id"] for e in events)
    top_page = pages.most_common(1)[0][1] / len(events)
    assert top_page > 100 / MIXED.pages  # uniform would be 1/pages
    top_100 = sum(c for _, c in pages.most_common(100)) / len(events)
    assert top_100 > 0.5  # 2 % of the pages get most of the traffic
    assert users.most_common(1)[0][1] / len(events) > 100 / MIXED.users


def test_amounts_only_on_purchases_positive_in_cents(mixed):
    events = [r.event for r in mixed if r.event is not None]
    purchases = [e["amount"] for e in events if e["action"] == "purchase"]
    assert len(purchases) > 100
    assert all(a > 0 and abs(a * 100 - round(a * 100)) < 1e-6 for a in purchases)
    assert all(e["amount"] is None for e in events if e["action"] != "purchase")
    assert 10 < sorted(purchases)[len(purchases) // 2] < 100  # median purchase, log-normal


def test_country_and_device_are_skewed_and_per_user(mixed):
    events = [r.event for r in mixed if r.event is not None]
    countries = collections.Counter(e["country"] for e in events)
    assert countries.most_common(1)[0][0] == "US" and countries["US"] > 3 * countries["FR"]
    per_user = collections.defaultdict(set)
    for e in events:
        per_user[e["user_id"]].add((e["country"], e["device"]))
    assert all(len(v) == 1 for v in per_user.values())


def test_sessions_split_on_inactivity():
    cfg = GeneratorConfig(seed=5, start_time=START, rate=0.01, users=20)  # 100 s apart
    last: dict[str, tuple[datetime, str]] = {}
    opened = continued = 0
    for r in generate(cfg, 10_000):  # more than one vectorised chunk: state carries over
        e = r.event
        t = _ts(e["ts"])
        if e["user_id"] in last:
            prev_t, prev_s = last[e["user_id"]]
            gap = (t - prev_t).total_seconds()
            if gap > SESSION_GAP_SECONDS:
                assert e["session_id"] != prev_s and e["referrer"] != INTERNAL_REFERRER
                opened += 1
            else:
                assert e["session_id"] == prev_s and e["referrer"] == INTERNAL_REFERRER
                continued += 1
        last[e["user_id"]] = (t, e["session_id"])
    assert opened > 50 and continued > 50


# -- validation ----------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    {"seed": -1}, {"seed": 1.5}, {"rate": 0}, {"rate": float("inf")}, {"users": 0},
    {"pages": 0}, {"out_of_order": -0.1}, {"late": 1.5}, {"malformed": float("nan")},
    {"out_of_order": 0.5, "late": 0.3, "malformed": 0.3}, {"max_disorder": 0},
    {"late_by": 30.0}, {"start_time": "2026-11-23"},
])
def test_bad_config_is_a_one_line_config_error(kwargs):
    with pytest.raises(ConfigError) as exc:
        GeneratorConfig(**kwargs)
    assert "\n" not in str(exc.value)


def test_naive_start_time_is_utc():
    cfg = GeneratorConfig(start_time=datetime(2026, 11, 23, 10))
    assert cfg.start_time == START


def test_bad_count_is_a_config_error():
    with pytest.raises(ConfigError):
        next(generate(MIXED, -1))


def test_unreachable_broker_is_a_config_error_not_a_hang():
    from streaming.kafka.broker import free_port

    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="cannot reach Kafka") as exc:
        produce(f"127.0.0.1:{free_port()}", "t", MIXED, count=1, connect_timeout=1.0)
    assert time.monotonic() - t0 < 10 and "\n" not in str(exc.value)


def _throwaway_parser() -> argparse.ArgumentParser:
    from streaming.cli.produce import register

    parser = Parser(prog="streamsketch")
    register(parser.add_subparsers(dest="command", parser_class=Parser))
    return parser


@pytest.mark.parametrize("argv", [
    ["--rate", "-5"], ["--count", "0"], ["--count", "5", "--duration", "3"],
    ["--late", "2"], ["--start-time", "yesterday"], ["--partitions", "x"],
])
def test_bad_produce_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        _throwaway_parser().parse_args(["produce", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("streamsketch produce: error:"), err


def test_produce_arguments_parse():
    args = _throwaway_parser().parse_args(
        ["produce", "--count", "10", "--rate", "0", "--start-time", "2026-11-23T10:00:00Z",
         "--late", "0.01", "--json"])
    assert args.count == 10 and args.rate == 0 and args.start_time == START and args.json


# -- against a real broker -------------------------------------------------------
def _consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None,
                             consumer_timeout_ms=3000)
    records = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
        # A moment longer, to see records beyond the expected number.
        for batch in consumer.poll(timeout_ms=1000).values():
            records.extend(batch)
    finally:
        consumer.close()
    return records


@pytest.mark.integration
def test_produce_sends_exactly_the_generated_records(kafka, topic_name):
    n = 3000
    stats = produce(kafka.bootstrap_servers, topic_name, MIXED, count=n, partitions=3)
    expected = list(generate(MIXED, n))
    assert stats.sent == n and stats.failed == 0 and stats.partitions == 3
    assert stats.counts == dict(collections.Counter(r.kind for r in expected))

    got = _consume_all(kafka.bootstrap_servers, topic_name, n)
    assert len(got) == n
    assert sorted((m.key, m.value or b"") for m in got) == sorted(
        (r.key, r.value or b"") for r in expected)
    assert sum(m.value is None for m in got) == sum(r.value is None for r in expected)
    # Per key (so per partition), records arrive in the order they were generated.
    order = {}
    for r in expected:
        order.setdefault(r.key, []).append(r.value)
    by_key = collections.defaultdict(list)
    for m in sorted(got, key=lambda m: (m.partition, m.offset)):
        by_key[m.key].append(m.value)
    assert dict(by_key) == order


@pytest.mark.integration
def test_rate_limited_run_tracks_the_wall_clock(kafka, topic_name):
    before = datetime.now(UTC)
    stats = produce(kafka.bootstrap_servers, topic_name, GeneratorConfig(seed=4),
                    duration=2.0, rate_limit=250.0)
    assert 400 <= stats.sent <= 520 and stats.failed == 0
    assert 1.9 <= stats.elapsed_seconds < 5
    got = _consume_all(kafka.bootstrap_servers, topic_name, stats.sent)
    times = sorted(_ts(json.loads(m.value)["ts"]) for m in got)
    assert before - timedelta(seconds=1) <= times[0] <= before + timedelta(seconds=15)
    # Event time advances at the send rate: about as long as the run.
    assert timedelta(seconds=1.5) <= times[-1] - times[0] <= timedelta(seconds=2.5)


@pytest.mark.integration
def test_cli_produce_prints_json_stats(kafka, topic_name):
    proc = subprocess.run(
        [sys.executable, "-m", "streaming.cli", "produce", "--bootstrap-servers",
         kafka.bootstrap_servers, "--topic", topic_name, "--count", "200", "--rate", "0",
         "--malformed", "0.1", "--seed", "9", "--json"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["sent"] == 200 and stats["failed"] == 0 and stats["topic"] == topic_name
    assert sum(v for k, v in stats["counts"].items() if k.startswith("malformed:")) > 0
