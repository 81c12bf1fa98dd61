"""Where the evaluation's float64 kernels run: this process's CPU device, also on GPU/TPU machines
(a TPU emulates float64; `metrics/_batch.py`). ScanMatch's gap-0 choice is tested in
test_scanmatch_kernel.py."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ctsearcher_jax.metrics import _batch, dtw, multimatch
from ctsearcher_jax.metrics.scanmatch import WITH_DURATION, scanmatch_batch


def _pairs(n=3, seed=0):
    rng = np.random.default_rng(seed)
    make = lambda k: np.column_stack([rng.uniform(1, 512, (k, 3)), rng.uniform(0.1, 0.5, k)])  # noqa: E731
    return [make(6 + i) for i in range(n)], [make(5 + 2 * i) for i in range(n)]


def test_float64_scope_is_float64_on_the_host_cpu():
    cpu = jax.local_devices(backend="cpu")[0]
    with _batch.float64_on_host():
        x = jnp.arange(3.0)
        assert x.dtype == jnp.float64 and x.devices() == {cpu}
    assert jnp.arange(3.0).dtype == jnp.float32  # scoped: model code keeps float32


def test_float64_kernels_ask_for_the_host_cpu_on_an_accelerator_machine(monkeypatch):
    """With an accelerator as the default backend, MultiMatch dp, DTW and gap ScanMatch still
    place their kernels on the host CPU (each call goes through `float64_on_host`), and their
    results equal those of the plain CPU run."""
    gt, pred = _pairs()
    gapped = dataclasses.replace(WITH_DURATION, gap=-0.5)
    expected = (multimatch.score_pairs(gt, pred, multimatch_alignment="dp"),
                dtw.dtw_batch(gt, pred), scanmatch_batch(gt, pred, gapped))
    cpu = jax.local_devices(backend="cpu")[0]
    asked = []

    def recorded_host_cpu():
        asked.append(1)
        return cpu

    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    monkeypatch.setattr(_batch, "host_cpu", recorded_host_cpu)
    got = (multimatch.score_pairs(gt, pred, multimatch_alignment="dp"),
           dtw.dtw_batch(gt, pred), scanmatch_batch(gt, pred, gapped))
    assert len(asked) >= 3  # one scope per kernel call at least
    for name in expected[0]:
        np.testing.assert_array_equal(got[0][name], expected[0][name])
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[2], expected[2])


def test_without_a_cpu_backend_the_scope_keeps_the_default_device(monkeypatch):
    monkeypatch.setattr(_batch, "host_cpu", lambda: None)
    with _batch.float64_on_host():
        assert jnp.arange(2.0).dtype == jnp.float64
