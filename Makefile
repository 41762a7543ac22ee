# Two commands do everything on a machine that has only python3:
#   make demo   create .venv, install, start the local sandbox, log in through each method
#   make test   create .venv, install with the test extras, run ruff, mypy --strict, the
#               docs build (make docs) and pytest

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed


.PHONY: demo test docs soak bench fleet-bench mutate lint typecheck pytest sandbox build clean parts

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The real parts the tests meet besides the sandbox: redis-server (fleet mode) and psql
# (the CLI and proxy tests). Missing ones come from Debian's packages: installed with
# apt-get as root, else downloaded and unpacked into .venv/parts without root. Under
# CI=true a test whose part is missing fails; it is never skipped quietly.
PARTS     := $(VENV)/parts
PARTS_ENV := PATH="$(CURDIR)/$(PARTS)/usr/bin:$(CURDIR)/$(PARTS)/usr/lib/postgresql/15/bin:$$PATH" \
	LD_LIBRARY_PATH="$(CURDIR)/$(PARTS)/usr/lib/x86_64-linux-gnu:$(CURDIR)/$(PARTS)/usr/lib/aarch64-linux-gnu"

parts: | $(BIN)/python
	@need=""; \
	command -v redis-server >/dev/null 2>&1 || [ -x $(PARTS)/usr/bin/redis-server ] || need="$$need redis-server"; \
	command -v psql >/dev/null 2>&1 || [ -e $(PARTS)/usr/bin/psql ] || need="$$need postgresql-client"; \
	if [ -z "$$need" ]; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "missing:$$need (no apt-get here): install them, or the tests that need them fail"; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing$$need (Debian packages) for the tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$need >/dev/null; \
	else \
		echo "unpacking$$need (Debian packages) into $(PARTS) for the tests"; \
		mkdir -p $(PARTS)/debs && cd $(PARTS)/debs && \
		apt-get download $$need redis-tools libjemalloc2 liblzf1 libpq5 postgresql-client-15 \
			postgresql-client-common >/dev/null 2>&1; \
		for deb in *.deb; do dpkg -x "$$deb" ..; done; \
	fi

demo: $(STAMP)
	$(BIN)/python examples/quickstart.py

test: $(STAMP) parts
	$(BIN)/ruff check src tests examples bench docs/hooks.py
	$(BIN)/mypy
	$(MKDOCS)
	$(PARTS_ENV) $(BIN)/pytest

# The docs site into site/, offline, every warning an error: a broken link or anchor, a
# public name without a docstring, a command missing from the CLI reference
# (docs/testing.md, "The docs"). NO_MKDOCS_2_WARNING: the theme's end-of-life notice. No
# --quiet: it drops the warnings before --strict counts them.
MKDOCS := NO_MKDOCS_2_WARNING=1 PYTHONPATH=src $(BIN)/mkdocs build --strict
docs: $(STAMP)
	$(MKDOCS)

# The reliability scenarios at soak scale (32 threads x 300 connects, longer runs);
# figures are printed and written to bench/results/reliability.json.
soak: $(STAMP) parts
	$(PARTS_ENV) $(BIN)/pytest tests/reliability --soak -q
	$(PARTS_ENV) $(BIN)/pytest tests/fleet --soak -q

# rsauth against redshift_connector's IAM path and the static-password floor (prints a
# table, writes bench/results/latest.json), the first connect of a fresh process beside
# redshift_connector's (bench/results/coldstart.json), rsauth.psycopg and the asyncio API
# (bench/results/psycopg_async.json), rsauth proxy against a direct connection
# (bench/results/proxy.json), a warm cache hit with and without OpenTelemetry
# (bench/results/metrics.json), then the fleet of worker processes with and without the
# shared tier (bench/results/fleet.json), and the fleet's cold start at 1,000 workers.
# Not part of make test.
bench: $(STAMP) parts
	$(PARTS_ENV) $(BIN)/python bench/run.py
	$(PARTS_ENV) $(BIN)/python bench/coldstart.py
	$(PARTS_ENV) $(BIN)/python bench/psycopg_async.py
	$(PARTS_ENV) $(BIN)/python bench/proxy.py
	$(PARTS_ENV) $(BIN)/python bench/metrics.py
	$(PARTS_ENV) $(BIN)/pytest tests/fleet/test_fleet.py -q
	$(MAKE) fleet-bench

# 1,000 workers (16 processes x 64 threads, each its own boto3 session, Broker and
# RedisCache) of one identity against one redis-server, 300 ms added to every AWS call:
# the cold start with and without the shared tier, then a compressed steady hour.
# Figures go to bench/results/fleet_scale.json (docs/fleet.md). A few minutes.
fleet-bench: $(STAMP) parts
	$(PARTS_ENV) $(BIN)/python bench/fleet_scale.py

# Mutation testing of the core (pyproject's [tool.mutmut]): each mutant against the tests
# that reach it; killed and surviving mutants, each survivor's place, and the run's length
# go to bench/results/mutation.json (docs/testing.md). Slow; not part of make test.
# MUTANTS='rsauth._cache*' limits a run to the mutants whose names match.
MUTANTS ?=
mutate: $(STAMP)
	rm -rf mutants
	@start=$$(date +%s); \
	PYTHONPATH=src $(BIN)/mutmut run $(MUTANTS); status=$$?; \
	PYTHONPATH=src $(BIN)/python bench/mutation.py $$(( $$(date +%s) - start )) '$(MUTANTS)'; \
	exit $$status

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench docs/hooks.py

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) parts
	$(PARTS_ENV) $(BIN)/pytest

sandbox: $(STAMP)
	$(BIN)/python -m rsauth.sandbox

build: $(STAMP)
	$(BIN)/python -m build

clean:
	rm -rf $(VENV) dist build mutants site .mypy_cache .pytest_cache .ruff_cache
