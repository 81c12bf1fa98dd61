"""Sampling over many CTs: sharded over local devices, one key per CT (8 fake CPU devices)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def assert_same_records(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        exact = {k: v for k, v in a.items() if k != "T"}
        assert exact == {k: v for k, v in b.items() if k != "T"}  # name, subject, X, Y, Z, length
        np.testing.assert_allclose(a["T"], b["T"], rtol=1e-5, atol=0)


@pytest.mark.cli
def test_sampling_sharded_over_devices_and_split_over_processes_draws_the_same(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8 "
                         "--xla_backend_optimization_level=0")
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "sample_devices_probe.py"),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, eight, odd = out["one"], out["eight"], out["odd"]
    assert len(one) == 10 and [r["name"] for r in one] == [f"ct{i}" for i in range(5) for _ in (0, 1)]
    # Sharding over 8 devices (one padded chunk of 8) or taking another process's share draws the
    # same classes, so the same cells and lengths: exact. Durations come out of float32 exp() and
    # matmuls whose rounding may differ with the device layout or the instruction set (seen in the
    # 7th digit on an AVX2 machine): equal to float32 precision.
    assert_same_records(eight, one)
    assert_same_records(odd, [r for r in one if r["name"] in ("ct1", "ct3")])
    assert any(a["X"] != b["X"] for a, b in zip(one[::2], one[2::2]))  # CTs draw differently
