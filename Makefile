# Two commands do everything on a machine that has only python3:
#   make demo   create .venv, install, start the local sandbox, log in through each method
#   make test   create .venv, install with the test extras, run ruff, mypy --strict and pytest

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test soak bench lint typecheck pytest sandbox build clean redis

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The fleet-mode tests (tests/fleet) run a real redis-server. When it is missing, install
# Debian's package if apt-get is here and we may use it; otherwise say so, and pytest skips
# those tests with the reason.
redis:
	@if command -v redis-server >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing redis-server (Debian package) for the fleet-mode tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends redis-server >/dev/null) \
		|| echo "redis-server could not be installed: the fleet-mode tests will be skipped"; \
	else \
		echo "redis-server not found (installing it needs apt-get as root): the fleet-mode tests will be skipped"; \
	fi

demo: $(STAMP)
	$(BIN)/python examples/quickstart.py

test: $(STAMP) redis
	$(BIN)/ruff check src tests examples bench
	$(BIN)/mypy
	$(BIN)/pytest

# The reliability scenarios at soak scale (32 threads x 300 connects, longer runs);
# figures are printed and written to bench/results/reliability.json.
soak: $(STAMP) redis
	$(BIN)/pytest tests/reliability --soak -q
	$(BIN)/pytest tests/fleet --soak -q

# rsauth against redshift_connector's IAM path and the static-password floor (prints a
# table, writes bench/results/latest.json), rsauth.psycopg and the asyncio API
# (bench/results/psycopg_async.json), then the fleet of worker processes with and
# without the shared tier (bench/results/fleet.json). Not part of make test.
bench: $(STAMP) redis
	$(BIN)/python bench/run.py
	$(BIN)/python bench/psycopg_async.py
	$(BIN)/pytest tests/fleet/test_fleet.py -q

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) redis
	$(BIN)/pytest

sandbox: $(STAMP)
	$(BIN)/python -m rsauth.sandbox

build: $(STAMP)
	$(BIN)/python -m build

clean:
	rm -rf $(VENV) dist build .mypy_cache .pytest_cache .ruff_cache
