# Two commands set everything up on a fresh machine with Python 3.11:
#   make run    creates .venv from requirements.lock and runs the workflow on the bundled example
#   make test   creates .venv (and .venv-cellxgene, the CELLxGENE validator's) and runs the test suite
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
PYTEST_ARGS ?=
# pytest-xdist workers of `make test`: one more than the two cores, because the SLURM runs wait
# on the scheduler and the kill/resume run uses one core, so the third keeps both cores busy
# meanwhile (tests/conftest.py orders the modules for that; TEST_WORKERS=0 runs in one process).
# CI of the same code: 1,084 s with 3 workers, 1,096 s with 4, the cores 97-98% busy either way.
TEST_WORKERS ?= 3

# cellxgene-schema pins its own anndata/scipy: the validator of the CELLxGENE export lives in
# its own venv (requirements-cellxgene.lock); tests/export/test_cellxgene.py runs it from there
CXG_VENV ?= .venv-cellxgene

.PHONY: venv cellxgene-venv run test test-fast lint clean

$(BIN)/snakemake: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.lock
	$(BIN)/python -m pip check
	touch $@

venv: $(BIN)/snakemake

$(CXG_VENV)/bin/cellxgene-schema: requirements-cellxgene.lock
	$(PYTHON) -m venv $(CXG_VENV)
	$(CXG_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CXG_VENV)/bin/python -m pip install --quiet --no-deps -r requirements-cellxgene.lock
	$(CXG_VENV)/bin/python -m pip check
	touch $@

cellxgene-venv: $(CXG_VENV)/bin/cellxgene-schema

run: venv
	$(BIN)/snakemake --cores $(CORES)

test: venv cellxgene-venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -m "not slow and not slurm and not browser" $(PYTEST_ARGS)

lint: venv
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check .
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	# the rules' benchmark files; benchmarks/results (the recorded benchmark runs) stays
	rm -rf results logs .snakemake $(filter-out benchmarks/results/,$(wildcard benchmarks/*/))
