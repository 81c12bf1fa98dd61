"""Gaze <-> voxel: one mapping, shared by the synthetic generator and the figures."""

from __future__ import annotations

import numpy as np

from ctsearcher_jax.data import coordinates, synthetic
from ctsearcher_jax.viz import volume


def test_one_mapping_round_trips():
    assert volume.gaze_to_voxel is coordinates.gaze_to_voxel
    rng = np.random.default_rng(0)
    for shape in [(512, 512, 90), (64, 48, 30)]:
        i, j, k = (rng.uniform(-0.5, n - 0.5, 40) for n in shape)
        x, y, z = coordinates.voxel_to_gaze(i, j, k, shape)
        np.testing.assert_allclose(np.stack(coordinates.gaze_to_voxel(x, y, z, shape)),
                                   np.stack([i, j, k]), atol=1e-9)
        stacked = synthetic.voxel_to_gaze(np.stack([i, j, k], -1), shape)
        np.testing.assert_array_equal(stacked, np.stack([x, y, z], -1))
    x, y, z = coordinates.voxel_to_gaze(np.array([0.0, 511.0]), np.array([0.0, 511.0]),
                                        np.array([0.0, 9.0]), (512, 512, 10))
    np.testing.assert_array_equal(np.stack([x, y, z]), [[1, 512], [1, 512], [1, 10]])
