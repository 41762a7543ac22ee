# Two commands do everything on a machine that has only python3:
#   make demo   create .venv, install, start the local sandbox, log in through each method
#   make test   create .venv, install with the test extras, run ruff, mypy --strict and pytest

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test soak bench lint typecheck pytest sandbox build clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/quickstart.py

test: $(STAMP)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/mypy
	$(BIN)/pytest

# The reliability scenarios at soak scale (32 threads x 300 connects, longer runs);
# figures are printed and written to bench/results/reliability.json.
soak: $(STAMP)
	$(BIN)/pytest tests/reliability --soak -q

# rsauth against redshift_connector's IAM path and the static-password floor;
# prints a table and writes bench/results/latest.json. Not part of make test.
bench: $(STAMP)
	$(BIN)/python bench/run.py

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

sandbox: $(STAMP)
	$(BIN)/python -m rsauth.sandbox

build: $(STAMP)
	$(BIN)/python -m build

clean:
	rm -rf $(VENV) dist build .mypy_cache .pytest_cache .ruff_cache
