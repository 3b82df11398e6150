# The two commands a newcomer types: `make render` (the main job) and `make test` (the suite).
# Each creates .venv on first use. torch==2.13.0 goes in first, alone: a CPU build of it lies on
# this machine's disk, while a bare `torch` requirement would pull a multi-GB CUDA build.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tessera-installed
ARGS ?=

.PHONY: setup render test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

render: $(STAMP)
	$(BIN)/tessera render $(ARGS)

# Two pytest-xdist workers, whole modules each (their module-scoped Ray clusters and models stay shared): much of
# the suite waits on process start-up, Ray and subprocesses, so two modules at once fill the two cores.
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 -n 2 --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) outputs .pytest_cache
