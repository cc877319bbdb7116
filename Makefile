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

.PHONY: install jars test test-unit test-integration test-slow lint typecheck bench demo clean help

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

# pytest exit code 5 means "no tests collected": reported, and still a failure.
test: install jars
	@$(PY) -m pytest -m "not slow" $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$rc

test-unit: install
	$(PY) -m pytest -m "not integration and not slow and not docker" $(PYTEST_ARGS)

test-integration: install jars
	$(PY) -m pytest -m "integration and not slow" $(PYTEST_ARGS)

test-slow: install jars
	$(PY) -m pytest -m "slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check streaming sketches tests benchmarks

typecheck: install
	$(VENV)/bin/mypy

bench: install jars
	$(PY) -m benchmarks.bench_sketches

demo: install jars
	$(VENV)/bin/streamsketch demo

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info
