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
# built once), the costliest module left first (tests/xdist_order.py); the 25 slowest tests are
# listed at the end of every run.
XDIST := -n auto --dist loadscope
PYTEST := XLA_PYTHON_CLIENT_PREALLOCATE=false $(BIN)/python -m pytest $(XDIST)
# The fast tier (`make check`): unit tests only; no end-to-end runs or whole training programs
# (`slow`), no CLI subprocesses, no torch/MONAI parity, no browser. The full suite (`make test`)
# is what CI runs.
FAST := -m "not slow and not cli and not torch and not browser"

.PHONY: demo test check test-avx2 install clean distclean

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
	$(PYTEST) --durations=25 $(PYTEST_ARGS)

check: $(STAMP)
	$(PYTEST) $(FAST) $(PYTEST_ARGS)

# The full suite with every library's code limited to AVX2, on a machine with AVX-512: XLA's
# generated code, torch's kernels and oneDNN, NumPy's dispatch and OpenBLAS. A check that no
# test depends on the vector width (the last bits of float sums). Not covered: the native
# ScanMatch kernel (-march=native) and the few subprocesses that set XLA_FLAGS themselves.
AVX2_ONLY := XLA_FLAGS="--xla_cpu_max_isa=AVX2 $(XLA_FLAGS)" ATEN_CPU_CAPABILITY=avx2 \
	DNNL_MAX_CPU_ISA=AVX2 NPY_DISABLE_CPU_FEATURES="X86_V4,AVX512_ICL,AVX512_SPR" \
	OPENBLAS_CORETYPE=Haswell
test-avx2: $(STAMP)
	$(AVX2_ONLY) $(PYTEST) $(PYTEST_ARGS)

# clean: what the demo and the tests leave; distclean: also the environment (.venv)
clean:
	rm -rf runs .pytest_cache

distclean: clean
	rm -rf $(VENV)
