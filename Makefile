# ringflow: the two commands of the quick start, and a few helpers.
#   make serve   create .venv, install, migrate, create the demo account, serve on :8080
#   make test    install what the tests need (Python and Debian packages, services), lint and
#                type-check, run the suite
#   make lint    ruff and mypy alone (make test runs them first)
#   make pipecat-venv  the pipecat bot's own virtualenv (tests/bots/), built once; make test needs it

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The pipecat bot runs from a virtualenv of its own: pipecat pins versions that may clash with ours.
PIPECAT_VENV := .venv-pipecat
PIPECAT_STAMP := $(PIPECAT_VENV)/.installed
PIPECAT_REQUIREMENTS := tests/bots/requirements-pipecat.txt
RINGFLOW_HOST ?= 127.0.0.1
RINGFLOW_PORT ?= 8080

.PHONY: serve test lint install services bench clean pipecat-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Rebuilt from scratch when the pins change; any failed step fails make (and so make test).
$(PIPECAT_STAMP): $(PIPECAT_REQUIREMENTS)
	rm -rf $(PIPECAT_VENV)
	$(PYTHON) -m venv $(PIPECAT_VENV)
	$(PIPECAT_VENV)/bin/pip install -q --upgrade pip
	$(PIPECAT_VENV)/bin/pip install -q -r $(PIPECAT_REQUIREMENTS)
	$(PIPECAT_VENV)/bin/python -c "import uvicorn; from pipecat.serializers.exotel import ExotelFrameSerializer"
	touch $(PIPECAT_STAMP)

pipecat-venv: $(PIPECAT_STAMP)

# demo first checks the port (before anything is migrated or made), migrates, then prints working
# credentials and how to run the CLI from this folder.
serve: $(STAMP)
	RINGFLOW_ALLOW_PRIVATE_URLS=$${RINGFLOW_ALLOW_PRIVATE_URLS:-1} \
	  $(BIN)/ringflow demo --before-serve --host $(RINGFLOW_HOST) --port $(RINGFLOW_PORT)
	RINGFLOW_ALLOW_PRIVATE_URLS=$${RINGFLOW_ALLOW_PRIVATE_URLS:-1} \
	  exec $(BIN)/ringflow serve --host $(RINGFLOW_HOST) --port $(RINGFLOW_PORT)

services:
	@scripts/ensure-services sip-tester baresip-core chromium

# The files mypy checks, and how, are in pyproject.toml ([tool.mypy]).
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# lint first: a finding fails make test before the services start or the suite runs. The suite
# runs in two processes (pytest-xdist; most tests wait on sockets and timers, not the CPU), each
# on its own PostgreSQL and Redis databases; worksteal evens out the long end-to-end tests.
# --durations prints the 25 slowest, to keep the suite fast.
TEST_PROCESSES ?= 2
test: lint $(PIPECAT_STAMP) services
	$(BIN)/python -m pytest -q -n $(TEST_PROCESSES) --dist worksteal --durations=25

bench: $(STAMP)
	$(BIN)/python bench/api_connect.py

clean:
	rm -rf $(VENV) $(PIPECAT_VENV) data .pytest_cache
