# Quick start: `make demo`, then `make test`. Both bootstrap what they need.
# Every Python package comes from a lock in requirements/ (hash-checked); `make lock`
# regenerates the locks from the *.in files there and runs the whole suite on them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q --disable-pip-version-check
LOCK_INSTALL := $(PIP) --require-hashes --no-deps -r
# our own packages, built by the lock's setuptools
OWN_INSTALL := $(PIP) --no-deps --no-build-isolation
PIP_COMPILE := $(BIN)/pip-compile -q --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links

.PHONY: demo test lint setup extension clean lock bench

# the CLI and its few dependencies
$(BIN)/hybrid-search: pyproject.toml requirements/cli.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(LOCK_INSTALL) requirements/cli.lock
	$(OWN_INSTALL) -e .
	touch $@

# test tools, torch and FlagEmbedding for reference computations
$(VENV)/.test-deps: $(BIN)/hybrid-search requirements/dev.lock plpython/pyproject.toml
	$(LOCK_INSTALL) requirements/dev.lock
	$(OWN_INSTALL) -e ./plpython
	touch $@

setup: $(BIN)/hybrid-search
	$(BIN)/hybrid-search setup

demo: $(BIN)/hybrid-search
	$(BIN)/hybrid-search demo

test: $(VENV)/.test-deps
	$(BIN)/hybrid-search setup --test-model
	$(BIN)/pytest

# The retrieval benchmark at BENCH_DOCS documents against its peers (Seismic, tantivy:
# requirements/bench.lock, which the command installs into .venv; the product never
# imports them). Needs a setup (the extension installed); see README "Retrieval at scale".
BENCH_DOCS ?= 100000
bench: $(BIN)/hybrid-search
	$(BIN)/hybrid-search bench --docs $(BENCH_DOCS)

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/sqlfluff lint sql
	$(BIN)/hadolint Dockerfile

# New locks from requirements/*.in (newest versions the *.in files allow), then the
# whole suite on them in a fresh virtualenv; commit the locks only if it passes.
lock: $(VENV)/.test-deps
	cd requirements && ../$(PIP_COMPILE) --upgrade -o plpython.lock plpython.in
	cd requirements && ../$(PIP_COMPILE) --upgrade -o cli.lock cli.in
	cd requirements && ../$(PIP_COMPILE) --upgrade -o dev.lock dev.in
	cd requirements && ../$(PIP_COMPILE) --upgrade -o bench.lock bench.in
	rm -rf $(VENV)
	$(MAKE) lint test

extension:
	$(MAKE) -C extension

clean:
	$(MAKE) -C extension clean
