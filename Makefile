# Two commands on a fresh machine: `make run` and `make test`.
# Both create .venv and install the project (and its dev tools) when
# pyproject.toml changes; nothing needs installing by hand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
HOST ?= 127.0.0.1
PORT ?= 8000
QUICK ?=
SCALE ?=

.PHONY: run test test-fast lint fmt bench clean setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/ledger run --host $(HOST) --port $(PORT)

# the suite includes a smoke run of the benchmark harness: it needs the bench group too.
# Tiers: tests/unit (pure, no database), tests/integration, tests/api, tests/faults.
test: $(BENCH_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the unit tier alone: pure code, no database, seconds
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check ledger projections tests bench
	$(BIN)/ruff format --check ledger projections tests bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix ledger projections tests bench
	$(BIN)/ruff format ledger projections tests bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(if $(QUICK),--quick) $(if $(SCALE),--scale)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
