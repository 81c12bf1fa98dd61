"""Losses: shared forward == per-reader forward (values and gradients), no NaN/inf at extremes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ctsearcher_jax.config import ModelConfig
from ctsearcher_jax.data.schema import Scanpath
from ctsearcher_jax.data.targets import ScanpathTargets, build_ct_targets
from ctsearcher_jax.model.ct_searcher import CTSearcher, ScanpathOutputs
from ctsearcher_jax.model.losses import duration_log_pdf, repeat_for_readers, scanpath_loss

CONFIG = ModelConfig(d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                     dim_feedforward=32, dropout=0.0, feature_dim=6, grid=(2, 3, 2), max_length=7)


def _batch(rng):
    """2 CTs padded to 3 readers (CT 0 has 2 readers, CT 1 has 3)."""
    cts = []
    for readers in (2, 3):
        scanpaths = []
        for _ in range(readers):
            n = int(rng.integers(1, 10))
            scanpaths.append(Scanpath("ct", 1, "train", rng.uniform(1, 512, n), rng.uniform(1, 512, n),
                                      rng.uniform(1, 512, n), rng.uniform(0.05, 2.0, n)))
        cts.append(build_ct_targets(scanpaths, num_readers_padded=3, grid=CONFIG.grid,
                                    max_length=CONFIG.max_length))
    targets = ScanpathTargets(*(jnp.asarray(np.stack(f)) for f in zip(*(t for t, _ in cts))))
    return targets, jnp.asarray(np.stack([m for _, m in cts]))


def test_shared_forward_equals_per_reader():
    rng = np.random.default_rng(0)
    model = CTSearcher(CONFIG, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(rng.normal(size=(2, CONFIG.num_tokens, CONFIG.feature_dim)), jnp.float32)
    targets, reader_mask = _batch(rng)

    def loss(model, shared):
        x = tokens if shared else repeat_for_readers(tokens, 3)
        return scanpath_loss(model(x), targets, reader_mask, duration_weight=0.7,
                             share_forward=shared)

    grad_fn = nnx.jit(nnx.value_and_grad(loss, has_aux=True), static_argnums=1)
    (l_shared, parts_shared), g_shared = grad_fn(model, True)
    (l_per, parts_per), g_per = grad_fn(model, False)
    np.testing.assert_allclose(float(l_shared), float(l_per), rtol=1e-6)
    for k in ("spatial", "duration"):
        np.testing.assert_allclose(float(parts_shared[k]), float(parts_per[k]), rtol=1e-6)
    leaves_s = jax.tree.leaves(g_shared)
    leaves_p = jax.tree.leaves(g_per)
    assert len(leaves_s) == len(leaves_p) > 0
    for a, b in zip(leaves_s, leaves_p):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                   atol=1e-6 * max(1.0, float(np.abs(np.asarray(b)).max())))


def test_padded_readers_do_not_count():
    rng = np.random.default_rng(1)
    targets, reader_mask = _batch(rng)
    logits = jnp.asarray(rng.normal(size=(2, 7, 13)), jnp.float32)
    out = ScanpathOutputs(logits, jnp.zeros((2, 7)), jnp.zeros((2, 7)))
    loss = jax.jit(lambda t: scanpath_loss(out, t, reader_mask, duration_weight=1.0)[0])
    base = loss(targets)
    junk = targets._replace(spatial=targets.spatial.at[0, 2].set(1.0),
                            duration=targets.duration.at[0, 2].set(1e6),
                            action_mask=targets.action_mask.at[0, 2].set(1.0),
                            duration_mask=targets.duration_mask.at[0, 2].set(1.0))
    again = loss(junk)
    assert float(base) == float(again)


@pytest.mark.parametrize("legacy_epsilon", [False, True])
def test_no_nan_or_inf_at_extremes(legacy_epsilon):
    length, classes = 6, 9
    durations = jnp.asarray([1e-4, 1e-3, 0.05, 1.0, 20.0, 60.0])
    targets = ScanpathTargets(
        spatial=jax.nn.one_hot(jnp.asarray([3, 0, 8, 1, 5, 2]), classes)[None, None],
        duration=durations[None, None], action_mask=jnp.ones((1, 1, length)),
        duration_mask=jnp.ones((1, 1, length)))
    reader_mask = jnp.ones((1, 1))
    # logits of +-1e4 (target classes at the bottom), mu and log sigma2 far from the data
    logits = jnp.tile(jnp.linspace(-1e4, 1e4, classes), (1, length, 1))

    def loss(logits, mu_arr, ls_arr):
        out = ScanpathOutputs(logits, mu_arr, ls_arr)
        return scanpath_loss(out, targets, reader_mask, duration_weight=1.0,
                             legacy_epsilon=legacy_epsilon)[0]

    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    for mu, log_sigma2 in [(0.0, 0.0), (8.0, -8.0), (-8.0, 8.0), (3.0, -15.0)]:
        mu_arr = jnp.full((1, length), mu)
        ls_arr = jnp.full((1, length), log_sigma2)
        value, grads = value_and_grad(logits, mu_arr, ls_arr)
        assert np.isfinite(float(value)), (mu, log_sigma2)
        for g in grads:
            assert np.all(np.isfinite(np.asarray(g))), (mu, log_sigma2)


def test_duration_log_pdf_matches_scipy():
    from scipy.stats import lognorm

    t = np.array([1e-4, 0.3, 2.0, 60.0])
    mu, log_sigma2 = np.array([-1.0, 0.2, 0.5, 3.0]), np.array([-2.0, 0.0, 1.0, 0.3])
    ours = np.asarray(duration_log_pdf(jnp.asarray(t - 1e-7), jnp.asarray(mu), jnp.asarray(log_sigma2)))
    ref = lognorm.logpdf(t, s=np.exp(0.5 * log_sigma2), scale=np.exp(mu))
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
