# Two entry points for people: `make demo` (set up + run the pipeline on the embedded
# sample) and `make test`. Everything else is a helper of those two.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export AWS_EC2_METADATA_DISABLED := true

.PHONY: demo setup test test-fast repro bench clean-venv

demo: setup
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show

setup: $(STAMP)

# Reinstall when the pins change; `pip install -e .` makes the package importable
# (no PYTHONPATH tricks) and puts the `deepfake-detector` command on PATH.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
