"""Answers from the stored windows: questions, table reads, sketch merges, HTTP API."""
