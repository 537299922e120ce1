# The README's commands. `make test` is what CI runs (.ci/run); `make reports` is the main job.
PY ?= .venv/bin/python
SEEDS ?= 0 1 2
JOBS ?= 1
CORES ?= 2
comma := ,
empty :=
space := $(empty) $(empty)

.PHONY: env lab test test-unit lint reports reports-batch report assignments benchmark

env: .venv/.installed

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install --quiet --upgrade pip
	.venv/bin/pip install --quiet -e ".[dev,lab]"
	.venv/bin/python -m ipykernel install --sys-prefix --name molft --display-name "Python 3 (molft)"
	touch $@

# For learners: JupyterLab on the lesson folder, notebooks run on the project's kernel (molft).
# Extra options: make lab LAB_ARGS="--no-browser --allow-root" (e.g. in a container running as root).
LAB_ARGS ?=
lab: env
	.venv/bin/jupyter lab $(LAB_ARGS) notebooks

# Tests run on TEST_WORKERS pytest-xdist workers (one thread each); --dist loadfile keeps a notebook's cells, which
# share one kernel, on one worker and in order; files are handed out longest first (tests/conftest.py), not
# reordered by their number of tests.
TEST_WORKERS ?= 2
PYTEST_PARALLEL = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The fast tier: unit tests only (tests marked `integration` are deselected: no Jupyter kernel, Snakemake or
# training subprocess; the batch runner's unit tests execute toy notebooks in process, tests/conftest.py).
test-unit: env
	.venv/bin/ruff check molft_utils tests
	MOLFT_SMOKE=1 TQDM_DISABLE=1 MOLFT_NUM_THREADS=1 MOLFT_CACHE="$$(mktemp -d)" $(PY) -m pytest -q $(PYTEST_PARALLEL) tests -m "not integration"

# Unit tests, then every notebook executed under nbval in smoke mode (tiny sizes, throw-away model cache).
test: env
	.venv/bin/ruff check molft_utils tests
	MOLFT_SMOKE=1 TQDM_DISABLE=1 MOLFT_NUM_THREADS=1 MOLFT_CACHE="$$(mktemp -d)" $(PY) -m pytest -q $(PYTEST_PARALLEL) tests --nbval-lax notebooks

# The main job: every notebook for seeds 0 1 2 on the embedded backbone, then reports/summary.md, through the
# Snakemake workflow (workflow/Snakefile: lesson 01's cached models first, then papermill runs). Resumable: a run
# whose notebook source, package code and parameters already produced a result is skipped (the rule of
# molft_utils.runs.batch, which `make reports-batch` runs without Snakemake).
reports: env
	.venv/bin/snakemake --cores $(CORES) --config seeds=[$(subst $(space),$(comma),$(strip $(SEEDS)))]

reports-batch: env
	$(PY) -m molft_utils.runs.batch --seeds $(SEEDS) --jobs $(JOBS)

report: env
	$(PY) -m molft_utils.runs.report reports

assignments: env
	$(PY) -m molft_utils.teaching.student --src notebooks --out assignments

benchmark: env
	$(PY) -m molft_utils.training.benchmark

lint: env
	.venv/bin/ruff check molft_utils tests
