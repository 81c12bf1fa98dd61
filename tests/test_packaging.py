"""The built wheel works outside the checkout: console script, version, bundled configs, API.

The wheel is built without build isolation and installed with `--no-deps` into a fresh venv in a
temporary folder; that venv reaches the shared dependencies through a `.pth` file that lists the
test interpreter's site-packages as a plain path (so no editable-install finder of a checkout is
activated: `ctsearcher_jax` must come from the wheel, which the test asserts).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

import ctsearcher_jax
from ctsearcher_jax.config import dumps, load


def _copy_source(repo: Path, dst: Path) -> Path:
    """The files a build reads, copied (a stale build/ of the checkout must not leak in)."""
    dst.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(repo / name, dst / name)
    for name in ("ctsearcher_jax", "feature_extraction", "configs"):
        shutil.copytree(repo / name, dst / name, ignore=ignore)
    return dst


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory, repo_root):
    root = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    src = _copy_source(repo_root, root / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(root / "dist"), str(src)], check=True, cwd=root, env=env)
    (wheel,) = (root / "dist").glob("ctsearcher_jax-*.whl")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "-q", str(wheel)], check=True, cwd=root, env=env)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz_shared_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    work = root / "empty"
    work.mkdir()
    return {"wheel": wheel, "env": env_dir, "python": python, "cli": python.parent / "ctsearcher",
            "environ": env, "cwd": work}


def _run(w, *argv: str) -> subprocess.CompletedProcess:
    out = subprocess.run([str(a) for a in argv], cwd=w["cwd"], env=w["environ"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out


def test_wheel_ships_configs_and_py_typed(wheel_venv, repo_root):
    with zipfile.ZipFile(wheel_venv["wheel"]) as z:
        names = set(z.namelist())
        assert "ctsearcher_jax/py.typed" in names
        for page in ("viz/viewer_template.html", "viz/viewer.js",  # `ctsearcher view` inlines them
                     "metrics/scanmatch/scanmatch_gap0.cc"):  # the native kernel, compiled on first use
            assert z.read(f"ctsearcher_jax/{page}") == \
                (repo_root / "ctsearcher_jax" / page).read_bytes()
        for src in sorted((repo_root / "configs").glob("*.yaml")):
            # the shipped copy is the top-level file, byte for byte (one source: configs/)
            assert z.read(f"ctsearcher_jax/configs/{src.name}") == src.read_bytes()


@pytest.mark.cli
def test_installed_wheel_runs_outside_the_checkout(wheel_venv, repo_root):
    w = wheel_venv
    where = _run(w, w["python"], "-c", "import ctsearcher_jax as c; print(c.__file__); "
                 "print(c.__version__)").stdout.split()
    assert Path(where[0]).resolve().is_relative_to(w["env"].resolve()), where
    assert not Path(where[0]).resolve().is_relative_to(repo_root.resolve())
    assert where[1] == ctsearcher_jax.__version__ != "0+unknown"
    assert _run(w, w["cli"], "--version").stdout.strip() == f"ctsearcher {where[1]}"
    native = _run(w, w["python"], "-c", "from ctsearcher_jax.metrics.scanmatch import native as n; "
                  "print(n.available())")  # its shipped C++ source builds outside the checkout
    assert native.stdout.strip() == "True", native.stderr
    # install hints fit a wheel: the extra's own requirement, no `pip install -e`
    hint = _run(w, w["python"], "-c", "from ctsearcher_jax.installation import install_hint; "
                "print(install_hint('torch'))").stdout.strip()
    assert hint == "pip install 'torch>=2.2'", hint
    paper = _run(w, w["cli"], "train", "--config", "paper", "--print-config").stdout
    assert paper == dumps(load(repo_root / "configs" / "paper.yaml"))
    tiny = _run(w, w["cli"], "train", "--config", "tiny", "--print-config",
                "--set", "train.epochs=5").stdout
    assert "d_model: 32" in tiny and "epochs: 5" in tiny
