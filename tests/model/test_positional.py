"""3D sine PE: the original's table for 8x8x8 (d = 48, 768), any grid, the legacy random table."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from flax import nnx

from ctsearcher_jax.config import ModelConfig
from ctsearcher_jax.model.ct_searcher import CTSearcher
from ctsearcher_jax.model.positional import legacy_random_table, sine_table


def _float64_table(grid, d):
    """Independent float64 evaluation of the documented formula."""
    f = d // 3
    out = np.zeros((*grid, d))
    for axis, size in enumerate(grid):
        p = np.arange(size) / (size - 1 + 1e-6) * 2 * math.pi
        w = np.exp(-np.arange(0, f, 2) * math.log(10000) / f)
        feats = np.zeros((size, f))
        feats[:, 0::2] = np.sin(p[:, None] * w)
        feats[:, 1::2] = np.cos(p[:, None] * w)[:, : f // 2]
        shape = [1, 1, 1, f]
        shape[axis] = size
        out[..., axis * f:(axis + 1) * f] = feats.reshape(shape)
    return out.reshape(-1, d)


@pytest.mark.parametrize("d, key, rows", [(48, "pos_48", slice(None)),
                                          (768, "pos_768_every_7th_row", slice(None, None, 7))])
def test_equals_original_table(model_fixtures, d, key, rows):
    ref = np.load(model_fixtures / "positional_encoding.npz")[key][:, 0]
    ours = sine_table((8, 8, 8), d)[rows]
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    # torch evaluates exp/sin/cos with vectorised float32 kernels that are within 1 ulp of correct
    # rounding; we round the exact values once. Any layout error would be O(1).
    ulp = np.spacing(np.abs(ref).astype(np.float32))
    diff = np.abs(ours.astype(np.float64) - ref)
    assert np.all(diff <= np.maximum(4 * ulp, 2e-7)), diff.max()
    assert diff.max() < 2e-7
    np.testing.assert_array_equal(ours == 0, ref == 0)


@pytest.mark.parametrize("grid, d", [((4, 6, 5), 32), ((2, 3, 1), 30), ((8, 8, 8), 50)])
def test_any_grid_matches_formula(grid, d):
    ours = sine_table(grid, d)
    np.testing.assert_allclose(ours, _float64_table(grid, d), atol=2e-6)
    assert not ours[:, 3 * (d // 3):].any()  # channels past 3F are zero


def test_legacy_random_table_bound_and_model_tables():
    t = np.asarray(legacy_random_table(jax.random.key(0), 512, 48))
    bound = math.sqrt(6 / (48 + 512 * 48))
    assert t.shape == (512, 48) and np.abs(t).max() <= bound and np.abs(t).max() > 0.9 * bound
    config = ModelConfig(d_model=24, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                         dim_feedforward=8, feature_dim=4, grid=(2, 2, 3), max_length=3)
    sine = CTSearcher(config, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(sine.pos_table[...], sine_table((2, 2, 3), 24))
    legacy = CTSearcher(ModelConfig(**{**config.__dict__, "pe": "legacy_random"}), rngs=nnx.Rngs(0))
    assert np.abs(legacy.pos_table[...]).max() <= math.sqrt(6 / (24 + 12 * 24))
    # the table is saved with the model but is not a trainable parameter
    params = nnx.state(sine, nnx.Param)
    assert "pos_table" not in params
