# The two set-up commands of the README:
#   make demo   install into .venv, then prompt the bundled echo plugin from a notebook (no network, no key)
#   make test   install into .venv with the test tools, then run every test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test]"

demo: install
	$(BIN)/python -m querymt_jupyter run notebooks/01-quickstart.ipynb

test: install
	$(BIN)/python -m pytest
