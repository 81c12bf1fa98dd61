"""Shared test set-up: quiet, deterministic, CPU-only JAX; paths to fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
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
# LLVM at -O2 instead of XLA's default -O3 in every test process (the workers and the CLI
# subprocesses inherit it, so the shared cache above, whose key includes XLA_FLAGS, holds -O2
# programs only; subprocesses that set XLA_FLAGS themselves say why). At -O3 LLVM spends
# seconds on each dropout mask's threefry kernel (4 masks: 3.3 s to compile, 0.7 s at -O2), and
# the suite is mostly compilation of small programs: the AR train+finetune test and the 96^3
# Swin parity together take 107 s of CPU at -O2 against 137 s at -O3. Float results do not
# depend on it (no fast-math at either level).
# One Eigen thread per test process: pytest-xdist already runs one worker per core, and two
# workers each with a pool the size of the machine only take turns (make test 10:19 -> 9:58,
# 1,075 -> 1,041 s of user CPU on the 2-core machine; make check 187 -> 178 s).
# A flag already in XLA_FLAGS wins over these defaults.
_TEST_XLA_DEFAULTS = {"xla_backend_optimization_level": "2", "xla_cpu_multi_thread_eigen": "false"}
for _flag, _value in _TEST_XLA_DEFAULTS.items():
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --{_flag}={_value}".strip()

import pytest  # noqa: E402
import xdist_order  # noqa: E402  (tests/ is on the path, pyproject: pythonpath)

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


@pytest.fixture
def cli_run(capsys):
    """`ctsearcher ARGS` run in this process, returned as a subprocess run would return it
    (CompletedProcess: exit code, stdout, stderr) without the 2-3 s of a new interpreter and its
    imports. For tests of exit codes and messages; what only a process shows (the console script,
    signals, peak memory, multi-process runs) keeps real subprocesses."""
    from ctsearcher_jax import cli

    def run(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
        argv = [str(a) for a in args]
        capsys.readouterr()  # only this command's output below
        here = os.getcwd()
        try:
            if cwd is not None:
                os.chdir(cwd)
            try:
                code = cli.main(argv)
            except SystemExit as exc:  # argparse: usage errors (2) and --help (0)
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            os.chdir(here)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, out.out, out.err)

    return run


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class CostOrderedScopes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = super()._split_scope(nodeid)
            return xdist_order.shared_scope(module)

        def _assign_work_unit(self, node) -> None:
            # xdist hands out the front of its queue: the costliest scope left goes there
            xdist_order.costliest_first(self.workqueue)
            super()._assign_work_unit(node)

    return CostOrderedScopes(config, log)


def pytest_unconfigure(config):
    """The run's compilation cache goes with the run (only the process that made it deletes it)."""
    if _RUN_CACHE_OWNER:
        shutil.rmtree(os.environ["CTSEARCHER_TEST_XLA_CACHE"], ignore_errors=True)
