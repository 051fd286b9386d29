# The README's two commands. Each makes .venv if it is missing and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
CORES  ?= all

.PHONY: run test test-fast lint dry-run clean-results gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,slurm]'
	touch $(VENV)/.installed $@

## make run: the whole study on the default config (config.yaml)
run: $(VENV)/.installed
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --profile profiles/default --cores $(CORES) --resources gpu=1

## make test: the test suite, including the end-to-end smoke run of the whole DAG
test: $(VENV)/.installed-test
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q

## make test-fast: the edit-test loop: unit and dry-run tests, without the tests marked slow
## (workflow runs, trainings) or slurm (pyproject.toml lists the marks)
test-fast: $(VENV)/.installed-test
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -m "not slow and not slurm"

## make gpu-check: on a machine with an NVIDIA GPU, install jax[cuda12], run the smoke preset on the
## GPU, both benchmarks and 300 steps of the paper preset's models; summary in logs/gpu-check/
gpu-check: | $(BIN)/python
	VENV=$(VENV) bash tests/gpu/check.sh

lint: $(VENV)/.installed
	$(BIN)/snakemake --lint

dry-run: $(VENV)/.installed
	$(BIN)/snakemake -n --cores $(CORES) --resources gpu=1

clean-results:
	rm -rf results logs benchmarks
