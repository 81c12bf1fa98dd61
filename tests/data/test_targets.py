"""Targets equal the original dataset's (ctsearcher_small.json / .npz) exactly; other grids; blur."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage

from ctsearcher_jax.data.schema import Scanpath
from ctsearcher_jax.data.targets import build_ct_targets, build_targets
from ctsearcher_jax.errors import DataError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "model"


def _readers():
    records = json.loads((FIX / "ctsearcher_small.json").read_text())["dataset"]["fixations_json"]
    return [Scanpath(r["name"], r["subject"], r.get("split"), *(np.asarray(r[k], np.float64)
                                                             for k in "XYZT")) for r in records]


def test_equals_original_targets_exactly():
    ref = np.load(FIX / "ctsearcher_small.npz")
    targets, reader_mask = build_ct_targets(_readers(), num_readers_padded=3, grid=(8, 8, 8),
                                            max_length=16)
    np.testing.assert_array_equal(reader_mask, [1, 1, 0])
    np.testing.assert_array_equal(targets.spatial[:2], ref["target_scanpath"])
    np.testing.assert_array_equal(targets.duration[:2], ref["duration"])
    np.testing.assert_array_equal(targets.action_mask[:2], ref["action_mask"])
    np.testing.assert_array_equal(targets.duration_mask[:2], ref["duration_mask"])
    for field in targets:
        assert field.dtype == np.float32
        assert not field[2].any()  # padded reader


def test_other_grid_and_z_extent():
    x = np.array([1.0, 512.0, 256.5, 600.0])
    y = np.array([1.0, 100.0, 300.0, 0.0])
    z = np.array([1.0, 40.0, 79.0, 80.0])
    t = np.array([0.1, 0.2, 0.3, 0.4])
    tg = build_targets(x, y, z, t, grid=(4, 6, 5), max_length=6, z_extent=80)
    # cells: y -> int((y-1)/128), x -> int((x-1)/(512/6)), z -> int((z-1)/16); clipped into the grid
    iy = np.array([0, 0, 2, 0]); ix = np.array([0, 5, 2, 5]); iz = np.array([0, 2, 4, 4])
    tokens = iy * 30 + ix * 5 + iz
    assert tg.spatial.shape == (6, 121)
    np.testing.assert_array_equal(tg.spatial[np.arange(4), 1 + tokens], 1.0)
    np.testing.assert_array_equal(tg.spatial.sum(1), 1.0)
    np.testing.assert_array_equal(tg.spatial[4:, 0], 1.0)
    np.testing.assert_array_equal(tg.action_mask, [1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(tg.duration_mask, [1, 1, 1, 1, 0, 0])
    np.testing.assert_allclose(tg.duration[:4], t.astype(np.float32))


def test_truncation_has_no_stop_step():
    n = 9
    tg = build_targets(*(np.full(n, 10.0) for _ in range(4)), grid=(2, 2, 2), max_length=5)
    np.testing.assert_array_equal(tg.action_mask, 1.0)
    np.testing.assert_array_equal(tg.duration_mask, 1.0)
    assert not tg.spatial[:, 0].any()


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.0])
def test_blur_equals_per_step_gaussian_filter(sigma):
    rng = np.random.default_rng(1)
    x, y, z = (rng.uniform(1, 512, 5) for _ in range(3))
    t = rng.uniform(0.1, 1.0, 5)
    grid = (4, 5, 6)
    tg = build_targets(x, y, z, t, grid=grid, max_length=8, blur_sigma=sigma)
    hard = build_targets(x, y, z, t, grid=grid, max_length=8)
    for step in range(5):
        # the original: one-hot grid, scipy gaussian_filter, divide by its sum (float32)
        one_hot = hard.spatial[step, 1:].reshape(grid)
        ref = scipy.ndimage.gaussian_filter(one_hot, sigma)
        ref /= ref.sum()
        np.testing.assert_allclose(tg.spatial[step, 1:], ref.reshape(-1), rtol=1e-6, atol=1e-9)
        assert tg.spatial[step, 0] == 0
    np.testing.assert_allclose(tg.spatial.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(tg.spatial[5:, 0], 1.0)


def test_too_many_readers():
    with pytest.raises(DataError, match="readers"):
        build_ct_targets(_readers(), num_readers_padded=1, grid=(8, 8, 8), max_length=16)
