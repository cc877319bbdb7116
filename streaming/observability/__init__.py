"""Prometheus metrics of a running pipeline and the server that exposes them."""
