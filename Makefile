# v2g-settle: `make demo` runs the main job, `make test` runs the checks.
# Both install what they need (.venv, node_modules) once; later runs install nothing.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
PYTEST_ARGS ?=

.PHONY: install demo test test-slow bench lint typecheck compile clean

install: $(VENV_STAMP) $(NODE_STAMP)

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: install
	$(VENV)/bin/v2g demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

# The default suite: lint, types, and every test not marked slow or bench.
test: lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

# Long runs and benchmarks-as-tests, excluded from `make test`.
test-slow: install
	$(PY) -m pytest -m "slow or bench" $(PYTEST_ARGS)

compile: install
	$(PY) scripts/compile_contracts.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
