# Local virtual environment at .venv; every target is idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export BLOODCELL_DATA ?= $(abspath ../shared/datasets)

.PHONY: install demo test wheel-check clean

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

clean:
	rm -rf $(VENV) build *.egg-info
