"""The per-batch engine: source, decode, one pass, state, tables, checkpoint, pipeline.

It imports neither the Kafka tools (``streaming.kafka``) nor the log tools
(``streaming.logs.reader``); see docs/architecture.md.
"""
