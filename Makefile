# streamsketch: one entry point for setting up, testing and running.
#   make test       everything: venv, packages, JVM jars, unit + integration tests
#   make test-unit  fast unit tests only (no JVM), under two minutes
#   make demo       the live pipeline on the embedded broker
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install jars prometheus dashboards test test-unit test-integration test-slow lint typecheck bench demo clean help

help:
	@grep -E '^#   make' Makefile | sed 's/^#   //'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(STAMP)

# Spark's Kafka connector, delta-spark and the Kafka broker, from Maven Central,
# verified and cached outside the repository (second runs are offline).
jars: install
	$(VENV)/bin/streamsketch jars

# A real Prometheus (server + promtool) for the observability tests, from Debian's
# package. Installed when missing and we are root; otherwise those tests skip and
# say why.
prometheus:
	@if command -v promtool >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's prometheus package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends prometheus >/dev/null; \
	else echo "promtool not found: install Debian's prometheus package for the observability tests"; fi

dashboards: install
	$(PY) dashboards/build.py

# pytest exit code 5 means "no tests collected": reported, and still a failure.
test: install jars prometheus
	@$(PY) -m pytest -m "not slow" $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$rc

test-unit: install
	$(PY) -m pytest -m "not integration and not slow and not docker" $(PYTEST_ARGS)

test-integration: install jars prometheus
	$(PY) -m pytest -m "integration and not slow" $(PYTEST_ARGS)

test-slow: install jars
	$(PY) -m pytest -m "slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check streaming sketches tests benchmarks dashboards

typecheck: install
	$(VENV)/bin/mypy

bench: install jars
	$(PY) -m benchmarks.bench_sketches

demo: install jars
	$(VENV)/bin/streamsketch demo

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info
