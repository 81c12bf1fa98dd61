"""Launcher detection for jax.distributed.initialize (SLURM, TPU pods, explicit flags)."""

from __future__ import annotations

import pytest

from ctsearcher_jax.errors import ConfigError
from ctsearcher_jax.train.distributed import detect_launcher, maybe_initialize


def test_launcher_detection():
    assert detect_launcher({}) is None
    assert detect_launcher({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None
    assert detect_launcher({"SLURM_NTASKS": "4", "SLURM_PROCID": "2"}) == "slurm"
    assert detect_launcher({"TPU_WORKER_HOSTNAMES": "t0"}) is None
    assert detect_launcher({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}) == "tpu_pod"
    assert maybe_initialize(env={}) is None
    with pytest.raises(ConfigError, match="together"):
        maybe_initialize(coordinator="localhost:1234", env={})
