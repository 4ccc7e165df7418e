# Quick start: `make demo`, then `make test`. Both bootstrap what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: demo test lint setup extension clean

# the CLI and its few dependencies
$(BIN)/hybrid-search: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e .
	touch $@

# test tools, torch (pinned CPU wheel) and FlagEmbedding for reference computations
$(VENV)/.test-deps: $(BIN)/hybrid-search pyproject.toml plpython/pyproject.toml
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH) -e ./plpython -e '.[test]'
	touch $@

setup: $(BIN)/hybrid-search
	$(BIN)/hybrid-search setup

demo: $(BIN)/hybrid-search
	$(BIN)/hybrid-search demo

test: $(VENV)/.test-deps
	$(BIN)/hybrid-search setup --test-model
	$(BIN)/pytest

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/sqlfluff lint sql
	$(BIN)/hadolint Dockerfile

extension:
	$(MAKE) -C extension

clean:
	$(MAKE) -C extension clean
