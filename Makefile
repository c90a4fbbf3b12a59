# Everyday commands. Each target does its own set-up, idempotently, on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Data: ../shared/data when it exists; otherwise the loaders fall back to the Hugging Face hub.
export CT_DATA_DIR ?= $(shell [ -d ../shared/data ] && cd ../shared/data && pwd)
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-tl4 lint bench mutants clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]' 'transformer-lens>=3.9,<4'
	touch $(STAMP)

setup: $(STAMP)

## The main job: the whole CT-SFT pipeline on the tiny model, results under runs/demo/.
demo: $(STAMP)
	$(BIN)/python -m circuit_transfer.demo --out runs/demo

## The test suite (fast unit tests plus real-data / real-model tests).
test: $(STAMP)
	$(BIN)/python -m pytest -q

## The backend-independent tests (marker `bridge`) in a second environment with TransformerLens 4.3,
## which has no HookedTransformer: the package installs next to it, keeps it, and runs on the bridge.
VENV_TL4 := .venv-tl4
STAMP_TL4 := $(VENV_TL4)/.installed
$(STAMP_TL4): pyproject.toml
	test -x $(VENV_TL4)/bin/python || $(PY) -m venv $(VENV_TL4)
	$(VENV_TL4)/bin/python -m pip install -q --upgrade pip
	$(VENV_TL4)/bin/python -m pip install -q torch==2.13.0 transformer-lens==4.3.0
	$(VENV_TL4)/bin/python -m pip install -q -e '.[dev]'
	$(VENV_TL4)/bin/python -c "from importlib.metadata import version as v; assert v('transformer-lens') == '4.3.0', v('transformer-lens')"
	touch $(STAMP_TL4)

test-tl4: $(STAMP_TL4)
	$(VENV_TL4)/bin/python -m pytest -q -m bridge tests/bridge tests/models/test_backend_compat.py

## Benchmarks (figures written under analyses/results/bench_*; ratios measured side by side in one run).
bench: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python analyses/bench_cdt.py --model tiny
	OMP_NUM_THREADS=1 $(BIN)/python analyses/bench_cdt.py --model smollm2-135m --n-sentences 8 --repeats 1 --stabilize
	OMP_NUM_THREADS=1 $(BIN)/python analyses/bench_discovery.py
	OMP_NUM_THREADS=1 $(BIN)/python analyses/bench_masking.py --model smollm2-135m --batch 8 --seq 64 --steps 8

## Mutation testing (not in CI; ~30-60 min on one core): planted bugs vs the fast tests, survivors
## written to analyses/results/mutants/survivors.md. One mutant: `$(BIN)/python tools/mutants.py --only ID`.
mutants: $(STAMP)
	OMP_NUM_THREADS=1 nice -n 19 $(BIN)/python tools/mutants.py

lint: $(STAMP)
	$(BIN)/ruff check circuit_transfer tests analyses tools
	$(BIN)/ruff format --check circuit_transfer tests analyses tools

clean:
	rm -rf runs .pytest_cache
