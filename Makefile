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

# The build needs jupyterlab (jlpm, jupyter-builder: the JupyterLab extension in labextension/); installed
# into the venv once, so each install builds without setting up an isolated build environment again
# (the venv's bin on PATH: the build runs jlpm and jupyter-builder from there).
install: $(BIN)/python
	$(BIN)/python -m pip install -q "hatchling>=1.25" editables "hatch-jupyter-builder>=0.10" "jupyterlab>=4.6,<4.7"
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pip install -q --no-build-isolation -e ".[test]"

demo: install
	$(BIN)/python -m querymt_jupyter run notebooks/01-quickstart.ipynb

test: install
	$(BIN)/python -m pytest
