"""The Grafana dashboards: valid against Grafana's schema, and only about metrics we export.

The schema is derived from Grafana's own published types (npm @grafana/schema,
see derive_schema.sh). The exported metric names are not listed by hand: the
feed of tests/streaming/test_metrics.py (which proves it gives every metric a
sample) runs against a fresh registry and the exposition is parsed.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import jsonschema
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DASHBOARD_DIR = REPO / "dashboards"
NAMES = ("streamsketch-operations.json", "streamsketch-analytics.json")
SCHEMA = HERE / "grafana-dashboard.schema.json"
PROVISIONING = REPO / "docker" / "grafana" / "provisioning"

PROMQL_FUNCTIONS = {
    "abs", "absent", "avg", "avg_over_time", "bottomk", "ceil", "clamp_max", "clamp_min",
    "count", "count_over_time", "delta", "deriv", "floor", "histogram_quantile", "increase",
    "irate", "label_replace", "max", "max_over_time", "min", "min_over_time", "quantile",
    "rate", "round", "scalar", "sort", "sort_desc", "stddev", "sum", "time", "topk", "vector",
}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                   "unless", "offset", "bool"}


def load(name: str) -> dict:
    return json.loads((DASHBOARD_DIR / name).read_text())


#: panels answered by the query API (streamsketch serve), not Prometheus: checked in
#: tests/streaming/test_serve.py against a real server
QUERY_API_TYPE = "yesoreyeram-infinity-datasource"


def panels(d: dict) -> list[dict]:
    """The Prometheus panels of a dashboard."""
    return [p for p in d["panels"]
            if p["type"] != "row" and p.get("datasource", {}).get("type") != QUERY_API_TYPE]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, set[str]]:
    """Sample name -> label names, from feeding a fresh PipelineMetrics every event kind."""
    path = REPO / "tests" / "streaming" / "test_metrics.py"
    spec = importlib.util.spec_from_file_location("streamsketch_metrics_feed", path)
    assert spec is not None and spec.loader is not None
    feed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(feed)
    from streaming.observability.metrics import PipelineMetrics

    m = PipelineMetrics(CollectorRegistry())
    feed.feed(m, tmp_path_factory.mktemp("feed"))
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    assert len(out) > 30
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects; fails on an unknown function."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # string literals
    text = re.sub(r"\{[^}]*\}", "", text)                     # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                    # range durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?", text):
        word, call = m.group(0).rstrip("( \t"), m.group(1)
        if call:
            assert word in PROMQL_FUNCTIONS, f"unknown PromQL function {word} in {expr}"
        elif word not in PROMQL_KEYWORDS and not re.fullmatch(r"[0-9.e]+", word):
            names.add(word)
    return names


def targets(d: dict):
    for p in panels(d):
        for t in p["targets"]:
            yield p, t


@pytest.mark.parametrize("name", NAMES)
def test_dashboard_validates_against_grafanas_schema(name):
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(load(name)), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:20])


def test_schema_rejects_what_grafana_would_not_load():
    """The schema is strict enough to matter: unknown keys and wrong types fail."""
    v = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    d = load(NAMES[0])
    assert v.is_valid(d)
    for broken in ({**d, "pannels": []}, {**d, "schemaVersion": "41"},
                   {**d, "panels": [{**panels(d)[0], "gridPos": {"x": 0}}]},
                   {**d, "templating": {"list": [{"name": "q", "type": "nope"}]}}):
        assert not v.is_valid(broken)


def test_committed_json_is_what_build_py_writes():
    spec = importlib.util.spec_from_file_location("streamsketch_dashboard_build",
                                                  DASHBOARD_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert sorted(build.DASHBOARDS) == sorted(NAMES)
    assert build.main(["--check"]) == 0, "run: python dashboards/build.py"


def test_uids_and_panel_ids_are_unique():
    uids = [load(n)["uid"] for n in NAMES]
    assert len(set(uids)) == len(uids)
    for n in NAMES:
        ids = [p["id"] for p in load(n)["panels"]]
        assert len(ids) == len(set(ids)), n
        titles = [p["title"] for p in panels(load(n))]
        assert len(titles) == len(set(titles)), n


def test_every_panel_has_the_provisioned_datasource_and_a_query():
    ds = (PROVISIONING / "datasources" / "prometheus.yml").read_text()
    uid = re.search(r"^\s*uid:\s*(\S+)", ds, re.M).group(1)
    assert re.search(r"^\s*type:\s*prometheus\s*$", ds, re.M)
    assert re.search(r"^\s*url:\s*http://prometheus:9090\s*$", ds, re.M)
    for n in NAMES:
        ps = panels(load(n))
        assert len(ps) >= 8
        for p in ps:
            assert p["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
            assert p["targets"], f"{p['title']} has no query"
            for t in p["targets"]:
                assert t["expr"].strip() and t["refId"], p["title"]
                assert t["datasource"] == p["datasource"], p["title"]
            ref_ids = [t["refId"] for t in p["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), p["title"]


@pytest.mark.parametrize("name", NAMES)
def test_every_metric_a_panel_queries_is_exported(name, exported):
    used: set[str] = set()
    for p, t in targets(load(name)):
        names = metric_names(t["expr"])
        assert names, f"{p['title']}: {t['expr']} selects no metric"
        missing = names - set(exported)
        assert not missing, f"{p['title']}: not exported: {missing}"
        labels = set().union(*(exported[m] for m in names))
        legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")))
        assert legend <= labels, f"{p['title']}: legend uses {legend - labels}"
        for label in re.findall(r"(\w+)\s*=~?\s*\"", t["expr"]):
            assert label in labels, f"{p['title']}: filters on unknown label {label}"
        used |= names
    assert len(used) >= 8


def test_metric_name_extraction():
    assert metric_names('histogram_quantile(0.9, sum by (le) (rate(a_bucket{q="$x"}[5m])))'
                        ) == {"a_bucket"}
    assert metric_names("time() - max(b{q=\"1\"}) / c * 1000") == {"b", "c"}
    with pytest.raises(AssertionError):
        metric_names("made_up_fn(a)")


@pytest.mark.parametrize("name", NAMES)
def test_template_variables_are_defined_and_query_exported_labels(name, exported):
    d = load(name)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert {"query", "window"} <= set(variables)
    used = set()
    for _, t in targets(d):
        used |= set(re.findall(r"\$(?!__)(\w+)", t["expr"]))
    assert used <= set(variables), f"undefined variables: {used - set(variables)}"
    assert "query" in used and "window" in used
    for v in variables.values():
        assert v["type"] == "query" and v["datasource"]["uid"] == "streamsketch-prometheus"
        m = re.fullmatch(r"label_values\((\w+)(\{.*\})?,\s*(\w+)\)", v["query"])
        assert m, v["query"]
        metric, _, label = m.groups()
        assert metric in exported and label in exported[metric], v["query"]
        for dep in re.findall(r"\$(\w+)", v["query"]):
            assert list(variables).index(dep) < list(variables).index(v["name"]), \
                f"{v['name']} uses ${dep} before it is defined"


def test_dashboard_provider_points_where_compose_mounts_the_dashboards():
    text = (PROVISIONING / "dashboards" / "streamsketch.yml").read_text()
    assert re.search(r"^\s*path:\s*/var/lib/grafana/dashboards\s*$", text, re.M)
    assert re.search(r"^\s*type:\s*file\s*$", text, re.M)
    # Grafana loads every *.json under the path: nothing but dashboards may live there.
    for path in DASHBOARD_DIR.rglob("*.json"):
        assert path.name in NAMES, f"{path} would be loaded as a dashboard"
