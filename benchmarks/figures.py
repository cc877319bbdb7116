#!/usr/bin/env python
"""Write the README's benchmark figures from the benchmarks' JSON: one source of truth.

    python -m benchmarks.figures            # rewrite the block between the markers
    python -m benchmarks.figures --print    # show it instead

Reads ``benchmarks/results/NAME.json`` for each NAME of cardinality, driver, pipeline,
backfill, memory, query, startup, produce, shapes, replay, quantiles, sketches and
sketches-datasketches
(whichever exist; a missing one leaves its lines out) and replaces everything between
``<!-- figures:begin -->`` and ``<!-- figures:end -->`` in README.md. Every number in
that block comes from those files, with the command that produced it and the machine's
load average when it ran.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
RESULTS = _HERE / "results"
README = _HERE.parent / "README.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _k(x: float) -> str:
    return f"{x / 1000:,.1f} k" if x < 1e6 else f"{x / 1e6:,.2f} M"


def _load_avg(doc: dict[str, Any]) -> str:
    la = doc.get("loadavg_at_end") or doc.get("loadavg_at_start")
    return f"load average {la[0]:.1f}" if la else "load not recorded"


def _gc(doc: dict[str, Any]) -> str:
    gc = doc.get("jvm_gc")
    if gc is None:
        return ""
    return ("the JVM's default collector for the in-process rows, " if gc == "default"
            else "the serial collector for the in-process rows, ")


def pipeline_lines(doc: dict[str, Any]) -> list[str]:
    out = [f"`python -m benchmarks.bench_pipeline --events {doc['events']}` (the bundled spec, "
           f"{doc['per_trigger']:,} records per trigger, one topic for every row, "
           f"{_gc(doc)}{_load_avg(doc)}):", "",
           "| run over the same topic | events/s |", "|---|---|"]
    for key, label in (("source_only", "Spark's Kafka source alone (each batch counted)"),
                       ("ours", "**the pipeline**: `streamsketch run --available-now` as "
                                "shipped, start-up excluded"),
                       ("jvm_only", "JVM-only variant: `from_json` + Spark aggregates and "
                                    "HLL/CMS, collected (no Bloom, quarantine or Delta)")):
        if key in doc:
            out.append(f"| {label} | {_k(doc[key]['events_per_s'])} |")
    ours = doc.get("ours") or {}
    if "process_seconds" in ours:
        out += ["", f"The whole `run` process took {ours['process_seconds']:.1f} s "
                    f"({ours['startup_seconds']:.1f} s of it start-up: "
                    f"{_k(ours['events_per_s_with_startup'])} events/s counting it), "
                    f"peak RSS of its process tree {ours['peak_tree_rss_bytes'] / 2**30:.2f} GiB."]
    big = _load("pipeline-1m")
    if big and "ours" in big:
        out += ["", f"With {big['per_trigger']:,} records per trigger (same command with "
                    f"`--per-trigger {big['per_trigger']}`): the pipeline "
                    f"{_k(big['ours']['events_per_s'])} events/s."]
    ratios = [f"{doc[k]:.2f}x {label}" for k, label in (
        ("ours_over_source_only", "the Kafka source's rate"),
        ("ours_over_jvm_only", "the JVM-only variant's")) if k in doc]
    if ratios:
        out += ["", "The pipeline runs " + " and ".join(ratios) + "."]
    lat = doc.get("latency") or {}
    if "p50_s" in lat:
        out += ["", f"Live at {lat['rate']:,.0f} events/s with a {lat['trigger_s']:g} s trigger, "
                    f"produce → Delta commit: p50 {lat['p50_s']:.1f} s, p99 {lat['p99_s']:.1f} s "
                    f"({lat['p99_over_trigger']:.1f} triggers)."]
    return out


def cardinality_lines(doc: dict[str, Any]) -> list[str]:
    load = doc.get("machine", {}).get("load_at_start")
    out = [f"`python -m benchmarks.bench_cardinality --events {doc['events']}` (a group-by over "
           f"{doc['users']:,} users and {doc['pages']:,} pages in 5-minute windows, count, exact "
           f"sum and HLL per cell, {doc['per_trigger']:,} records per trigger, one topic for "
           "both; each command timed as a whole process, start-up included"
           + (f", load average {load:.1f} at start" if load is not None else "") + "):", "",
           "| command | seconds | events/s | peak RSS, whole process tree | wrong cells |",
           "|---|---|---|---|---|"]
    wrong = doc.get("check", {})
    cells = sum(v["cells"] for v in wrong.values()) if wrong else None
    bad = sum(v["wrong"] for v in wrong.values()) if wrong else None
    for key, label in (("ours", "`streamsketch run --available-now`"),
                       ("plain_spark", "the same job in plain Spark (`from_json` → "
                                       "`groupBy(window, key).agg(...)` → delta-spark)"),
                       ("state_store", "the state-store design: `applyInPandasWithState` per "
                                       "(window, group), our HLL, `noop` sink")):
        r = doc.get(key)
        if r is None:
            continue
        check = f"{bad:,} of {cells:,}" if key == "ours" and cells is not None else "-"
        out.append(f"| {label} | {r['seconds']:.1f} | {_k(r['events_per_second'])} | "
                   f"{r['peak_tree_rss_bytes'] / 2**30:.2f} GiB | {check} |")
    if "ratio" in doc:
        out += ["", f"`streamsketch run` finishes the job {doc['ratio']:.2f}x as fast as plain "
                    "Spark."]
    return out


def driver_lines(doc: dict[str, Any]) -> list[str]:
    small, big = doc["runs"]
    load = doc.get("machine", {}).get("load_at_start")
    return [f"`python -m benchmarks.bench_driver --events {doc['events']}` (the same job over "
            f"{small['users']:,} and over {big['users']:,} users, {doc['per_trigger']:,} "
            "records per trigger"
            + (f", load average {load:.1f} at start" if load is not None else "") + "): "
            f"{small['cells']:,} and {big['cells']:,} cells "
            f"({small['wrong'] + big['wrong']:,} wrong), {doc['cells_ratio']:.1f}x; the "
            f"driver's CPU per batch (median) {small['median_driver_cpu_s']:.3f} s and "
            f"{big['median_driver_cpu_s']:.3f} s, {doc['driver_cpu_ratio']:.2f}x."]


def backfill_lines(doc: dict[str, Any]) -> list[str]:
    rows = {r["row"]: r for r in doc["rows"]}
    b = rows.get("backfill")
    if b is None:
        return []
    text = (f"`python -m benchmarks.bench_backfill --count {doc['count']} --records-per-batch "
            f"{b['records_per_batch']}` ({_load_avg(doc)}): backfill "
            f"{_k(b['events_per_s'])} events/s through the same pass in one process, no JVM")
    if "cpu_us_per_event" in b:
        text += f" ({b['cpu_us_per_event']:.1f} µs of CPU per event)"
    if "read" in rows:
        text += f"; the log reader alone {_k(rows['read']['events_per_s'])} events/s"
    return [text + "."]


def memory_lines(doc: dict[str, Any]) -> list[str]:
    out = ["", f"`python -m benchmarks.bench_memory --events {doc['events']}`: a year-long log "
               "(hourly windows × 16 carriers, HLL p14 + Count-Min ε 0.001 + Bloom 100k sketches, "
               f"{_load_avg(doc)}):", "",
           "| path | seconds | events/s in the batches (start-up excluded) | "
           "peak RSS, whole process tree (GB) | its parts' own peaks | "
           "peak PSS | late rows | wrong cells |",
           "|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        parts = ", ".join(f"{k.replace('_', ' ')} {v / 2**30:.2f}" for k, v in
                          sorted(r.get("peak_rss_bytes_by_role", {}).items()))
        pss = r.get("peak_tree_pss_bytes")
        rate = r.get("events_per_s_batches")
        out.append(f"| {r['mode']} | {r['seconds']:.1f} | "
                   f"{'-' if rate is None else f'{rate:,.0f}'} | "
                   f"{r['peak_tree_rss_bytes'] / 2**30:.2f} GiB "
                   f"({r['peak_tree_rss_bytes'] / 1e9:.2f}) | {parts or '-'} | "
                   f"{'-' if pss is None else f'{pss / 2**30:.2f} GiB'} | "
                   f"{r['late_quarantined']:,} | {r['cells_wrong']:,} of {r['cells']:,} |")
    return out


def query_lines(doc: dict[str, Any]) -> list[str]:
    out = ["", f"`python -m benchmarks.bench_query --runs {doc['runs']}` (a year of hourly "
               "windows × 16 groups × 3 sketches; each query a fresh CLI process, start "
               f"included; load average {doc['loadavg_after'][0]:.1f}), median seconds:", "",
           "| layout | sketch rows | distinct | topk | contains | aggregate |",
           "|---|---|---|---|---|---|"]
    for name, lay in doc["layouts"].items():
        q = lay["queries"]
        cells = [f"{q[k]['median']:.2f}" if k in q and "median" in q[k] else "—"
                 for k in ("distinct", "topk", "contains", "aggregate")]
        out.append(f"| {name} | {lay['table']['sketches']['rows']:,} | " + " | ".join(cells)
                   + " |")
    return out


def replay_lines(doc: dict[str, Any]) -> list[str]:
    rows = {r.get("row"): r for r in doc.get("rows", []) if isinstance(r, dict)}
    r = rows.get("replay")
    if not r:
        return []
    return ["", f"`python -m benchmarks.bench_replay` ({_load_avg(doc)}): replay "
                f"{_k(r['events_per_s'])} events/s into a local broker."]


def produce_lines(doc: dict[str, Any]) -> list[str]:
    rows = {r.get("key"): r for r in doc.get("rows", []) if "error" not in r}
    if "produce" not in rows:
        return []
    la = doc["machine"].get("loadavg_at_start")
    load = f"load average {la[0]:.1f} at start" if la else "load not recorded"
    out = ["", f"`python -m benchmarks.bench_produce` ({doc['count']:,} events into a local "
               f"broker on the same cores, {load}):", "",
           "| command | events/s | whole process |", "|---|---|---|"]
    for key, label in (("produce", "`streamsketch produce --rate 0`"),
                       ("replay", "`streamsketch replay LOG --topic T`, the same events")):
        r = rows.get(key)
        if r is not None:
            out.append(f"| {label} | {_k(r['events_per_s'])} | "
                       f"{r.get('process_seconds', r['seconds']):.1f} s |")
    if "generate" in rows:
        out += ["", f"Building the records alone: {_k(rows['generate']['events_per_s'])} "
                    "events/s."]
    return out


def startup_lines(doc: dict[str, Any]) -> list[str]:
    med = doc.get("median", {})
    if "with_archive" not in med or "without_archive" not in med:
        return []
    la = doc["machine"].get("loadavg_at_start")
    load = f"load average {la[0]:.1f} at start" if la else "load not recorded"
    rounds = sum(1 for r in doc.get("runs", []) if r.get("archive"))
    out = ["", f"`python -m benchmarks.bench_startup` (`streamsketch run --available-now` over "
               f"an empty topic, medians of {rounds} rounds each way, alternating, {load}), "
               "seconds after the process started:", "",
           "| driver classes | tables ready | first batch committed | exit |", "|---|---|---|---|"]
    for key, label in (("with_archive", "mapped from the class archive (`streamsketch jars`)"),
                       ("without_archive", "loaded as usual")):
        m = med[key]
        out.append(f"| {label} | {m['tables_ready']:.1f} | {m['first_batch']:.1f} | "
                   f"{m['exit']:.1f} |")
    phases = doc.get("median_phases_with_archive")
    if phases:
        out += ["", "Where the time goes (`run --verbose` prints these; medians with the "
                    "class archive):", "", "| phase | seconds |", "|---|---|"]
        out += [f"| {name} | {sec:.2f} |" for name, sec in phases.items()]
    return out


def sketch_lines(doc: dict[str, Any]) -> list[str]:
    rows = {r["key"]: r for r in doc.get("rows", []) if r.get("median") is not None}

    def cell(key: str) -> str:
        r = rows.get(key)
        if r is None:
            return "—"
        if r["unit"] in ("items/s", "ops/s"):
            return f"{r['median'] / 1e6:,.1f} M/s"
        if r["unit"] == "s":
            return f"{r['median'] * 1000:,.1f} ms"
        return f"{r['median']:,.3g} {r['unit']}"

    table = [("HLL p14, int64", "hll.int64"), ("HLL p14, strings", "hll.strings"),
             ("Count-Min, int64", "cms.int64"), ("merge 1,000 HLL p14", "merge.int64")]
    out = ["", "`python -m benchmarks.bench_sketches` (medians):", "",
           "| sketch | ours | Apache DataSketches | datasketch |", "|---|---|---|---|"]
    for label, key in table:
        out.append(f"| {label} | {cell(key + '.ours')} | {cell(key + '.datasketches')} | "
                   f"{cell(key + '.datasketch')} |")
    return out


def datasketches_lines(doc: dict[str, Any]) -> list[str]:
    rows = {r["key"]: r for r in doc.get("rows", []) if r.get("median") is not None}
    la = doc["machine"].get("loadavg_at_start")
    load = f"load average {la[0]:.1f}" if la else "load not recorded"

    def rate(key: str) -> str:
        return f"{rows[key]['median'] / 1e6:,.1f} M/s" if key in rows else "—"

    out = ["", f"`python -m benchmarks.bench_sketches --only datasketches` (sketches stored as "
               f"Apache DataSketches images; {doc['n']:,} values, medians, {load}):", "",
           "| update | ours | Apache DataSketches, per value | our own HLL |",
           "|---|---|---|---|"]
    for label, kind, data in (("HLL lg12, int64", "dshll", "int64"),
                              ("HLL lg12, strings", "dshll", "strings"),
                              ("Theta lg12, int64", "theta", "int64"),
                              ("Theta lg12, strings", "theta", "strings")):
        own = rate(f"hll12.{data}.ours") if kind == "dshll" else "—"
        out.append(f"| {label} | {rate(f'{kind}.{data}.ours')} | "
                   f"{rate(f'{kind}.{data}.datasketches')} | {own} |")
    merges = [(label, f"{kind}-merge.int64") for label, kind in (("HLL", "dshll"),
                                                                  ("Theta", "theta"))]
    parts = [f"{label} {rows[k + '.ours']['median']:,.0f} ms (DataSketches "
             f"{rows[k + '.datasketches']['median']:,.0f} ms)" for label, k in merges
             if k + ".ours" in rows and k + ".datasketches" in rows]
    if parts:
        out += ["", "Merging 10,000 stored images, from the bytes to the estimate: "
                + "; ".join(parts) + "."]
    return out


def quantile_lines(doc: dict[str, Any]) -> list[str]:
    rows = {r["key"]: r for r in doc["rows"] if "median" in r}
    la = doc["machine"].get("loadavg_at_end") or doc["machine"].get("loadavg_at_start")
    load = f"load average {la[0]:.1f}" if la else "load not recorded"
    n = doc["args"]["n"]
    out = ["", f"`python -m benchmarks.bench_quantiles` ({n:,} log-normal values, relative "
               f"accuracy 0.01, {load}), median values/s of a vectorised update:", "",
           "| sketch | values/s | × the fastest other |", "|---|---|---|"]
    base = max((rows[k]["median"] for k in ("update.kll.batch", "update.ddsketch.per_item")
                if k in rows), default=None)
    for key, label in (("update.ours.cells.numpy", "ours, `mapping = \"cells\"`"),
                       ("update.ours.numpy", "ours, `mapping = \"log\"` (the default)"),
                       ("update.kll.batch", "DataSketches KLL (k=200), array update"),
                       ("update.ddsketch.per_item", "ddsketch (DDSketch), per value")):
        if key in rows:
            ratio = f"{rows[key]['median'] / base:.1f}" if base else "-"
            out.append(f"| {label} | {_k(rows[key]['median'])} | {ratio} |")
    merge = [rows[k]["median"] for k in ("merge.ours.union", "merge.ours.cells.union")
             if k in rows]
    if merge:
        out += ["", f"Merging 1,000 sketches: {max(merge):.1f} ms at most (either mapping)."]
    return out


def shapes_lines(doc: dict[str, Any]) -> list[str]:
    rows = doc.get("rows", {})
    if "flat" not in rows or "nested" not in rows:
        return []
    la = doc["machine"].get("loadavg_at_start")
    load = f"load average {la[0]:.1f}" if la else "load not recorded"
    out = ["", f"`python -m benchmarks.bench_shapes` (the bundled clickstream, "
               f"{doc['events']:,} events, as flat JSON and with its fields one level down, "
               f"best of {doc['rounds']} rounds in one process, {load}):", "",
           "| shape | decode, events/s | whole pass, events/s |", "|---|---|---|"]
    for shape, label in (("flat", "JSON, flat (`user_id`, `page`...)"),
                         ("nested", "JSON, nested (`user.id`, `page.path`...)"),
                         ("avro", "Avro (Confluent wire format)")):
        if shape not in rows:
            continue
        r = rows[shape]
        out.append(f"| {label} | {_k(r['decode_events_per_s'])} | "
                   f"{_k(r['pass_events_per_s'])} |")
    out += ["", f"Nested takes {doc['nested_over_flat_pass_time']:.2f}x the flat pass's time "
                f"({doc['nested_over_flat_decode_time']:.2f}x for decoding alone)."]
    if "avro_over_flat_pass_time" in doc:
        out[-1] += (f" Avro takes {doc['avro_over_flat_pass_time']:.2f}x "
                    f"({doc['avro_over_flat_decode_time']:.2f}x decoding).")
    return out


def block() -> str:
    lines: list[str] = []
    for name, fn in (("cardinality", cardinality_lines), ("driver", driver_lines),
                     ("pipeline", pipeline_lines), ("backfill", backfill_lines),
                     ("memory", memory_lines), ("query", query_lines),
                     ("startup", startup_lines), ("produce", produce_lines),
                     ("shapes", shapes_lines),
                     ("replay", replay_lines),
                     ("quantiles", quantile_lines),
                     ("sketches", sketch_lines),
                     ("sketches-datasketches", datasketches_lines)):
        doc = _load(name)
        if doc is not None:
            more = fn(doc)
            while more and more[0] == "":
                more = more[1:]
            if lines and more:
                lines.append("")
            lines += more
    return "\n".join(lines).strip("\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--print", action="store_true", help="print the block, change nothing")
    args = ap.parse_args(argv)
    text = block()
    if args.print:
        print(text)
        return 0
    readme = README.read_text()
    if BEGIN not in readme or END not in readme:
        print(f"README.md has no {BEGIN} ... {END} block", file=sys.stderr)
        return 2
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    print(f"README.md: figures from {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
