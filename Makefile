# The README's two commands. `make test` is what CI runs (.ci/run).
PY ?= .venv/bin/python

.PHONY: env test lint

env: .venv/.installed

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install --quiet --upgrade pip
	.venv/bin/pip install --quiet -e ".[dev]"
	touch $@

test: env
	.venv/bin/ruff check molft_utils tests
	$(PY) -m pytest -q tests

lint: env
	.venv/bin/ruff check molft_utils tests
