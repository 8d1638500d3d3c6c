# The two set-up commands of the README:
#   make demo   install into .venv, then prompt the bundled echo plugin from a notebook (no network, no key)
#   make test   install the Debian packages the tests need, then into .venv with the test tools; run every test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test system-packages

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

# The tests start a real OCI registry (Debian's docker-registry), drive Debian's chromium (Playwright
# downloads no browser here) and read a wheel's machine code with objdump (binutils). Installed only when
# missing; sudo unless already root.
system-packages:
	@missing=""; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v objdump >/dev/null || missing="$$missing binutils"; \
	if [ -n "$$missing" ]; then \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

test: system-packages install
	$(BIN)/python -m pytest
