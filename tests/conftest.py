"""Shared test set-up: quiet, deterministic, CPU-only JAX; paths to fixtures."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Never read or write the user's persistent compilation cache (~/.cache/ctsearcher-jax/jax):
# tests that exercise the cache point CTSEARCHER_COMPILE_CACHE at a temporary directory.
os.environ["CTSEARCHER_COMPILE_CACHE"] = "0"

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
