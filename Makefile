# v2g-settle: `make demo` runs the main job, `make test` runs the checks.
# Both install what they need (.venv, node_modules) once; later runs install nothing.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
# slither needs web3 < 8, so it lives in its own virtual environment
SLITHER_VENV := .venv-slither
SLITHER_STAMP := $(SLITHER_VENV)/.installed
# The portal's browser tests drive Debian's chromium (Playwright's own browser download is not reachable)
CHROMIUM := /usr/bin/chromium
PYTEST_ARGS ?=
# The default suite runs on two pytest-xdist workers, a file per worker at a time (a file's module
# fixtures are built once); 2 and not `auto`: a container's CPU quota is not what `auto` counts, and the
# suite's timing tests (heartbeat p99 under a flood, a silent station's delay) hold at one worker a core.
PYTEST_WORKERS ?= 2

.PHONY: install demo test test-slow lint slither typecheck compile gas bench soak clean portal-assets

install: $(VENV_STAMP) $(NODE_STAMP)

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Installed once, only when missing (as root, or through sudo).
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null

# The portal's vendored browser scripts, rebuilt from node_modules (ethers, Chart.js, htmx copied;
# @openzeppelin/merkle-tree bundled by esbuild); see backend/portal/static/vendor/MANIFEST.json.
portal-assets: $(NODE_STAMP)
	$(PY) scripts/vendor_portal_assets.py

$(SLITHER_STAMP): tools/slither-requirements.txt
	$(PYTHON) -m venv $(SLITHER_VENV)
	$(SLITHER_VENV)/bin/pip install --quiet --upgrade pip
	$(SLITHER_VENV)/bin/pip install --quiet -r tools/slither-requirements.txt
	touch $@

demo: install
	$(VENV)/bin/v2g demo

lint: install slither
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Static analysis of the project's own contracts (mocks and OpenZeppelin excluded): fails on any
# high or medium finding.
slither: $(NODE_STAMP) $(SLITHER_STAMP)
	$(SLITHER_VENV)/bin/slither contracts --solc tools/solc --solc-standard-json \
		--solc-remaps "@openzeppelin/=node_modules/@openzeppelin/" \
		--filter-paths "node_modules|contracts/test" \
		--exclude-informational --exclude-low --exclude-optimization --fail-medium

typecheck: install
	$(VENV)/bin/mypy

# The default suite: lint, types, and every test not marked slow or bench (the portal's run in chromium).
test: lint typecheck $(CHROMIUM)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Long runs and benchmarks-as-tests, excluded from `make test`.
test-slow: install
	$(PY) -m pytest -m "slow or bench" $(PYTEST_ARGS)

compile: install
	$(PY) scripts/compile_contracts.py

# Benchmarks: their own commands, never part of `make test`.
bench: install
	$(PY) scripts/bench_scheduler.py --evs 1000 --date 2023-07-02
	$(PY) scripts/bench_scheduler.py --evs 10000 --date 2023-07-02

# The money path under faults: 200 stations over 7 accelerated days, kill -9 at random (about 25 minutes).
soak: install
	$(PY) scripts/soak_operations.py --days 7 --stations 200 --minutes-per-day 3

gas: install
	$(PY) scripts/gas_report.py --leaves 100000

clean:
	rm -rf $(VENV) $(SLITHER_VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
