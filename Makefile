# The README's commands. Each target bootstraps what it needs first (idempotent, seconds when done).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Cores that wait actively for OpenMP work starve the other process on a shared 2-core machine.
export OMP_WAIT_POLICY ?= PASSIVE
export WORKBENCH_DATA_MIRROR ?= $(abspath ../shared/data)
PROFILE ?= cpu

.PHONY: setup demo test test-fast report clean-reports strip

setup:
	@bash scripts/bootstrap.sh

demo: setup
	$(VENV)/bin/workbench pipeline --profile $(PROFILE)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

report: setup
	$(VENV)/bin/workbench report

strip: setup
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean-reports:
	rm -rf reports
