"""Shared pieces of the training tests: a tiny dataset on disk, CLI runs in subprocesses.

Every subprocess shares one persistent XLA compilation cache (the resumed runs of the SIGKILL
test then skip compilation) and compiles with LLVM optimisation off: these tests check numbers
and control flow, not speed, and the CI machine has two cores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tinydata  # tests/train is on the path (pyproject: pythonpath)
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


# The scale / resume config: 16 training CTs, global batch 8 (divisible by 1, 4 and 8 devices),
# 2 steps per epoch, 10 epochs = 20 steps, dropout on (masks must match across layouts too).
# eps 1e-4 instead of the paper's 1e-9: the attention key biases have an exactly zero gradient
# (softmax ignores a constant added to every score), so their gradient is float round-off that
# differs with the device layout, and AdamW with eps 1e-9 would rescale that round-off into
# lr-sized updates (1e-6 still left 3e-5 differences). With 1e-4 round-off stays round-off,
# and every parameter must match. Checkpoints at the eval epochs (6, 12, 18), step 19 (the
# two-process test resumes from it on one device) and the end: a checkpoint every step costs
# about a third of these runs; the SIGKILL test asks for one every step itself.
SCALE_TRAIN = {"batch_size": 8, "eps": 1e-4, "epochs": 10, "warmup_epochs": 1,
               "checkpoint_every_steps": 19, "keep_last": 2, "keep_best": 1,
               "eval_every_epochs": 3}
SCALE_STEPS = 20


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tinydata.write_tiny_dataset(tmp_path_factory.mktemp("tinyds"), num_train=16, num_test=4)


@pytest.fixture(scope="session")
def xla_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xla_cache")


def write_config(path: Path, root: Path, **train) -> Path:
    data = tinydata.tiny_config_dict(root, **{**SCALE_TRAIN, **train})
    path.write_text(yaml.safe_dump(data))
    return path


def subprocess_env(cache: Path, devices: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} "
                     "--xla_backend_optimization_level=0",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
    })
    return env


def train_cmd(config: Path | None, workdir: Path, *extra: str) -> list[str]:
    """`ctsearcher train` (without --config when `config` is None: resume from the workdir's)."""
    cfg = ["--config", str(config)] if config is not None else []
    return [sys.executable, "-m", "ctsearcher_jax.cli", "train", *cfg, "--workdir", str(workdir),
            *extra]


def run_train(config: Path | None, workdir: Path, cache: Path, *extra: str, devices: int = 1,
              timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(config, workdir, *extra), env=subprocess_env(cache, devices),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a Popen started with start_new_session=True and everything it spawned."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def train_losses(workdir: Path) -> dict[int, float]:
    out = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["split"] == "train":
            out[row["step"]] = row["loss"]
    return out


def final_state(workdir: Path, step: int | None = None) -> dict[str, np.ndarray]:
    """Flat {path: array} of the train state saved at `step` (default: the latest)."""
    import jax
    import orbax.checkpoint as ocp

    ckpt = workdir / "checkpoints"
    if step is None:
        step = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
    path = ckpt / str(step) / "state"
    checkpointer = ocp.StandardCheckpointer()
    # Restore onto this process's single device whatever layout the run saved.
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    meta = checkpointer.metadata(path)
    meta = getattr(meta, "item_metadata", meta)
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)
    tree = checkpointer.restore(path, target)
    return {jax.tree_util.keystr(p): np.asarray(v)
            for p, v in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope="session")
def baseline(tiny_root, xla_cache, tmp_path_factory):
    """The uninterrupted 1-device run: (workdir, losses per step, final state)."""
    work = tmp_path_factory.mktemp("baseline")
    cfg = write_config(work / "cfg.yaml", tiny_root)
    result = run_train(cfg, work / "run", xla_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = train_losses(work / "run")
    assert sorted(losses) == list(range(1, SCALE_STEPS + 1))
    return work / "run", losses, final_state(work / "run", SCALE_STEPS)


@pytest.fixture(scope="session")
def helpers():
    """This module (its functions are not importable from tests under --import-mode=importlib)."""
    return sys.modules[__name__]
