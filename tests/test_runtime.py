"""ctsearcher_jax.runtime: `ctsearcher devices` and the persistent compilation cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctsearcher_jax import cli
from ctsearcher_jax.runtime import compile_cache, devices

REPO = Path(__file__).resolve().parents[1]


def test_devices_json_and_startup_line(capsys):
    assert cli.main(["devices", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "cpu" and info["device_count"] >= 1
    assert info["process_index"] == 0 and info["process_count"] == 1
    import jax

    assert info["jax"] == jax.__version__
    line = devices.startup_line(info)
    assert line.startswith(f"JAX {jax.__version__} (jaxlib ") and "backend cpu" in line
    assert "process 0/1" in line


def test_devices_require_names_the_install_command(capsys):
    assert cli.main(["devices", "--require", "cpu"]) == 0
    assert cli.main(["devices", "--require", "gpu"]) == 2
    err = capsys.readouterr().err
    # a checkout: install the checkout with the extra (a wheel gets jax[cuda12]; test_installation)
    assert "not gpu" in err and "pip install -e '" in err and "[cuda]'" in err


def test_cache_dir_resolution(tmp_path):
    home = str(Path.home())
    assert compile_cache.cache_dir({}) == Path(home) / ".cache" / "ctsearcher-jax" / "jax"
    assert compile_cache.cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "ctsearcher-jax" / "jax"
    for off in ("0", "off", "FALSE", "no", ""):
        assert compile_cache.cache_dir({compile_cache.ENV: off}) is None
    assert compile_cache.cache_dir({compile_cache.ENV: str(tmp_path / "c")}) == tmp_path / "c"


_PROBE = """
import sys, time
from ctsearcher_jax.runtime import compile_cache
d = compile_cache.configure(enabled=sys.argv[1] == "on")
import jax, jax.numpy as jnp
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + 1)
f(jnp.ones((8, 8))).block_until_ready()
print(d)
"""


@pytest.mark.cli
@pytest.mark.parametrize("flag", ["off", "on"])
def test_compile_cache_writes_only_when_on(tmp_path, flag):
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(CTSEARCHER_COMPILE_CACHE=str(cache), PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", _PROBE, flag], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    files = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    if flag == "on":
        assert out.strip() == str(cache) and files, "a compiled program should be cached"
    else:
        assert out.strip() == "None" and not files
