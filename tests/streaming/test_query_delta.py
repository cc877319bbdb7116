"""``streamsketch query`` without a JVM: answers checked against the events themselves.

Tables are written with delta-rs from generated events (tests/streaming/query_tables.py);
every expected value is computed from those events directly: exact metrics with
Python's Decimal, sketches built in one pass over the selected events with the
``sketches`` package (an HLL/Bloom/MinHash union equals the sketch of the union
register for register, bit for bit).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from query_tables import US, Events, make_events, window_starts, write_tables

from streaming.query import questions as q
from streaming.spec.model import Spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)

SPEC = """
[source]
topic = "clicks"
[events]
time_field = "ts"
watermark = "2 minutes"
[events.fields]
user_id = "string"
page = "string"
country = "string"
amount = "double"

[[windows]]
name = "minutely"
size = "1 minute"
metrics = ["count", "sum(amount)", "max(amount)"]
  [[windows.sketches]]
  name = "users"
  kind = "hll"
  field = "user_id"
  precision = 9
  [[windows.sketches]]
  name = "pages"
  kind = "cms"
  field = "page"
  epsilon = 0.01
  delta = 0.01
  top_k = 5
  [[windows.sketches]]
  name = "seen_users"
  kind = "bloom"
  field = "user_id"
  capacity = 300
  error_rate = 0.01
  [[windows.sketches]]
  name = "sim_users"
  kind = "minhash"
  field = "user_id"
  num_perm = 64
  [[windows.sketches]]
  name = "users_ds"
  kind = "hll"
  format = "datasketches"
  field = "user_id"
  precision = 9
  [[windows.sketches]]
  name = "user_sets"
  kind = "theta"
  field = "user_id"
  lg_k = 6

[[windows]]
name = "hourly_by_country"
size = "1 hour"
slide = "15 minutes"
group_by = ["country"]
metrics = ["count", "sum(amount)", "avg(amount)", "min(amount)", "max(amount)"]
  [[windows.sketches]]
  name = "users"
  kind = "hll"
  field = "user_id"
  precision = 12
  [[windows.sketches]]
  name = "pages"
  kind = "cms"
  field = "page"
  epsilon = 0.002
  delta = 0.01
  top_k = 10
  [[windows.sketches]]
  name = "amounts"
  kind = "quantiles"
  field = "amount"
  relative_accuracy = 0.01

[sink]
path = "SINK"
checkpoint = "CK"
"""


def make_spec(root: Path) -> Spec:
    text = SPEC.replace("SINK", str(root / "delta")).replace("CK", str(root / "ck"))
    return parse_spec(text)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("query")
    spec = make_spec(root)
    # 3 hours, ~40 events a minute: minute windows hold sparse and dense sketches
    events = make_events(start=T0, hours=3, per_hour=2400, countries=4, users=1500, pages=60)
    write_tables(spec, events, files=3)
    (root / "spec.toml").write_text(SPEC.replace("SINK", str(root / "delta"))
                                    .replace("CK", str(root / "ck")))
    return spec, events, root


# -- truth, from the events ----------------------------------------------------------
def in_windows(events: Events, spec: Spec, sel: q.Selection, *, tiling: bool) -> Events:
    """The events counted by the windows a selection keeps (each event once per window)."""
    w = sel.window
    idx, starts = window_starts(events.ts_us, w)
    keep = np.ones(idx.size, dtype=bool)
    if sel.start is not None:
        keep &= starts >= int(sel.start.timestamp()) * US
    if sel.end is not None:
        keep &= starts + w.size_s * US <= int(sel.end.timestamp()) * US
    if tiling and w.sliding:
        keep &= (starts // US) % w.size_s == 0
    for k, v in sel.groups.items():
        keep &= events.columns[k][idx] == v
    return Events(events.ts_us[idx[keep]], {c: a[idx[keep]] for c, a in events.columns.items()})


def sel(spec: Spec, window: str, start=None, end=None, groups=None) -> q.Selection:
    return q.Selection(spec.window(window), start, end, groups or {})


def source(spec):
    return q.DeltaSource(spec)


RANGES = [(None, None), (T0 + dt.timedelta(minutes=7), T0 + dt.timedelta(minutes=95)),
          (T0 + dt.timedelta(minutes=30), T0 + dt.timedelta(hours=2, minutes=45))]


@pytest.mark.parametrize("window", ["minutely", "hourly_by_country"])
@pytest.mark.parametrize("rng", RANGES)
def test_distinct_is_the_sketch_of_the_selected_events(tables, window, rng):
    spec, events, _ = tables
    s = sel(spec, window, *rng)
    got = q.distinct(source(spec), spec, s, None)
    chosen = in_windows(events, spec, s, tiling=False)
    sk = q.find_sketch(s, None, "hll")
    one_pass = sk.new().update(chosen.columns["user_id"])
    assert got["estimate"] == one_pass.estimate()
    true = len(set(chosen.columns["user_id"]))
    assert got["lower_bound"] <= true * 1.1 and got["upper_bound"] >= true * 0.9
    n_windows = len({(int(t)) for t in window_starts(chosen.ts_us, s.window)[1]})
    assert got["windows_merged"] >= n_windows


@pytest.mark.parametrize("groups", [{}, {"country": "C01"}])
def test_topk_counts_each_event_once_on_sliding_windows(tables, groups):
    spec, events, _ = tables
    s = sel(spec, "hourly_by_country", T0, T0 + dt.timedelta(hours=3), groups)
    got = q.topk(source(spec), spec, s, None, 5)
    truth = events.take(np.ones(len(events), dtype=bool))
    if groups:
        truth = truth.take(truth.columns["country"] == groups["country"])
    assert got["total"] == len(truth)
    true_counts = Counter(truth.columns["page"].tolist())
    assert [t["item"] for t in got["top"]] == [p for p, _ in true_counts.most_common(5)]
    for t in got["top"]:
        assert true_counts[t["item"]] <= t["count"] <= true_counts[t["item"]] + got["error_bound"]
    # tiling windows: 3 per group (09:00, 10:00, 11:00), never the 15-minute overlaps
    assert got["windows_merged"] == 3 * (1 if groups else 4)


@pytest.mark.parametrize("groups", [{}, {"country": "C02"}])
def test_quantiles_count_each_value_once_and_hold_their_bound(tables, groups):
    spec, events, _ = tables
    s = sel(spec, "hourly_by_country", T0, T0 + dt.timedelta(hours=3), groups)
    got = q.quantile(source(spec), spec, s, None, (0.01, 0.5, 0.95, 0.99))
    truth = events
    if groups:
        truth = truth.take(truth.columns["country"] == groups["country"])
    values = np.sort(truth.columns["amount"])
    assert got["count"] == values.size  # tiled: the 15-minute overlaps are not counted
    for row in got["quantiles"]:
        exact = values[int(np.floor(row["q"] * (values.size - 1)))]
        assert abs(row["value"] - exact) <= got["relative_error"] * abs(exact)
        assert row["lower_bound"] <= exact <= row["upper_bound"]


def test_contains_and_similarity(tables):
    spec, events, _ = tables
    early = sel(spec, "minutely", T0, T0 + dt.timedelta(minutes=60))
    late = sel(spec, "minutely", T0 + dt.timedelta(minutes=60), T0 + dt.timedelta(minutes=180))
    chosen = in_windows(events, spec, early, tiling=False)
    present = str(chosen.columns["user_id"][0])
    assert q.contains(source(spec), spec, early, None, present)["probably_present"] is True
    bloom = q.find_sketch(early, None, "bloom").new().update(chosen.columns["user_id"])
    got = q.contains(source(spec), spec, early, None, "nobody-at-all")
    assert got["probably_present"] == bool(bloom.contains(["nobody-at-all"])[0])
    assert got["expected_fpr"] == bloom.expected_fpr()
    mh = q.find_sketch(early, None, "minhash")
    a = mh.new().update(chosen.columns["user_id"])
    b = mh.new().update(in_windows(events, spec, late, tiling=False).columns["user_id"])
    assert q.similarity(source(spec), spec, early, late, None)["jaccard"] == a.jaccard(b)


def test_datasketches_hll_and_overlap(tables):
    """DataSketches-format sketches through the same reads: the union of the stored
    images equals one sketch of the selected events; Theta set algebra likewise."""
    import sketches
    from sketches.theta import theta_difference, theta_intersection

    spec, events, _ = tables
    early = sel(spec, "minutely", T0, T0 + dt.timedelta(minutes=60))
    late = sel(spec, "minutely", T0 + dt.timedelta(minutes=45), T0 + dt.timedelta(minutes=90))
    users = in_windows(events, spec, early, tiling=False).columns["user_id"]
    got = q.distinct(source(spec), spec, early, "users_ds")
    want = sketches.DataSketchesHLL(precision=9).update(users)
    assert got["estimate"] == want.estimate()
    a = sketches.ThetaSketch(lg_k=6).update(users)
    b = sketches.ThetaSketch(lg_k=6).update(
        in_windows(events, spec, late, tiling=False).columns["user_id"])
    got = q.overlap(source(spec), spec, early, late, None)
    assert got["windows_merged"] == [60, 45]
    for key, expected in (("a", a), ("b", b), ("union", sketches.union(a, b)),
                          ("intersection", theta_intersection(a, b)),
                          ("a_not_b", theta_difference(a, b)),
                          ("b_not_a", theta_difference(b, a))):
        assert got[key]["estimate"] == expected.estimate(), key
        assert got[key]["lower_bound"] == expected.lower_bound(2), key


def test_overlap_needs_a_second_range_or_group(tables):
    spec, _, _ = tables
    with pytest.raises(q.ConfigError, match="overlap needs a second range"):
        q.question(spec, "overlap", window="minutely", start=None, end=None)
    with pytest.raises(q.ConfigError, match="--vs-group is for overlap"):
        q.question(spec, "distinct", window="minutely", start=None, end=None,
                   vs_groups=["country=DE"])
    with pytest.raises(q.ConfigError, match="no theta sketch"):
        q.question(spec, "overlap", window="hourly_by_country", start=None, end=None,
                   vs_groups=["country=DE"])


def _exact(values) -> Decimal:
    return sum((Decimal(repr(float(v))) for v in values), Decimal(0))


@pytest.mark.parametrize("rng", RANGES)
def test_aggregate_is_exact_per_group(tables, rng):
    spec, events, _ = tables
    s = sel(spec, "hourly_by_country", *rng)
    got = q.aggregate(source(spec), spec, s)["rows"]
    chosen = in_windows(events, spec, s, tiling=True)
    countries = sorted(set(chosen.columns["country"].tolist()))
    assert [r["group"] for r in got] == [{"country": c} for c in countries]
    for row in got:
        c = row["group"]["country"]
        amounts = chosen.columns["amount"][chosen.columns["country"] == c]
        assert row["count"] == amounts.size
        assert row["sum_amount"] == float(_exact(amounts))
        assert row["min_amount"] == float(amounts.min())
        assert row["max_amount"] == float(amounts.max())
        assert row["avg_amount"] == pytest.approx(float(_exact(amounts)) / amounts.size,
                                                  rel=1e-12)


def test_aggregate_of_one_group_and_of_an_ungrouped_window(tables):
    spec, events, _ = tables
    s = sel(spec, "hourly_by_country", groups={"country": "C02"})
    (row,) = q.aggregate(source(spec), spec, s)["rows"]
    chosen = in_windows(events, spec, s, tiling=True)
    assert row["group"] == {"country": "C02"} and row["count"] == len(chosen)
    m = sel(spec, "minutely", T0 + dt.timedelta(minutes=10), T0 + dt.timedelta(minutes=20))
    (row,) = q.aggregate(source(spec), spec, m)["rows"]
    chosen = in_windows(events, spec, m, tiling=True)
    assert row["windows"] == 10 and row["count"] == len(chosen)
    assert row["sum_amount"] == float(_exact(chosen.columns["amount"]))


# -- the command line, as a user runs it -------------------------------------------
def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    code = ("import sys; from streaming.cli.main import main; rc = main(sys.argv[1:]); "
            "bad = [m for m in ('pyspark', 'py4j') if m in sys.modules]; "
            "assert not bad, f'imported {bad}'; sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO),
                               "STREAMSKETCH_HOME": ".streamsketch"})


def test_cli_answers_as_json_without_a_jvm(tables):
    spec, events, root = tables
    r = cli("query", "aggregate", "--spec", str(root / "spec.toml"), "--window", "minutely",
            "--json")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    (row,) = json.loads(r.stdout)["rows"]
    assert row["count"] == len(events)
    r = cli("query", "topk", "--spec", str(root / "spec.toml"), "--window", "minutely",
            "--k", "3")
    assert r.returncode == 0, r.stderr
    top = Counter(events.columns["page"].tolist()).most_common(1)[0][0]
    assert f"1. {top} " in r.stdout


def test_cli_overlap_prints_six_sets_with_bounds(tables):
    _, _, root = tables
    r = cli("query", "overlap", "--spec", str(root / "spec.toml"), "--window", "minutely",
            "--from", "2026-03-01T09:00", "--to", "2026-03-01T10:00",
            "--vs-from", "2026-03-01T09:45", "--vs-to", "2026-03-01T10:30")
    assert r.returncode == 0, r.stderr
    labels = [line.split("≈")[0].strip() for line in r.stdout.splitlines()]
    assert labels == ["A", "B", "A or B", "A and B", "A not B", "B not A"], r.stdout
    assert all("(95%: " in line for line in r.stdout.splitlines())


@pytest.mark.parametrize("args, message", [
    (["distinct", "--window", "weekly"], "no window named 'weekly'"),
    (["overlap", "--window", "minutely"], "overlap needs a second range"),
    (["overlap", "--window", "hourly_by_country", "--vs-group", "country=DE"],
     "no theta sketch"),
    (["distinct", "--window", "minutely", "--sketch", "nope"], "no hll sketch named 'nope'"),
    (["topk", "--window", "minutely", "--sketch", "users"], "sketch 'users' is a hll"),
    (["distinct", "--window", "minutely", "--from", "yesterday"], "not an ISO-8601 time"),
    (["distinct", "--window", "minutely", "--from", "2026-03-01T10:00",
      "--to", "2026-03-01T09:00"], "is not before"),
    (["distinct", "--window", "minutely", "--from", "2030-01-01", "--to", "2030-01-02"],
     "no windows of 'minutely' from 2030-01-01"),
    (["aggregate", "--window", "hourly_by_country", "--group", "country=XX"],
     "no windows of 'hourly_by_country'"),
    (["aggregate", "--window", "hourly_by_country", "--group", "city=Paris"],
     "groups by ['country']"),
    (["topk", "--window", "minutely", "--k", "0"], "k must be at least 1"),
    (["topk", "--window", "minutely", "--k", "1000"], "keeps at most"),
    (["contains", "--window", "minutely"], "contains needs a value"),
    (["quantile", "--window", "hourly_by_country", "--q", "1.5"], "not a quantile in [0, 1]"),
    (["quantile", "--window", "hourly_by_country", "--q", "p99"], "--q: not a number"),
    (["quantile", "--window", "minutely"], "no quantiles sketch"),
])
def test_bad_input_is_one_line_and_exit_2(tables, args, message):
    _, _, root = tables
    r = cli("query", *args, "--spec", str(root / "spec.toml"))
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert r.stdout == ""


def test_no_data_names_what_the_table_holds(tables):
    _, _, root = tables
    r = cli("query", "distinct", "--window", "minutely", "--from", "2030-01-01",
            "--to", "2030-01-02", "--spec", str(root / "spec.toml"))
    assert "the table holds 'minutely' windows from 2026-03-01T09:00:00Z to " \
           "2026-03-01T12:00:00Z" in r.stderr


def test_missing_tables_point_at_the_demo_tables(tables, tmp_path):
    spec, _, root = tables
    demo = tmp_path / ".streamsketch" / "demo"
    demo.mkdir(parents=True)
    (demo / "delta").symlink_to(root / "delta", target_is_directory=True)
    r = cli("query", "distinct", "--window", "minutely", "--spec", str(root / "spec.toml"),
            "--tables", str(tmp_path / "nothing-here"), cwd=tmp_path)
    assert r.returncode == 2 and "run the pipeline first" in r.stderr
    bundled = str(REPO / "streaming" / "specs" / "clickstream.toml")
    r = cli("query", "aggregate", "--window", "minutely", "--spec", bundled, cwd=tmp_path)
    assert r.returncode == 2
    assert "the demo's tables are under .streamsketch/demo/delta: add --tables " \
           ".streamsketch/demo/delta" in r.stderr
    r = cli("query", "aggregate", "--window", "minutely", "--spec", bundled,
            "--tables", ".streamsketch/demo/delta", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_demo_tables_are_where_the_demo_writes(tmp_path, monkeypatch):
    from streaming.cli.demo import demo_spec

    monkeypatch.setenv("STREAMSKETCH_HOME", str(tmp_path / "home"))
    spec = demo_spec((tmp_path / "home").resolve(), "127.0.0.1:9092")
    assert Path(spec.sink.path) == q.demo_tables()


def test_the_demo_keeps_out_of_the_tour_s_topic():
    from streaming.cli.demo import demo_spec
    from streaming.spec.model import default_spec_path, load_spec

    tour = load_spec(default_spec_path())
    demo = demo_spec(Path("/nonexistent"), "127.0.0.1:9092")
    assert demo.source.topic != tour.source.topic
    assert demo.source.bootstrap_servers == tour.source.bootstrap_servers  # the same broker


def test_the_demo_prints_a_query_command_that_answers(tmp_path):
    import shlex

    from streaming.cli.demo import demo_spec, query_hint

    spec = demo_spec((tmp_path / ".streamsketch").absolute(), "127.0.0.1:9092")
    events = make_events(start=T0, hours=1, per_hour=600, countries=3, users=300, pages=20)
    write_tables(spec, events)
    hint = query_hint(spec)
    command = hint.splitlines()[0].split(": ", 1)[1]
    argv = shlex.split(command)
    assert argv[:2] == ["streamsketch", "query"] and "--tables" in argv
    r = cli(*argv[1:], "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["windows_merged"] == 60
