"""Kafka tools: the embedded broker, the event generator and the batch producer."""
