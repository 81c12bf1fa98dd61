"""`ctsearcher plan`'s errors are one line and exit 2: an unknown topology, a missing libtpu
(simulated), a batch that does not divide the chips; and plain commands on a CPU-only host with
libtpu installed start no TPU backend (no libtpu warnings)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from ctsearcher_jax import cli
from ctsearcher_jax.planning.topology import libtpu_installed
from ctsearcher_jax.runtime.platforms import has_gpu, local_tpu_chips


def one_line_error(capsys, *args: str) -> str:
    rc = cli.main(["plan", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err, err
    assert err.startswith("ctsearcher plan: error: ")
    return err


def test_unknown_topology_lists_the_known_ones(capsys):
    err = one_line_error(capsys, "--topology", "v9x:2x2", "--config", "tiny")
    assert "'v9x:2x2'" in err
    for name in ("v4:", "v5e:", "v5p:", "v6e:"):
        assert name in err


def test_missing_libtpu_says_how_to_install(capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "libtpu" else real(name, *a))
    monkeypatch.delenv("TPU_LIBRARY_PATH", raising=False)
    err = one_line_error(capsys, "--topology", "v5e:2x2", "--config", "tiny")
    assert "pip install 'ctsearcher-jax[tpu]'" in err


@pytest.mark.skipif(not libtpu_installed(), reason="libtpu (the test extra) missing")
def test_indivisible_batch_names_both_numbers(capsys):
    err = one_line_error(capsys, "--topology", "v5e:2x2", "--config", "tiny", "--global-batch", "6")
    assert "batch 6" in err and "4 chips" in err


@pytest.mark.skipif(not libtpu_installed(), reason="libtpu (the test extra) missing")
def test_libtpu_refusal_is_one_line(capsys):
    err = one_line_error(capsys, "--topology", "v5e:3x3", "--config", "tiny")
    assert "v5e:3x3" in err and "libtpu refused" in err


@pytest.mark.skipif(not libtpu_installed(), reason="libtpu (the test extra) missing")
def test_plain_commands_start_no_tpu_backend():
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_PLATFORMS", "TPU_WORKER_HOSTNAMES", "TPU_HOST_BOUNDS",
                        "TPU_ACCELERATOR_TYPE", "ALLOW_MULTIPLE_LIBTPU_LOAD")}
    out = subprocess.run([sys.executable, "-m", "ctsearcher_jax.cli", "devices"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    if not local_tpu_chips() and not has_gpu():
        assert "backend cpu" in out.stdout
        assert "TPU" not in out.stderr and "libtpu" not in out.stderr, out.stderr
