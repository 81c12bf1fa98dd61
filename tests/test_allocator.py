"""ctsearcher_jax.runtime.allocator: glibc keeps freed blocks, so a second large temporary of
the same size is not faulted in again page by page (what XLA's CPU calls do on every call)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ctsearcher_jax.runtime import allocator

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

# In a fresh process: malloc, touch and free 64 MiB, then count the minor page faults of doing
# it again. glibc maps such a block afresh each time (above its mmap threshold) unless told to
# keep freed memory.
_PROBE = """
import ctypes, json, resource
from ctsearcher_jax.runtime import allocator
applied = allocator.retain_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size = 64 * 2**20
def touch():
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(json.dumps({"applied": applied,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(**env) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_freed_memory_is_reused_without_page_faults():
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    kept = _probe()
    assert kept["applied"] and kept["faults"] < pages // 16
    given_back = _probe(**{allocator.ENV: "0"})  # the control: glibc's defaults
    assert not given_back["applied"] and given_back["faults"] >= pages // 2


def test_not_once_the_backend_has_started():
    """XLA's threads hold their arenas from then on: nothing is changed, and it says so."""
    import jax

    jax.devices()
    assert allocator.retain_freed_memory() is False


def test_the_commands_that_extract_ask_for_it_on_a_cpu_only_host(cli_run, monkeypatch, tmp_path):
    from ctsearcher_jax.runtime import platforms

    calls = []
    monkeypatch.setattr(allocator, "retain_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(platforms, "cpu_only", lambda: True)
    missing = tmp_path / "no-such-folder"
    # extract: the set-up runs first, then the command fails on its input (exit 2)
    assert cli_run("extract", "--ct-dir", missing, "--swin-weights", "random", "--out",
                   tmp_path / "f").returncode == 2
    assert calls == [1]
    assert cli_run("evaluate", "--pred", missing, "--data", missing).returncode == 2
    assert calls == [1]  # a command that does not extract leaves glibc's defaults
    monkeypatch.setattr(platforms, "cpu_only", lambda: False)  # a GPU or TPU host
    assert cli_run("extract", "--ct-dir", missing, "--swin-weights", "random", "--out",
                   tmp_path / "f").returncode == 2
    assert calls == [1]


def test_cpu_only_follows_the_chosen_platforms(monkeypatch):
    from ctsearcher_jax.runtime import platforms

    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert platforms.cpu_only()
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert not platforms.cpu_only()
