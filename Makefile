# The two entry points a new user needs: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench

setup:
	bash scripts/setup.sh

demo: setup
	bash examples/demo.sh

test: setup
	$(PY) -m ruff check src tests bench
	$(PY) -m mypy
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check src tests bench
	$(PY) -m mypy

bench: setup
	bash bench/run.sh
