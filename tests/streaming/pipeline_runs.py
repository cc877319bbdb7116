"""Events sent as JSON with kafka-python, then one ``Pipeline`` run over them in the
test's own Spark session, to the end of what is available."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any


def send_json(bootstrap: str, topic: str, events: Iterable[tuple[Any, bytes]]) -> None:
    """Send each (event, key), the event as JSON text."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for event, key in events:
        producer.send(topic, json.dumps(event).encode(), key=key)
    producer.flush()
    producer.close()


def run_spec(spark: Any, bootstrap: str, spec_text: str, root: Path) -> Any:
    """Write ``spec_text`` to ``root/spec.toml``, run it once with ``available_now``, and
    return the spec (its ``[source]`` pointed at ``bootstrap``)."""
    from streaming.engine.pipeline import Pipeline
    from streaming.spec.model import load_spec

    root.mkdir(parents=True, exist_ok=True)
    (root / "spec.toml").write_text(spec_text)
    spec = load_spec(root / "spec.toml")
    spec = replace(spec, source=replace(spec.source, bootstrap_servers=bootstrap))
    pipeline = Pipeline(spark, spec)
    query = pipeline.start(available_now=True)
    try:
        assert query.awaitTermination(600)
    finally:
        pipeline.stop()
    return spec
