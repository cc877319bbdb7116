"""Recorded event logs: reading and writing them, replay into Kafka, backfill."""
