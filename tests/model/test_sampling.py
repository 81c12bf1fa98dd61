"""Sampler: the original's decoding table, stop rules, statistics, determinism, records."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ctsearcher_jax.config import ModelConfig
from ctsearcher_jax.model.ct_searcher import CTSearcher
from ctsearcher_jax.model.sampling import (
    class_to_coords,
    decode_classes,
    draw_from_outputs,
    sample_scanpaths,
    sampled_to_records,
)

TINY = ModelConfig(d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                   dim_feedforward=16, dropout=0.1, feature_dim=8, grid=(2, 3, 2), max_length=10)


def test_table_equals_original(model_fixtures):
    ref = json.loads((model_fixtures / "sampling.json").read_text())
    table = np.asarray(ref["table"], np.float64)
    coords = class_to_coords(jnp.asarray(table[:, 0], jnp.int32), (8, 8, 8), 512, 512)
    np.testing.assert_array_equal(np.asarray(coords), table[:, 1:])


def test_generate_scanpath_examples_equal_original(model_fixtures):
    ex = json.loads((model_fixtures / "sampling.json").read_text())["generate_scanpath_examples"]
    classes = jnp.asarray(ex["sample_actions"], jnp.int32)
    durations = jnp.asarray(ex["durations"], jnp.float32)
    coords, durs, lengths = decode_classes(classes, durations, grid=(8, 8, 8))
    for i, expected in enumerate(ex["predict_fix_vectors"]):
        n = int(lengths[i])
        got = np.concatenate([np.asarray(coords[i, :n]), np.asarray(durs[i, :n])[:, None]], 1)
        np.testing.assert_array_equal(got.reshape(-1, 4), np.asarray(expected, np.float64).reshape(-1, 4))
        np.testing.assert_array_equal(np.arange(8) < n, np.asarray(ex["duration_masks"][i]) > 0)
        np.testing.assert_array_equal(np.arange(8) <= min(n, 7) if n < 8 else np.ones(8, bool),
                                      np.asarray(ex["action_masks"][i]) > 0)


def test_other_grid_and_z_extent():
    # grid (2, 3, 4), frame 512, z extent 80: class 1 + (1*12 + 2*4 + 3) -> x bin 2, y bin 1, z bin 3
    coords = class_to_coords(jnp.asarray([1 + 12 + 8 + 3]), (2, 3, 4), 512, 80)
    np.testing.assert_allclose(np.asarray(coords[0]), [2 * 512 / 3 + 256 / 3, 256 + 128, 3 * 20 + 10],
                               rtol=1e-6)


def _logits_case():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(0, 1.5, (2, 6, 5)), jnp.float32)
    mu = jnp.asarray(rng.normal(-1, 0.3, (2, 6)), jnp.float32)
    log_sigma2 = jnp.asarray(rng.normal(-1, 0.3, (2, 6)), jnp.float32)
    return logits, mu, log_sigma2


def test_statistics_match_softmax():
    logits, mu, log_sigma2 = _logits_case()
    n = 4000
    draw = jax.jit(lambda k: draw_from_outputs(logits, mu, log_sigma2, k, grid=(1, 2, 2), num_samples=n,
                                               min_length=2))
    s = draw(jax.random.key(0))
    classes = np.asarray(s.classes)  # (B, S, L)
    probs = np.asarray(jax.nn.softmax(logits, -1))
    probs_min = probs.copy()
    probs_min[:, :2, 0] = 0
    probs_min /= probs_min.sum(-1, keepdims=True)
    for b in range(2):
        for t in range(6):
            freq = np.bincount(classes[b, :, t], minlength=5) / n
            sd = np.sqrt(probs_min[b, t] * (1 - probs_min[b, t]) / n)
            assert np.all(np.abs(freq - probs_min[b, t]) <= 5 * sd + 1e-9), (b, t, freq, probs_min[b, t])
    assert not (classes[:, :, :2] == 0).any()
    lengths = np.asarray(s.lengths)
    assert lengths.min() >= 2 and lengths.max() <= 6
    first_stop = np.where((classes == 0).any(-1), (classes == 0).argmax(-1), 6)
    np.testing.assert_array_equal(lengths, first_stop)
    # log durations ~ N(mu, sigma2) on the kept steps
    durs = np.asarray(s.durations)
    assert np.all(durs[np.arange(6)[None, None] >= lengths[..., None]] == 0)
    kept = np.arange(6)[None, None] < lengths[..., None]
    z = (np.log(np.where(kept, durs, 1.0)) - np.asarray(mu)[:, None]) / np.exp(0.5 * np.asarray(log_sigma2))[:, None]
    z = z[kept]
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05


def test_legacy_duration_sampling_scales_by_sigma2():
    logits, mu, log_sigma2 = _logits_case()
    key = jax.random.key(3)
    draw = jax.jit(lambda legacy: draw_from_outputs(logits, mu, log_sigma2, key, grid=(1, 2, 2),
                                                    num_samples=3, min_length=6,
                                                    legacy_duration_sampling=legacy),
                   static_argnums=0)
    new, old = draw(False), draw(True)
    # same eps: (log t - mu) / sigma == (log t_legacy - mu) / sigma2
    sigma2 = np.exp(np.asarray(log_sigma2))[:, None]
    eps_new = (np.log(np.asarray(new.durations)) - np.asarray(mu)[:, None]) / np.sqrt(sigma2)
    eps_old = (np.log(np.asarray(old.durations)) - np.asarray(mu)[:, None]) / sigma2
    np.testing.assert_allclose(eps_new, eps_old, rtol=1e-4, atol=1e-4)


def test_sample_scanpaths_model_deterministic_and_records():
    model = CTSearcher(TINY, rngs=nnx.Rngs(0))
    tokens = jax.random.normal(jax.random.key(1), (2, TINY.num_tokens, TINY.feature_dim))
    a = sample_scanpaths(model, tokens, jax.random.key(5), num_samples=3, min_length=4, z_extent=[512, 40])
    b = sample_scanpaths(model, tokens, jax.random.key(5), num_samples=3, min_length=4, z_extent=[512, 40])
    c = sample_scanpaths(model, tokens, jax.random.key(6), num_samples=3, min_length=4, z_extent=[512, 40])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(a.classes), np.asarray(c.classes))
    assert a.coords.shape == (2, 3, 10, 3) and a.lengths.dtype == jnp.int32
    assert np.all((np.asarray(a.lengths) >= 4) & (np.asarray(a.lengths) <= 10))
    zs = np.asarray(a.coords[1, ..., 2])[np.asarray(a.durations[1]) > 0]
    assert set(np.unique(zs)) <= {10.0, 30.0}  # Gz = 2 bins of a 40-slice CT
    records = sampled_to_records(a, ["ct_a", "ct_b"], [[1, 2, 3], 7])
    assert len(records) == 6
    r = records[4]
    assert r["name"] == "ct_b" and r["subject"] == 7 and r["length"] == int(a.lengths[1, 1])
    assert len(r["X"]) == len(r["T"]) == r["length"]
    np.testing.assert_allclose(r["T"], np.asarray(a.durations[1, 1, :r["length"]]), rtol=1e-7)
