# The README's commands. Each target bootstraps what it needs first (idempotent, seconds when done).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Cores that wait actively for OpenMP work starve the other process on a shared 2-core machine.
export OMP_WAIT_POLICY ?= PASSIVE
export WORKBENCH_DATA_MIRROR ?= $(abspath ../shared/data)
PROFILE ?= cpu

.PHONY: setup demo test test-fast lab report clean-reports strip

setup:
	@bash scripts/bootstrap.sh

demo: setup
	$(VENV)/bin/workbench pipeline --profile $(PROFILE)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# JupyterLab from the repository root, on the project's kernel, with the data mirror and the
# project root set (so data/ and runs/ are the pipeline's, whatever folder a notebook runs in).
# The file browser starts in notebooks/ (a folder given as an argument would become the root
# instead). Root (as on these machines) needs --allow-root. Extra options: make lab LAB_ARGS="--no-browser --port 8899"
LAB_ARGS ?=
lab: setup
	WORKBENCH_ROOT=$(CURDIR) $(VENV)/bin/jupyter lab --ServerApp.root_dir=$(CURDIR) \
		--FileContentsManager.preferred_dir=notebooks \
		$(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

report: setup
	$(VENV)/bin/workbench report

strip: setup
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean-reports:
	rm -rf reports
