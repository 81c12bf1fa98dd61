# Set-up commands of the README: `make demo` and `make test` create .venv when missing,
# install the project with its test extra, and run. The install pins the JAX-family versions CI
# tests (constraints/ci.txt); pyproject.toml itself declares ranges.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := constraints/ci.txt
PYTEST_ARGS ?=
# Both cores: pytest-xdist, one worker per core, whole modules per worker (module fixtures are
# built once); the 25 slowest tests are listed at the end of every run.
XDIST := -n auto --dist loadscope
# The fast tier (`make check`): unit tests only; no end-to-end runs, no CLI subprocesses, no
# torch/MONAI parity, no browser. The full suite (`make test`) is what CI runs.
FAST := -m "not slow and not cli and not torch and not browser"

.PHONY: demo test check install clean distclean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The demo replaces its own previous output (runs/demo), so `make demo` can be run again.
demo: $(STAMP)
	$(BIN)/ctsearcher demo --out runs/demo --force

test: $(STAMP)
	XLA_PYTHON_CLIENT_PREALLOCATE=false $(BIN)/python -m pytest $(XDIST) --durations=25 $(PYTEST_ARGS)

check: $(STAMP)
	XLA_PYTHON_CLIENT_PREALLOCATE=false $(BIN)/python -m pytest $(XDIST) $(FAST) $(PYTEST_ARGS)

# clean: what the demo and the tests leave; distclean: also the environment (.venv)
clean:
	rm -rf runs .pytest_cache

distclean: clean
	rm -rf $(VENV)
