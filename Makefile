# The README's two commands: `make run` and `make test`. Everything else is a helper of those.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint services bench stress faults clean

install: $(VENV)/.installed

# torch first, pinned: 2.13.0 is a CPU build on this disk; a bare torch pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: install
	$(BIN)/timber-tasks demo

services:
	bash scripts/services.sh

lint: install
	$(BIN)/ruff check timber_tasks tests bench
	$(BIN)/mypy

test: install services lint
	$(BIN)/pytest

bench: install services
	$(BIN)/python -m bench

# The long load run of the embedded broker (the suite runs a short one): 6 producers x 300 jobs.
stress: install
	TIMBER_STRESS_PRODUCERS=6 TIMBER_STRESS_JOBS=300 $(BIN)/pytest tests/test_embedded_broker.py -k producers --timeout 1800

# The full fault runs (the suite runs 60 jobs each): own redis-server and PostgreSQL on spare ports,
# 2,000 jobs per fault; the figures per fault go to var/faults.jsonl.
faults: install
	mkdir -p var
	TIMBER_FAULT_JOBS=2000 TIMBER_FAULT_DRAIN_LIMIT=600 TIMBER_FAULT_REPORT=var/faults.jsonl \
		$(BIN)/pytest tests/test_fault_suite.py -s --timeout 3600

clean:
	rm -rf var migrations/versions/__pycache__ .pytest_cache .mypy_cache .ruff_cache
