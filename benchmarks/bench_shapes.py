#!/usr/bin/env python
"""The pass over the same events as flat JSON, nested JSON and Avro, same run.

Run from the repository root::

    python -m benchmarks.bench_shapes                 # 200,000 events, 5 rounds each

The events are the bundled generator's (``streamsketch produce``'s) clickstream. Flat:
its records as they are, with the bundled spec. Nested: the same values one level down
(what ``streamsketch produce --shape nested`` sends: :mod:`streaming.kafka.shapes`) with
the bundled spec's fields renamed to those paths (``user.id``, ``page.path``...). Avro:
what ``produce --format avro`` sends, with ``streaming/specs/clickstream-avro.toml``. Each
round runs, in this process, what a Spark task runs on its share of a batch: the decoder
alone, and the whole pass (:func:`streaming.engine.onepass.run_pass`: decode, windows,
metrics and sketches), alternating flat and nested; the figure is each one's best round.
Results go to ``benchmarks/results/shapes.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
DEFAULT_OUT = _HERE / "results" / "shapes.json"

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    import pyarrow as pa

    from streaming.engine.avro_decode import decoder_for
    from streaming.engine.onepass import PassContext, run_pass
    from streaming.kafka.generator import GeneratorConfig, wire_chunks
    from streaming.kafka.shapes import NESTED_PATHS, avro_values, nested_spec_text, nested_values
    from streaming.spec.model import default_spec_path, load_spec, parse_spec

    start = dt.datetime(2026, 11, 23, 10, tzinfo=dt.UTC)
    config = GeneratorConfig(seed=20261123, rate=1000.0, start_time=start)
    keys: list[bytes] = []
    flat: list[bytes] = []
    for chunk in wire_chunks(config):
        keys += chunk.keys.to_pylist()
        flat += chunk.values.to_pylist()
        if len(flat) >= args.events:
            break
    keys, flat = keys[:args.events], flat[:args.events]
    nested = nested_values(pa.array(flat, pa.binary())).to_pylist()
    text = default_spec_path().read_text()
    specs = {"flat": parse_spec(text), "nested": parse_spec(nested_spec_text(text)),
             "avro": load_spec(default_spec_path().with_name("clickstream-avro.toml"))}
    avro = avro_values(pa.array(flat, pa.binary())).to_pylist()
    assert {"user.id", "page.path", "page.amount"} <= dict(specs["nested"].events.fields).keys()
    assert set(NESTED_PATHS) >= {"user_id", "page", "amount"}
    now_ms = int((start + dt.timedelta(days=1)).timestamp() * 1000)
    tables = {}
    for shape, values in (("flat", flat), ("nested", nested), ("avro", avro)):
        n = len(values)
        tables[shape] = pa.table({
            "_key": pa.array(keys, pa.binary()), "_value": pa.array(values, pa.binary()),
            "_topic": pa.array(["t"] * n, pa.string()),
            "_partition": pa.array([0] * n, pa.int32()),
            "_offset": pa.array(range(n), pa.int64()),
            "_source_ts": pa.nulls(n, pa.timestamp("us", tz="UTC"))})

    best: dict[str, dict[str, float]] = {s: {"decode": 1e9, "pass": 1e9} for s in tables}
    valid: dict[str, int] = {}
    load = os.getloadavg()
    for _ in range(args.rounds):
        for shape, table in tables.items():
            spec = specs[shape]
            decoder = decoder_for(spec.events)
            t = time.perf_counter()
            decoded = decoder.decode(table.column("_value").combine_chunks(), now_ms=now_ms)
            best[shape]["decode"] = min(best[shape]["decode"], time.perf_counter() - t)
            valid[shape] = int(decoded.ok.size)
            t = time.perf_counter()
            run_pass(table, PassContext(spec, 0, now_ms))
            best[shape]["pass"] = min(best[shape]["pass"], time.perf_counter() - t)
    if len(set(valid.values())) != 1:
        raise SystemExit(f"the shapes decoded differently: {valid}")
    rows = {shape: {"decode_events_per_s": args.events / b["decode"],
                    "pass_events_per_s": args.events / b["pass"],
                    "decode_seconds": b["decode"], "pass_seconds": b["pass"],
                    "mean_value_bytes": sum(len(v or b"") for v in
                                            {"flat": flat, "nested": nested, "avro": avro}[shape])
                    / args.events}
            for shape, b in best.items()}
    report = {"benchmark": "shapes", "created_utc": dt.datetime.now(dt.UTC).isoformat(),
              "events": args.events, "rounds": args.rounds, "valid": valid["flat"],
              "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                          "loadavg_at_start": load, "loadavg_at_end": os.getloadavg()},
              "rows": rows,
              "nested_over_flat_pass_time": best["nested"]["pass"] / best["flat"]["pass"],
              "nested_over_flat_decode_time":
                  best["nested"]["decode"] / best["flat"]["decode"],
              "avro_over_flat_pass_time": best["avro"]["pass"] / best["flat"]["pass"],
              "avro_over_flat_decode_time": best["avro"]["decode"] / best["flat"]["decode"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    for shape, r in rows.items():
        print(f"{shape:7} decode {r['decode_events_per_s']:>10,.0f}/s   pass "
              f"{r['pass_events_per_s']:>10,.0f}/s   {r['mean_value_bytes']:.0f} B/event")
    print(f"nested / flat time: pass {report['nested_over_flat_pass_time']:.2f}x, decode "
          f"{report['nested_over_flat_decode_time']:.2f}x; avro / flat: pass "
          f"{report['avro_over_flat_pass_time']:.2f}x, decode "
          f"{report['avro_over_flat_decode_time']:.2f}x (load {load[0]:.1f})")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
