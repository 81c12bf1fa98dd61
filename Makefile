# Set-up commands of the README: `make demo` and `make test` create .venv when missing,
# install the project with its test extra, and run. The install pins the JAX-family versions CI
# tests (constraints/ci.txt); pyproject.toml itself declares ranges.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := constraints/ci.txt
PYTEST_ARGS ?=

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ctsearcher demo --out runs/demo

test: $(STAMP)
	XLA_PYTHON_CLIENT_PREALLOCATE=false $(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
