"""Gaze <-> voxel coordinates: the one mapping every module uses (synthetic data, figures, viewer).

Volume array axes (i, j, k) as stored in the NIfTI map to gaze (Y, X, Z). Gaze X and Y are
1-based pixels of a `frame` x `frame` slice (512) whatever the volume's in-plane size, Z a
1-based slice number of the volume itself. Voxel coordinates are 0-based and continuous, voxel
centres at integers::

    X = (j + 0.5) * 512 / J + 0.5        Y = (i + 0.5) * 512 / I + 0.5        Z = k + 1
    j = (X - 0.5) * J / 512 - 0.5        i = (Y - 0.5) * I / 512 - 0.5        k = Z - 1

so a 512-wide volume gives X = j + 1 exactly. All arrays float64, any matching shapes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ctsearcher_jax.config import GAZE_FRAME


def voxel_to_gaze(i, j, k, shape: Sequence[int], frame: int = GAZE_FRAME
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel (i, j, k) of a volume `shape` (I, J, K) -> gaze (X, Y, Z)."""
    i, j, k = (np.asarray(v, np.float64) for v in (i, j, k))
    x = (j + 0.5) * frame / shape[1] + 0.5
    y = (i + 0.5) * frame / shape[0] + 0.5
    return x, y, k + 1.0


def gaze_to_voxel(x, y, z, shape: Sequence[int], frame: int = GAZE_FRAME
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaze (X, Y, Z) -> continuous voxel (i, j, k) of a volume `shape` (I, J, K)."""
    n_i, n_j, _ = shape
    i = (np.asarray(y, np.float64) - 0.5) * (n_i / frame) - 0.5
    j = (np.asarray(x, np.float64) - 0.5) * (n_j / frame) - 0.5
    k = np.asarray(z, np.float64) - 1.0
    return i, j, k
