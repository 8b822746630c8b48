# Two commands on a fresh machine: `make run` and `make test`.
# Both create .venv and install the project (and its dev tools) when
# pyproject.toml changes; nothing needs installing by hand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
# every dependency's exact version (`make lock` refreshes it): what runs, and
# what the benchmarks measured, is the same on every machine
LOCK := requirements.lock
PIP_LOCKED = $(BIN)/python -m pip install --quiet $(if $(wildcard $(LOCK)),-c $(LOCK))
HOST ?= 127.0.0.1
PORT ?= 8000
QUICK ?=
SCALE ?=
SOAK_S ?= 600

.PHONY: run test test-fast lint fmt bench soak clean setup lock

setup: $(STAMP)

$(STAMP): pyproject.toml $(wildcard $(LOCK))
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP_LOCKED) -e '.[dev]'
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
	$(PIP_LOCKED) -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(if $(QUICK),--quick) $(if $(SCALE),--scale)

# Resolve pyproject.toml afresh (newest versions it allows) in a throwaway
# venv and write the exact versions to requirements.lock; commit the result.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[dev,bench]'
	{ echo '# make lock: every dependency of .[dev,bench], exact versions (pip install -c)'; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable; } > $(LOCK)
	rm -rf .lock-venv

# the lifecycle under injected faults for SOAK_S seconds (docs/reliability.md); not part of make test
soak: $(STAMP)
	$(BIN)/python -m bench.soak --seconds $(SOAK_S)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
