"""CT-Searcher on other grids, dropout, the PE placement, bfloat16 compute."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ctsearcher_jax.config import ModelConfig
from ctsearcher_jax.model.ct_searcher import CTSearcher

forward = nnx.jit(lambda model, x: model(x))
CONFIG = ModelConfig(d_model=24, num_heads=3, num_encoder_layers=2, num_decoder_layers=1,
                     dim_feedforward=40, dropout=0.3, feature_dim=10, grid=(3, 2, 4), max_length=6)


def test_shapes_dtypes_other_grid():
    model = CTSearcher(CONFIG, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 24, 10))
    out = forward(model, x)
    assert out.spatial_logits.shape == (2, 6, 25) and out.duration_mu.shape == (2, 6)
    assert out.duration_log_sigma2.shape == (2, 6)
    assert all(o.dtype == jnp.float32 for o in out)
    with pytest.raises(ValueError, match="24 tokens"):
        model(jnp.zeros((1, 23, 10)))


def test_dropout_train_vs_eval():
    model = CTSearcher(CONFIG, rngs=nnx.Rngs(params=0, dropout=1))
    x = jax.random.normal(jax.random.key(0), (1, 24, 10))
    train = nnx.jit(lambda m, x: m(x, deterministic=False))
    a, b = train(model, x), train(model, x)
    assert not np.allclose(a.spatial_logits, b.spatial_logits)  # the dropout stream advances
    e1, e2 = forward(model, x), forward(model, x)
    np.testing.assert_array_equal(e1.spatial_logits, e2.spatial_logits)


def test_positional_table_enters_encoder_and_memory_only():
    # Batch items are independent, and the stop column of the logits uses E without the 2nd PE:
    # zeroing the table changes the outputs; permuting tokens changes them too (PE breaks symmetry).
    model = CTSearcher(dataclasses.replace(CONFIG, dropout=0.0), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 24, 10))
    full = forward(model, x)
    single = forward(model, x[1:])
    np.testing.assert_allclose(full.spatial_logits[1], single.spatial_logits[0], rtol=1e-5, atol=1e-5)
    table = model.pos_table[...]
    model.pos_table[...] = jnp.zeros_like(table)
    no_pe = forward(model, x)
    perm = np.random.default_rng(0).permutation(24)
    shuffled = forward(model, x[:, perm])
    # without PE the model is permutation-equivariant over grid tokens
    np.testing.assert_allclose(shuffled.spatial_logits[..., 1:], no_pe.spatial_logits[..., 1:][..., perm],
                               rtol=1e-4, atol=1e-5)
    assert not np.allclose(no_pe.spatial_logits, full.spatial_logits, atol=1e-3)
    model.pos_table[...] = table


def test_bfloat16_close_to_float32(imported_model, src):
    config = dataclasses.replace(imported_model.config, compute_dtype="bfloat16")
    model = nnx.eval_shape(lambda: CTSearcher(config, rngs=nnx.Rngs(0)))
    nnx.update(model, nnx.state(imported_model))
    x = jnp.asarray(src)
    ref = forward(imported_model, x)
    low = forward(model, x)
    assert low.spatial_logits.dtype == jnp.float32
    for name in ("spatial_logits", "duration_mu", "duration_log_sigma2"):
        a, b = np.asarray(getattr(low, name)), np.asarray(getattr(ref, name))
        rel = np.abs(a - b).max() / np.abs(b).max()
        print(f"bf16 vs fp32 {name}: max relative error {rel:.2e}")
        assert rel < 3e-2, (name, rel)
    # the classes the sampler prefers mostly agree
    agree = np.mean(np.argmax(np.asarray(low.spatial_logits), -1) == np.argmax(np.asarray(ref.spatial_logits), -1))
    print(f"bf16 vs fp32 argmax agreement: {agree:.3f}")
    assert agree > 0.8
