# Two entry points for people: `make demo` (set up + run the pipeline on the embedded
# sample) and `make test`. Everything else is a helper of those two.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Extras installed by `make setup` (see pyproject.toml [project.optional-dependencies]);
# `test` brings the web demo's (`demo`: gradio) since its tests are part of `make test`.
EXTRAS ?= test,s3
export PATH := $(abspath $(BIN)):$(PATH)
export AWS_EC2_METADATA_DISABLED := true

.PHONY: demo setup test test-fast lint lock lock-check repro bench clean-venv release-dvc

demo: setup
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show

setup: $(STAMP)

# uv installs exactly what uv.lock pins (with the PyTorch build that suits this machine),
# then the package itself in editable mode: no PYTHONPATH tricks, `deepfake-detector` on PATH.
$(STAMP): uv.lock pyproject.toml tools/install.py
	$(PYTHON) tools/install.py --venv $(VENV) --extras $(EXTRAS)
	touch $@

test: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile

test-fast: setup
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow"

# Style and complexity rules of pyproject.toml's [tool.ruff], and the package's layers of
# [tool.importlinter] (CI runs it).
lint: setup
	$(BIN)/ruff check src tests tools benchmarks
	$(BIN)/lint-imports

# After editing the dependencies in pyproject.toml: re-resolve and write uv.lock, then
# requirements.txt (pip users: the core + the demo and s3 extras, exported from the lock).
lock:
	$(PYTHON) tools/install.py --lock

# Fails when uv.lock does not satisfy pyproject.toml (someone edited the deps without `make lock`)
# or requirements.txt is not the export of uv.lock (stale, or edited by hand). No network needed.
lock-check:
	$(PYTHON) tools/install.py --check-lock

# release/dvc.yaml is generated from dvc.yaml plus the release's differences (tools/release_dvc.py);
# run this after editing dvc.yaml (tests/test_release_dvc.py fails until it is regenerated).
release-dvc: setup
	$(BIN)/python tools/release_dvc.py

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
