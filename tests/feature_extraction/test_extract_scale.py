"""Extraction on 8 fake CPU devices and on two processes (gloo): same numbers as one device."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from extract_helpers import fake_encoder, fake_extractor, write_ct  # noqa: E402

from ctsearcher_jax.data import manifest as mf  # noqa: E402
from feature_extraction.directory import extract_directory  # noqa: E402
from feature_extraction.sliding_window import pad_volume, plan_windows  # noqa: E402

HERE = Path(__file__).parent
REPO = HERE.parents[1]
WORKER = HERE / "extract_scale_worker.py"


def env(devices: int) -> dict[str, str]:
    e = dict(os.environ)
    e.update({"JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO),
              "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "OMP_NUM_THREADS": "1"})
    return e


@pytest.mark.cli
def test_eight_devices_shard_the_batch_and_match_one_device(tmp_path):
    out = tmp_path / "r.npz"
    r = subprocess.run([sys.executable, str(WORKER), "devices", str(out)], env=env(8),
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(out)
    assert int(got["batch"]) == 8 and int(got["devices"]) == 8
    np.testing.assert_array_equal(got["shards"], np.ones(8))  # one window per device
    assert int(got["compiles"]) == 1
    vol = np.random.default_rng(0).random((150, 110, 200), dtype=np.float32)
    plan = plan_windows(vol.shape, 96, 0.25)  # 3 x 2 x 3 = 18 windows: batches 8, 8, 2 (+6 pad)
    dec4, hidden = fake_encoder(batch_per_device=3).encode_volume(pad_volume(vol, plan), plan.starts)
    np.testing.assert_allclose(got["dec4"], dec4, rtol=1e-5)
    np.testing.assert_allclose(got["hidden"], hidden, rtol=1e-5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.cli
def test_two_processes_split_the_volumes_and_merge_the_manifest(tmp_path):
    cts = tmp_path / "cts"
    for i in range(5):
        write_ct(cts / f"ct{i}.nii.gz", (96, 100, 40 + 10 * i), seed=i)
    port = free_port()
    procs = [subprocess.Popen([sys.executable, str(WORKER), "processes", str(cts), str(tmp_path / "out"),
                               f"127.0.0.1:{port}", str(pid)], env=env(2), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
             for pid in range(2)]
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    reports = sorted((json.loads(o.strip().splitlines()[-1]) for o, _ in outputs), key=lambda r: r["process"])
    assert reports[0]["processed"] == ["ct0", "ct2", "ct4"] and reports[1]["processed"] == ["ct1", "ct3"]
    assert reports[0]["devices"] == 2
    assert sorted(p.name for p in (tmp_path / "out").glob("manifest*")) == ["manifest.json"]
    assert set(mf.read_manifest(tmp_path / "out")) == {f"ct{i}" for i in range(5)}
    # Same features as one process.
    s = extract_directory(cts, tmp_path / "one", extractor=fake_extractor(), progress=False)
    assert s.processed == [f"ct{i}" for i in range(5)]
    for i in range(5):
        for suffix in ("", "_hidden_states_out_4"):
            np.testing.assert_allclose(np.load(tmp_path / "out" / f"ct{i}{suffix}.npy"),
                                       np.load(tmp_path / "one" / f"ct{i}{suffix}.npy"), rtol=1e-5)


@pytest.mark.cli
def test_two_processes_fail_fast_together_when_one_cannot_load_the_weights(tmp_path):
    """Issue 16.10: process 1 cannot read its weights; both stop with the same error at once
    (before, process 0 waited at the final barrier until the coordinator timed out)."""
    cts = tmp_path / "cts"
    for i in range(2):
        write_ct(cts / f"ct{i}.nii.gz", (96, 96, 40), seed=i)
    port = free_port()
    procs = [subprocess.Popen([sys.executable, str(WORKER), "badweights", str(cts),
                               str(tmp_path / "out"), f"127.0.0.1:{port}", str(pid)], env=env(1),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              start_new_session=True)
             for pid in range(2)]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    lines = [o.strip().splitlines()[-1] if o.strip() else e[-2000:] for o, e in outputs]
    assert [p.returncode for p in procs] == [2, 2], lines
    assert lines[0] == lines[1], lines
    assert lines[0].startswith("ERROR WeightsError: process 1: /nonexistent/w.safetensors: no such")
    assert not list((tmp_path / "out").glob("*.npy"))  # nothing extracted by process 0 either
