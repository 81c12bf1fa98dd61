"""Shared test set-up: quiet, deterministic, CPU-only JAX; paths to fixtures."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Never read or write the user's persistent compilation cache (~/.cache/ctsearcher-jax/jax):
# tests that exercise the cache point CTSEARCHER_COMPILE_CACHE at a temporary directory.
os.environ["CTSEARCHER_COMPILE_CACHE"] = "0"
# One XLA compilation cache for this test run, shared by every test, pytest-xdist worker and
# CLI subprocess (they inherit the environment): the same tiny programs are compiled once per
# run instead of once per process. It starts empty for each run, so every program of this
# checkout is compiled at least once (nothing from an earlier run can hide a regression), and
# the process that made it deletes it at the end. Tests of the cache itself drop these variables.
if "CTSEARCHER_TEST_XLA_CACHE" not in os.environ:  # the pytest process (xdist: the controller)
    os.environ["CTSEARCHER_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="ctsearcher-test-xla-")
    _RUN_CACHE_OWNER = True
else:
    _RUN_CACHE_OWNER = False
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["CTSEARCHER_TEST_XLA_CACHE"]
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def pytest_collection_modifyitems(config, items):
    """Tests that drive the system Chromium (the `browser` / `page` fixtures) are marked
    `browser`, so `make check` can leave them out."""
    for item in items:
        if {"browser", "page"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.browser)


def pytest_unconfigure(config):
    """The run's compilation cache goes with the run (only the process that made it deletes it)."""
    if _RUN_CACHE_OWNER:
        shutil.rmtree(os.environ["CTSEARCHER_TEST_XLA_CACHE"], ignore_errors=True)
