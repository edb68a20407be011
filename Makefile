# Local virtual environment at .venv; every target is idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export BLOODCELL_DATA ?= $(abspath ../shared/datasets)

.PHONY: install demo test wheel-check postgres clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/bloodcell demo --output outputs/demo

test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# The wheel, installed outside the repository, runs evaluate and reproduce --help from another folder.
wheel-check: install
	bash scripts/wheel-check.sh $(VENV)

# A local PostgreSQL (Debian's package) for the sample store's tests: prints the URL to export as
# BLOODCELL_TEST_POSTGRES_URL (needs root, as on CI).
postgres:
	@bash scripts/postgres-test.sh

clean:
	rm -rf $(VENV) build *.egg-info
