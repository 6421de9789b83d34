# ringflow: the two commands of the quick start, and a few helpers.
#   make serve   create .venv, install, migrate, create the demo account, serve on :8080
#   make test    install what the tests need (Python and Debian packages, services), run the suite

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RINGFLOW_HOST ?= 127.0.0.1
RINGFLOW_PORT ?= 8080

.PHONY: serve test install services bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/ringflow migrate
	RINGFLOW_ALLOW_PRIVATE_URLS=$${RINGFLOW_ALLOW_PRIVATE_URLS:-1} \
	  $(BIN)/ringflow demo --host $(RINGFLOW_HOST) --port $(RINGFLOW_PORT)
	RINGFLOW_ALLOW_PRIVATE_URLS=$${RINGFLOW_ALLOW_PRIVATE_URLS:-1} \
	  exec $(BIN)/ringflow serve --host $(RINGFLOW_HOST) --port $(RINGFLOW_PORT)

services:
	@scripts/ensure-services sip-tester baresip-core chromium

test: $(STAMP) services
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/api_connect.py

clean:
	rm -rf $(VENV) data .pytest_cache
