"""``streamsketch serve``: real HTTP requests against tables with known events."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from urllib.parse import urlencode

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_query_delta import REPO, T0, in_windows, sel, tables  # noqa: F401 - fixture

from streaming.cli import serve


@pytest.fixture(scope="module")
def server(tables):  # noqa: F811 - the fixture imported above
    spec, _, _ = tables
    srv, thread = serve.start(spec, "127.0.0.1", 0)
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def get(srv, path: str, **params) -> tuple[int, dict]:
    query = urlencode([(k, v) for k, vs in params.items()
                       for v in (vs if isinstance(vs, list) else [vs])])
    url = srv.url.rstrip("/") + path + (f"?{query}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert resp.headers["Content-Type"] == "application/json"
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        assert exc.headers["Content-Type"] == "application/json"
        return exc.code, json.loads(exc.read())


def ms(t: dt.datetime) -> str:
    return str(int(t.timestamp() * 1000))


def test_health_and_index(server):
    assert get(server, "/health") == (200, {"ok": True})
    status, body = get(server, "/")
    assert status == 200
    assert [w["name"] for w in body["windows"]] == ["minutely", "hourly_by_country"]
    assert "/query/distinct" in body["routes"]


def test_aggregate_counts_every_event(server, tables):  # noqa: F811
    _, events, _ = tables
    status, body = get(server, "/query/aggregate", window="minutely")
    assert status == 200
    (row,) = body["rows"]
    assert row["count"] == len(events)


def test_distinct_over_grafana_epoch_milliseconds(server, tables):  # noqa: F811
    spec, events, _ = tables
    start, end = T0 + dt.timedelta(minutes=20), T0 + dt.timedelta(minutes=80)
    status, body = get(server, "/query/distinct", window="minutely", **{"from": ms(start),
                                                                         "to": ms(end)})
    assert status == 200, body
    chosen = in_windows(events, spec, sel(spec, "minutely", start, end), tiling=False)
    hll = spec.window("minutely").sketches[0].new().update(chosen.columns["user_id"])
    assert body["estimate"] == hll.estimate()
    assert body["windows_merged"] == 60
    assert body["from"] == start.isoformat() and body["to"] == end.isoformat()


def test_topk_of_one_group(server, tables):  # noqa: F811
    _, events, _ = tables
    status, body = get(server, "/query/topk", window="hourly_by_country", group="country=C01",
                       k="3")
    assert status == 200, body
    pages = events.columns["page"][events.columns["country"] == "C01"].tolist()
    assert body["top"][0]["item"] == Counter(pages).most_common(1)[0][0]
    assert body["group"] == {"country": "C01"} and len(body["top"]) == 3


def test_quantiles_of_one_group(server, tables):  # noqa: F811
    _, events, _ = tables
    status, body = get(server, "/query/quantile", window="hourly_by_country",
                       group="country=C01", q="0.5,0.99")
    assert status == 200, body
    amounts = np.sort(events.columns["amount"][events.columns["country"] == "C01"])
    assert body["count"] == amounts.size
    for row in body["quantiles"]:
        exact = amounts[int(np.floor(row["q"] * (amounts.size - 1)))]
        assert row["lower_bound"] <= exact <= row["upper_bound"]
        assert abs(row["value"] - exact) <= body["relative_error"] * exact


@pytest.mark.parametrize("path, params, status, message", [
    ("/query/distinct", {"window": "weekly"}, 400, "no window named 'weekly'"),
    ("/query/distinct", {"window": "minutely", "from": "noon"}, 400, "not an ISO-8601 time"),
    ("/query/topk", {"window": "minutely", "k": "many"}, 400, "not a whole number"),
    ("/query/topk", {"window": "minutely", "k": "0"}, 400, "k must be at least 1"),
    ("/query/contains", {"window": "minutely"}, 400, "contains needs a value"),
    ("/query/quantile", {"window": "hourly_by_country", "q": "2"}, 400, "not a quantile"),
    ("/query/distinct", {"window": "minutely", "color": "red"}, 400, "unknown parameter"),
    ("/query/distinct", {"window": "minutely", "sketch": "pages"}, 400, "is a cms"),
    ("/query/distinct", {"window": ["minutely", "hourly_by_country"]}, 400, "given 2 times"),
    ("/query/distinct", {"window": "minutely", "from": "2031-01-01", "to": "2031-01-02"},
     404, "no windows of 'minutely'"),
    ("/query/distinct", {"window": "minutely", "from": "99999999999999999"}, 400,
     "past the year 9999"),
    ("/query/distinct", {"window": "minutely", "from": "\u00b2"}, 400, "not an ISO-8601 time"),
    ("/query/median", {}, 404, "no query 'median'"),
    ("/elsewhere", {}, 404, "no route"),
])
def test_errors_are_json_with_a_status(server, path, params, status, message):
    got, body = get(server, path, **params)
    assert got == status
    assert list(body) == ["error"] and message in body["error"]
    assert "\n" not in body["error"]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_command_serves_on_the_loopback_by_default(tables, tmp_path, stop):  # noqa: F811
    _, events, root = tables
    proc = subprocess.Popen(
        [sys.executable, "-m", "streaming.cli", "serve", "--spec", str(root / "spec.toml"),
         "--port", "0"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = proc.stderr.readline()
        match = re.search(r"answering queries on (http://([\d.]+):(\d+)/)", line)
        assert match, line
        assert match.group(2) == "127.0.0.1"
        with urllib.request.urlopen(match.group(1) + "query/aggregate?window=minutely",
                                    timeout=30) as resp:
            (row,) = json.loads(resp.read())["rows"]
        assert row["count"] == len(events)
        # Ctrl-C or SIGTERM: one line, exit 0, no traceback
        proc.send_signal(stop)
        rest = proc.communicate(timeout=30)[1]
        name = "Ctrl-C" if stop == signal.SIGINT else "SIGTERM"
        assert proc.returncode == 0, rest
        assert rest == f"serve: stopped on {name}\n", rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(15)


def test_a_busy_port_is_one_line_and_exit_2(tables, server):  # noqa: F811
    _, _, root = tables
    port = str(server.server_address[1])
    r = subprocess.run([sys.executable, "-m", "streaming.cli", "serve", "--spec",
                        str(root / "spec.toml"), "--port", port], capture_output=True,
                       text=True, cwd=REPO, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and f"cannot serve queries on 127.0.0.1:{port}" in r.stderr


def test_tables_not_written_yet_are_503_until_they_are(tmp_path):
    from query_tables import make_events, write_tables
    from test_query_delta import make_spec

    spec = make_spec(tmp_path)
    srv, thread = serve.start(spec, "127.0.0.1", 0)
    try:
        status, body = get(srv, "/query/distinct", window="minutely")
        assert status == 503 and "no sketches table under" in body["error"]
        write_tables(spec, make_events(start=T0, hours=1, per_hour=1200, countries=2))
        status, body = get(srv, "/query/distinct", window="minutely")
        assert status == 200 and body["windows_merged"] == 60
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def test_the_dashboard_panel_request_is_answered(server, tables):  # noqa: F811
    """The analytics dashboard's query-API panels: the request Grafana's Infinity data
    source makes (its URL, parameters, ${__from}/${__to} as epoch ms) against a real
    server, and the columns they read present in the answer."""
    from urllib.parse import urlsplit

    import yaml

    spec, events, _ = tables
    board = json.loads((REPO / "dashboards" / "streamsketch-analytics.json").read_text())
    provisioned = yaml.safe_load((REPO / "docker" / "grafana" / "provisioning" / "datasources"
                                  / "queries.yml").read_text())["datasources"][0]
    api_panels = [p for p in board["panels"]
                  if p.get("datasource", {}).get("type") == provisioned["type"]]
    assert api_panels
    start, end = T0, T0 + dt.timedelta(hours=1)
    for panel in api_panels:
        assert panel["datasource"]["uid"] == provisioned["uid"]
        for t in panel["targets"]:
            assert t["datasource"] == panel["datasource"]
            url = urlsplit(t["url"])
            assert f"{url.scheme}://{url.netloc}" == provisioned["url"]
            assert provisioned["url"] in provisioned["jsonData"]["allowedHosts"]
            params = {p["key"]: p["value"].replace("${__from}", ms(start))
                      .replace("${__to}", ms(end)) for p in t["url_options"]["params"]}
            status, body = get(server, url.path, **params)
            assert status == 200, body
            for column in t["columns"]:
                assert column["selector"] in body, column
            if url.path == "/query/distinct":
                chosen = in_windows(events, spec, sel(spec, params["window"], start, end),
                                    tiling=False)
                hll = spec.window(params["window"]).sketches[0].new()
                assert body["estimate"] == hll.update(chosen.columns["user_id"]).estimate()


_WHAT = ["aggregate", "distinct", "topk", "contains", "similarity", "quantile", "overlap"]
_PARAM = ["window", "from", "to", "group", "sketch", "k", "value", "vs_from", "vs_to", "q",
          "vs_group"]


#: what a parameter may hold: any text, epoch milliseconds up to far past the year 9999,
#: and digits of other scripts (``str.isdigit`` is true for them; ``int`` of some fails)
_TEXT = st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=24),
                  st.integers(0, 10**25).map(str),
                  st.sampled_from(["\u00b2", "\u0661\u0662", "\uff11\uff12", "-1", "1e3"]))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(what=st.sampled_from(_WHAT), name=st.sampled_from(_PARAM), text=_TEXT)
def test_any_parameter_text_is_answered_or_refused_in_one_line(server, what, name, text):
    """Whatever a parameter holds, the answer is 200 or 4xx with a one-line reason: never
    a 500 (which the server sends only for a bug)."""
    params = {"window": "hourly_by_country" if what == "quantile" else "minutely",
              "value": "x", "vs_from": "2026-11-23T00:00", "vs_to": "2026-11-24T00:00"}
    params[name] = text
    got, body = get(server, f"/query/{what}", **params)
    assert got in (200, 400, 404), (got, body)
    if got != 200:
        assert list(body) == ["error"] and "\n" not in body["error"], body
