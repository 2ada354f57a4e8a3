# mtkit: `make demo` runs the main job end to end, `make test` runs the tests.
# Both create .venv on first use. torch is installed first (TORCH_SPEC) so that pip does not
# pull a multi-GB CUDA build where a CPU wheel is wanted; override it for your own build, e.g.
#   make install TORCH_SPEC='torch --index-url https://download.pytorch.org/whl/cu124'
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
BENCH_ARGS ?=   # e.g. --model-dir runs/demo-en-de/model: decode that model instead of training one
PY          = $(VENV)/bin/python
STAMP       = $(VENV)/.installed

export HF_DATASETS_OFFLINE ?= 1
export HF_HUB_OFFLINE ?= 1

.PHONY: install test test-fast lint demo bench docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,ct2,serve]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

test-fast: $(STAMP)  # the edit-test loop: everything but the tests marked slow
	$(PY) -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(PY) -m ruff check mtkit tests recipes/benchmarks
	$(PY) -m mypy mtkit

demo: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" DEMO=1 bash recipes/multi30k.sh

docs: $(STAMP)
	$(PY) -m mtkit.cli.reference > docs/cli.md

bench: $(STAMP)
	$(PY) recipes/benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
