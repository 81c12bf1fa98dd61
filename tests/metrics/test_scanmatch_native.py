"""The native gap-0 ScanMatch kernel against the jnp stripe kernel and the written-out DP.

The parity with the original's numbers is in test_scanpath_metrics.py (both kernels) and the
reward's in test_scanmatch_reward.py; this file covers the kernel's own contract: any lengths
and padding, runs of every length, threads, vmap, bad input, and the fallback."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctsearcher_jax.metrics import scanmatch as sm
from ctsearcher_jax.metrics._batch import pad_sequences, x64
from ctsearcher_jax.metrics.scanmatch import native
from ctsearcher_jax.metrics.scanmatch import reward as rw

PARAMS = sm.WITH_DURATION
K = PARAMS.num_symbols


def _sequences(seed=3):
    """Pairs of run-shaped symbol sequences, with empty, single-symbol and one-run edge cases."""
    rng = np.random.default_rng(seed)

    def runs(n_runs, max_run):
        return np.repeat(rng.integers(0, K, n_runs), rng.integers(1, max_run, n_runs)).astype(np.int32)

    seqs = [(runs(rng.integers(1, 30), 12), runs(rng.integers(1, 30), 12)) for _ in range(9)]
    seqs += [(np.zeros(0, np.int32), runs(4, 5)), (np.zeros(0, np.int32), np.zeros(0, np.int32)),
             (np.array([7], np.int32), np.array([7], np.int32)),
             (np.full(40, 3, np.int32), runs(20, 3)),           # one long run on either side
             (runs(50, 2), np.full(33, 100, np.int32))]
    return seqs


def _padded(seqs, extra=5):
    a, la = pad_sequences([x for x, _ in seqs], max(len(x) for x, _ in seqs) + extra, dtype=np.int32)
    b, lb = pad_sequences([y for _, y in seqs], max(len(y) for _, y in seqs) + 2 * extra,
                          dtype=np.int32)
    return a, la, b, lb


def test_native_equals_the_stripe_kernel_and_the_dp_float64():
    """Bit-identical in float64 to the stripe kernel, whatever the padding and thread count;
    padding filled with junk symbols past each length changes nothing."""
    seqs = _sequences()
    stripe = sm.nw_max_batch([x for x, _ in seqs], [y for _, y in seqs], PARAMS, threads=1,
                             kernel="stripe")
    a, la, b, lb = _padded(seqs)
    rng = np.random.default_rng(0)
    for x, n in ((a, la), (b, lb)):  # junk symbols past each length
        past = np.arange(x.shape[1])[None] >= n[:, None]
        x[past] = rng.integers(0, K, int(past.sum()))
    sub = sm.substitution_matrix(PARAMS.bins, PARAMS.threshold)
    with x64():
        for threads in (1, 2, 7):
            got = native.gap0_max(jnp.asarray(a), jnp.asarray(la), jnp.asarray(b), jnp.asarray(lb),
                                  jnp.asarray(sub), threads=threads)
            assert got.dtype == jnp.float64
            assert np.asarray(got).tolist() == stripe.tolist(), threads
        # vmap over a leading axis (e.g. a vmapped reward): each slice as its own call
        stacked = jax.vmap(lambda *x: native.gap0_max(*x, jnp.asarray(sub)))(
            *(jnp.asarray(np.stack([x, x[::-1]])) for x in (a, la, b, lb)))
        assert np.asarray(stacked).tolist() == [stripe.tolist(), stripe[::-1].tolist()]


def test_native_float32_is_within_rounding_of_float64():
    seqs = _sequences(seed=4)
    a, la, b, lb = _padded(seqs, extra=0)
    sub = sm.substitution_matrix(PARAMS.bins, PARAMS.threshold)
    exact = sm.nw_max_batch([x for x, _ in seqs], [y for _, y in seqs], PARAMS, kernel="native")
    got = jax.jit(native.gap0_max)(a, la, b, lb, jnp.asarray(sub, jnp.float32))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), exact, rtol=1e-6, atol=0)


@pytest.mark.parametrize("case,message", [
    ("symbol", "symbol outside"), ("negative length", "length outside"),
    ("long length", "length outside"), ("asymmetric", "symmetric")])
def test_native_rejects_bad_input_instead_of_reading_out_of_bounds(case, message):
    a, la, b, lb = _padded(_sequences()[:3], extra=0)
    sub = sm.substitution_matrix(PARAMS.bins, PARAMS.threshold).astype(np.float32)
    if case == "symbol":
        b[1, 0] = K
    elif case == "negative length":
        la[2] = -1
    elif case == "long length":
        lb[0] = b.shape[1] + 1
    else:
        sub[0, 1] += 1
    with pytest.raises(Exception, match=message):
        jax.block_until_ready(native.gap0_max(a, la, b, lb, jnp.asarray(sub)))
    with pytest.raises(TypeError, match="float32 or float64"):
        native.gap0_max(a, la, b, lb, jnp.asarray(sub, jnp.float16))


def test_auto_takes_the_stripe_kernel_when_native_is_unavailable(monkeypatch):
    """No compiler / CTSEARCHER_NATIVE=0: the reward and the evaluation give the same scores."""
    seqs = _sequences()[:6]
    with_native = sm.nw_max_batch([x for x, _ in seqs], [y for _, y in seqs], PARAMS)
    coords = jnp.asarray(np.random.default_rng(1).uniform(0, 512, (4, 6, 3)), jnp.float32)
    durations = jnp.full((4, 6), 0.2, jnp.float32)
    length = jnp.array([6, 3, 0, 5])
    args = (coords, durations, length, coords[::-1], durations, length[::-1])
    reward_native = rw.scanmatch_pairs(*args, duration_cap_s=0.5)
    assert sm.choose_kernel(step=True).name == "native"
    monkeypatch.setattr(native, "available", lambda: False)
    assert sm.choose_kernel(step=True).name == "stripe"
    np.testing.assert_array_equal(sm.nw_max_batch([x for x, _ in seqs], [y for _, y in seqs], PARAMS),
                                  with_native)
    np.testing.assert_allclose(rw.scanmatch_pairs(*args, duration_cap_s=0.5), reward_native,
                               rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="kernel must be"):
        rw.scanmatch_pairs(*args, kernel="fast")
