"""Spec validation: the documented example is accepted; each mistake is one clear line."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from streaming.errors import SpecError
from streaming.spec.model import default_spec_path, load_spec, parse_duration, parse_spec

ISSUE_EXAMPLE = '''
[source]
topic = "flights"
bootstrap_servers = "localhost:9092"   # KAFKA_BOOTSTRAP_SERVERS overrides
starting_offsets = "earliest"
max_offsets_per_trigger = 200000

[events]
time_field = "ts"                      # ISO-8601 text, or epoch with time_format
time_format = "iso8601"                # or "epoch_ms", "epoch_s"
watermark = "2 hours"
[events.fields]                        # fields used; others are ignored
carrier = "string"
tailnum = "string"
dest = "string"
distance = "double"

[[windows]]
name = "hourly"
size = "1 hour"                        # optional slide = "15 minutes" makes it sliding
group_by = ["carrier"]                 # may be empty
metrics = ["count", "sum(distance)", "max(distance)"]

  [[windows.sketches]]
  name = "tails"
  kind = "hll"
  field = "tailnum"
  precision = 14

  [[windows.sketches]]
  name = "dests"
  kind = "cms"
  field = "dest"
  epsilon = 0.001
  delta = 0.01
  top_k = 20

  [[windows.sketches]]
  name = "seen_tails"
  kind = "bloom"
  field = "tailnum"
  capacity = 100000
  error_rate = 0.01

[sink]
path = "./data/delta"                  # tables: aggregates, sketches, quarantine
checkpoint = "./data/checkpoints"
trigger = "5 seconds"
'''


def test_issue_example_is_accepted_as_written(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    spec = parse_spec(ISSUE_EXAMPLE)
    assert spec.source.topic == "flights" and spec.source.max_offsets_per_trigger == 200000
    assert spec.events.watermark_s == 7200
    (w,) = spec.windows
    assert (w.name, w.size_s, w.slide_s, w.group_by) == ("hourly", 3600, 3600, ("carrier",))
    assert [m.text for m in w.metrics] == ["count", "sum(distance)", "max(distance)"]
    kinds = {s.name: (s.kind, s.param_dict) for s in w.sketches}
    assert kinds["tails"] == ("hll", {"precision": 14, "seed": 0})
    assert kinds["dests"][1]["width"] == 2719 and kinds["dests"][1]["depth"] == 5
    assert kinds["dests"][1]["top_k"] == 20
    assert kinds["seen_tails"][1]["capacity"] == 100000
    assert spec.sink.trigger_s == 5


def test_env_overrides_bootstrap(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:29092")
    assert parse_spec(ISSUE_EXAMPLE).source.bootstrap_servers == "broker:29092"


def test_bundled_spec_is_valid():
    spec = load_spec(default_spec_path())
    assert {w.name for w in spec.windows} == {"minutely", "hourly_by_country"}


def _line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


@pytest.mark.parametrize(("old", "new", "key", "needle"), [
    ('watermark = "2 hours"', 'watermark = "2 fortnights"', "events.watermark", "watermark ="),
    ('precision = 14', 'precision = 30', "windows[0].sketches[0].precision", "precision ="),
    ('error_rate = 0.01', 'error_rate = 1.5', "windows[0].sketches[2].error_rate",
     "error_rate ="),
    ('kind = "cms"', 'kind = "tdigest"', "windows[0].sketches[1].kind", 'kind = "tdigest"'),
    ('group_by = ["carrier"]', 'group_by = ["airline"]', "windows[0].group_by", "group_by ="),
    ('"max(distance)"', '"max(carrier)"', "windows[0].metrics", "metrics ="),
    ('size = "1 hour"', 'size = "1 hour"\nslide = "2 hours"', "windows[0].slide", "slide ="),
    ('trigger = "5 seconds"', 'trigger = 5', "sink.trigger", "trigger = 5"),
    ('starting_offsets = "earliest"', 'startng_offsets = "earliest"', "source.startng_offsets",
     "startng_offsets"),
    ('carrier = "string"', 'carrier = "varchar"', "events.fields.carrier", 'carrier = "varchar"'),
])
def test_each_mistake_names_key_and_line(monkeypatch, old, new, key, needle):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    text = ISSUE_EXAMPLE.replace(old, new, 1)
    assert text != ISSUE_EXAMPLE
    with pytest.raises(SpecError) as exc:
        parse_spec(text, origin="job.toml")
    msg = str(exc.value)
    assert "\n" not in msg
    assert exc.value.key == key, msg
    assert exc.value.line == _line_of(text, needle), msg
    assert msg.startswith(f"job.toml:{exc.value.line}: {key}: ")


def test_unknown_key_suggests_the_right_one():
    text = ISSUE_EXAMPLE.replace('starting_offsets = "earliest"', 'startng_offsets = "earliest"')
    with pytest.raises(SpecError, match="did you mean 'starting_offsets'"):
        parse_spec(text)


def test_inline_secret_is_refused():
    text = ISSUE_EXAMPLE.replace('max_offsets_per_trigger = 200000',
                                 'max_offsets_per_trigger = 200000\n[source.kafka]\n'
                                 'sasl.password = "hunter2"')
    text = text.replace('[source.kafka]\nsasl.password', '[source.kafka]\n"sasl.password"')
    with pytest.raises(SpecError, match="may not be written inline"):
        parse_spec(text)


def test_secret_reference_never_prints(monkeypatch):
    monkeypatch.setenv("KAFKA_PW", "hunter2")
    text = ISSUE_EXAMPLE.replace('max_offsets_per_trigger = 200000',
                                 'max_offsets_per_trigger = 200000\n[source.kafka]\n'
                                 '"sasl.jaas.config" = { env = "KAFKA_PW" }')
    spec = parse_spec(text)
    assert "hunter2" not in repr(spec) and "hunter2" not in str(spec.to_dict())
    (key, secret), = spec.source.kafka_options
    assert secret.reveal() == "hunter2"


@pytest.mark.parametrize(("text", "seconds"), [
    ("2 hours", 7200), ("15 minutes", 900), ("5 seconds", 5), ("1h", 3600), ("90s", 90),
    ("500 ms", 0.5), ("1 day", 86400),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "five minutes", "5 parsecs", "-1 hour"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_cli_bad_spec_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(ISSUE_EXAMPLE.replace("precision = 14", "precision = 99"))
    proc = subprocess.run([sys.executable, "-m", "streaming.cli", "run", "--spec", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "precision: must be between 4 and 18" in proc.stderr
    assert f"{bad}:" in proc.stderr


def test_cli_missing_spec_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "streaming.cli", "run", "--spec",
                           str(tmp_path / "nope.toml")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "spec file not found" in proc.stderr


QUANTILES = ISSUE_EXAMPLE.replace('''[sink]''', '''  [[windows.sketches]]
  name = "distances"
  kind = "quantiles"
  field = "distance"
  relative_accuracy = 0.01

[sink]''')


@pytest.mark.parametrize(("line", "params"), [
    ("", (("relative_accuracy", 0.01),)),
    ('mapping = "log"', (("relative_accuracy", 0.01),)),  # the default: the same spec
    ('mapping = "cells"', (("relative_accuracy", 0.01), ("mapping", "cells"))),
])
def test_quantiles_mapping_is_a_sketch_param(monkeypatch, line, params):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    text = QUANTILES.replace("relative_accuracy = 0.01", f"relative_accuracy = 0.01\n  {line}")
    sk = parse_spec(text).windows[0].sketches[3]
    assert sk.params == params
    made = sk.new()
    assert made.mapping == ("cells" if "cells" in line else "log")
    assert made.relative_accuracy == 0.01
    if "cells" not in line:
        assert parse_spec(text).to_dict() == parse_spec(QUANTILES).to_dict()


@pytest.mark.parametrize("value", ['"Cells"', '"ddsketch"', '""', "1", "true"])
def test_bad_quantiles_mapping_is_one_line(monkeypatch, value):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    text = QUANTILES.replace("relative_accuracy = 0.01",
                             f"relative_accuracy = 0.01\n  mapping = {value}")
    with pytest.raises(SpecError) as exc:
        parse_spec(text, origin="job.toml")
    msg = str(exc.value)
    assert "\n" not in msg and exc.value.key == "windows[0].sketches[3].mapping", msg
    assert exc.value.line == _line_of(text, "mapping ="), msg
    assert msg.startswith(f"job.toml:{exc.value.line}: windows[0].sketches[3].mapping: ")
    assert ('must be "log" or "cells"' in msg) == value.startswith('"'), msg


def test_mapping_is_refused_for_other_kinds(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    text = QUANTILES.replace("precision = 14", 'precision = 14\n  mapping = "cells"')
    with pytest.raises(SpecError) as exc:
        parse_spec(text)
    assert exc.value.key == "windows[0].sketches[0].mapping"


def test_sketches_of_another_mapping_refuse_to_merge():
    import sketches
    from streaming.engine.sketch_merge import merge_blobs

    spec = parse_spec(QUANTILES.replace("relative_accuracy = 0.01",
                                        'relative_accuracy = 0.01\n  mapping = "cells"'))
    cells = spec.windows[0].sketches[3]
    log_blob = sketches.QuantileSketch(0.01).update([1.0, 2.0]).to_bytes()
    cells_blob = cells.new().update([3.0]).to_bytes()
    assert merge_blobs([cells_blob, cells_blob], cells).count == 2
    with pytest.raises(sketches.IncompatibleSketchError, match="mapping='log'"):
        merge_blobs([cells_blob, log_blob], cells)


def test_cli_bad_quantiles_mapping_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(QUANTILES.replace("relative_accuracy = 0.01",
                                     'relative_accuracy = 0.01\n  mapping = "linear"'))
    proc = subprocess.run([sys.executable, "-m", "streaming.cli", "run", "--spec", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert 'sketches[3].mapping: must be "log" or "cells"' in proc.stderr


@pytest.mark.parametrize(("key", "uri"), [("path", "s3://lake/delta"),
                                          ("checkpoint", "gs://lake/ck"),
                                          ("path", "file:///data/delta")])
def test_object_storage_is_refused_not_taken_for_a_local_folder(monkeypatch, tmp_path, key, uri):
    """Taken as a path, ``s3://lake/delta`` became a folder ``s3:/lake/delta`` in the
    working directory and the run wrote there with exit 0."""
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    text = re.sub(rf"^{key} = .*$", f'{key} = "{uri}"', ISSUE_EXAMPLE, count=1, flags=re.M)
    assert text != ISSUE_EXAMPLE
    with pytest.raises(SpecError) as exc:
        parse_spec(text, origin="job.toml", base_dir=tmp_path)
    scheme = uri.split(":", 1)[0]
    assert exc.value.key == f"sink.{key}"
    assert f"{scheme}:// is not supported yet" in str(exc.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [
    ["query", "distinct", "--tables", "s3://lake/delta"],
    ["serve", "--tables", "s3://lake/delta"],
    ["replay", "s3://lake/log.jsonl", "--topic", "t"],
    ["replay", "log.jsonl", "--spec", "x.toml", "--backfill", "--sink", "s3://lake/bf"],
    ["record", "--topic", "t", "--out", "abfss://c@a.dfs.core.windows.net/log.jsonl"],
    ["recover", "--spec", "x.toml", "--sink", "hdfs://nn/bf"],
])
def test_a_uri_where_a_command_takes_a_folder_is_one_line_and_exit_2(tmp_path, argv):
    proc = subprocess.run([sys.executable, "-m", "streaming.cli", *argv], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "is not supported yet" in proc.stderr
    assert list(tmp_path.iterdir()) == []


SPARK_TABLE = '''
[spark]
"spark.executor.memory" = "4g"
executor.cores = 2
spark.dynamicAllocation.enabled = true
"spark.hadoop.fs.s3a.secret.key" = { env = "LAKE_SECRET" }
'''


def test_a_spark_table_is_settings_applied_after_ours_and_not_state(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    plain = parse_spec(ISSUE_EXAMPLE)
    spec = parse_spec(ISSUE_EXAMPLE + SPARK_TABLE)
    settings = dict(spec.spark)
    assert settings["spark.executor.memory"] == "4g"
    assert settings["spark.executor.cores"] == "2"
    assert settings["spark.dynamicAllocation.enabled"] == "true"
    assert "LAKE_SECRET" in repr(settings["spark.hadoop.fs.s3a.secret.key"])
    # executor sizes may change between runs: the checkpoint does not depend on them
    assert spec.digest() == plain.digest()
    assert spec.state_fingerprint() == plain.state_fingerprint()


@pytest.mark.parametrize(("line", "needle"), [
    ('"spark.hadoop.fs.s3a.secret.key" = "abc"', "secrets may not be written inline"),
    ('"spark.master" = "local[4]"', "give --master instead"),
    ('"spark.sql.session.timeZone" = "Europe/Paris"', "windows are computed in UTC"),
    ('"spark.jars" = "x.jar"', "verified cache"),
    ('"executor memory" = "4g"', "is not a Spark setting"),
    ('"spark.executor.memory" = ["4g"]', "unsupported value"),
])
def test_a_bad_spark_setting_is_one_line(monkeypatch, line, needle):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with pytest.raises(SpecError) as exc:
        parse_spec(ISSUE_EXAMPLE + f"\n[spark]\n{line}\n", origin="job.toml")
    assert needle in str(exc.value) and "\n" not in str(exc.value)
    assert "abc" not in str(exc.value)


GITHUB = '''
[source]
topic = "github"

[events]
time_field = "created_at"
watermark = "1 hour"
[events.fields]
"actor.login" = "string"
repo.name = "string"
type = "string"
[events.fields.payload]
size = "long"
pull_request.additions = "long"

[[windows]]
name = "hourly"
size = "1 hour"
group_by = ["repo.name"]
metrics = ["count", "sum(payload.size)", "avg(payload.pull_request.additions)"]
  [[windows.sketches]]
  name = "actors"
  kind = "hll"
  field = "actor.login"

[sink]
path = "./d"
checkpoint = "./c"
'''


def test_nested_fields_by_path_in_each_way_toml_writes_them(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    spec = parse_spec(GITHUB)
    assert dict(spec.events.fields) == {
        "actor.login": "string", "repo.name": "string", "type": "string",
        "payload.size": "long", "payload.pull_request.additions": "long"}
    (w,) = spec.windows
    assert w.group_by == ("repo.name",) and w.sketches[0].field == "actor.login"
    assert [m.column for m in w.metrics] == [
        "count", "sum_payload_size", "avg_payload_pull_request_additions"]
    assert {"sum_payload_size", "sum_payload_pull_request_additions",
            "n_payload_pull_request_additions", "avg_payload_pull_request_additions"} <= \
        {name for name, _ in spec.metric_columns()}


@pytest.mark.parametrize(("old", "new", "needle"), [
    ('"actor.login" = "string"', '"actor..login" = "string"', "a path of names"),
    ('"actor.login" = "string"', '"actor.log-in" = "string"', "a path of names"),
    ('type = "string"', 'actor = "string"', "actor is declared as a value, and as an object "
                                            "holding actor.login"),
    ('type = "string"', '"created_at.day" = "string"', "created_at is declared as a value"),
    ('type = "string"', 'payload_size = "long"', "would share the column name payload_size"),
    ('time_field = "created_at"', 'time_field = "payload"', "payload is declared as a value, "
                                                              "and as an object holding"),
    ('time_field = "created_at"', 'time_field = "meta.-t"', "a path of names"),
    ('"sum(payload.size)"', '"sum(repo.name)"', "needs a numeric field"),
])
def test_a_bad_path_is_one_line(monkeypatch, old, new, needle):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    text = GITHUB.replace(old, new, 1)
    assert text != GITHUB
    with pytest.raises(SpecError) as exc:
        parse_spec(text, origin="job.toml")
    assert needle in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(("old", "new", "needle"), [
    ('group_by = ["repo.name"]', 'group_by = ["labels"]',
     "labels is a list<string>: a list field feeds sketches; grouping by one is not defined"),
    ('"sum(payload.size)"', '"sum(sizes)"', "sum(sizes): sizes is a list<long>, and metrics "
                                            "over lists are not defined"),
    ('field = "actor.login"', 'field = "labels"\n  precision = 12', None),
])
def test_list_fields_feed_sketches_only(monkeypatch, old, new, needle):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    text = GITHUB.replace('type = "string"', 'type = "string"\nlabels = "list<string>"\n'
                          'sizes = "list<long>"', 1).replace(old, new, 1)
    if needle is None:
        spec = parse_spec(text)
        assert spec.windows[0].sketches[0].field == "labels"
        assert dict(spec.events.fields)["labels"] == "list<string>"
        return
    with pytest.raises(SpecError) as exc:
        parse_spec(text, origin="job.toml")
    assert needle in str(exc.value) and "\n" not in str(exc.value)


# -- sketches stored as Apache DataSketches images ------------------------------------
@pytest.mark.parametrize(("line", "cls", "params"), [
    ('format = "datasketches"', "DataSketchesHLL",
     (("format", "datasketches"), ("precision", 14))),
    ('format = "native"', "HyperLogLog", (("precision", 14), ("seed", 0))),
])
def test_hll_format_picks_the_sketch_class(monkeypatch, line, cls, params):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    text = ISSUE_EXAMPLE.replace("precision = 14", f"precision = 14\n  {line}")
    sk = parse_spec(text).windows[0].sketches[0]
    assert sk.params == params
    assert type(sk.new()).__name__ == cls
    assert "format" not in sk.param_dict
    if "native" in line:  # the default, spelled out: the same spec, the same fingerprint
        assert parse_spec(text).to_dict() == parse_spec(ISSUE_EXAMPLE).to_dict()


def test_theta_kind_defaults_to_sparks_k(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    text = ISSUE_EXAMPLE.replace('kind = "hll"\n  field = "tailnum"\n  precision = 14',
                                 'kind = "theta"\n  field = "tailnum"')
    sk = parse_spec(text).windows[0].sketches[0]
    assert (sk.kind, sk.params) == ("theta", (("lg_k", 12),))
    assert type(sk.new()).__name__ == "ThetaSketch" and sk.new().lg_k == 12


@pytest.mark.parametrize(("old", "new", "key", "needle"), [
    ("precision = 14", 'precision = 14\n  format = "datasketches"\n  seed = 3', "seed",
     "DataSketches' own seed"),
    ("precision = 14", 'precision = 22\n  format = "datasketches"', "precision",
     "between 4 and 21"),
    ("precision = 14", 'precision = 14\n  format = "druid"', "format", 'unknown format'),
    ('kind = "hll"\n  field = "tailnum"\n  precision = 14',
     'kind = "theta"\n  field = "tailnum"\n  lg_k = 30', "lg_k", "between 4 and 26"),
    ('kind = "hll"\n  field = "tailnum"\n  precision = 14',
     'kind = "theta"\n  field = "tailnum"\n  precision = 12', "precision", "unknown key"),
])
def test_bad_datasketches_sketch_is_one_line(monkeypatch, old, new, key, needle):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    text = ISSUE_EXAMPLE.replace(old, new)
    with pytest.raises(SpecError) as exc:
        parse_spec(text, origin="job.toml")
    msg = str(exc.value)
    assert "\n" not in msg and exc.value.key == f"windows[0].sketches[0].{key}", msg
    assert needle in msg, msg
