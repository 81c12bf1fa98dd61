"""Merging per-window feature cells into one feature grid per volume.

`original` is the merge of CTScanGaze's `merge_features.py`: the output grid has
`floor(padded_size / 32)` cells per axis (the padded volume, nothing cropped); window w's
`g^3` cells (`g = roi / 32`, 3 for 96^3) are added at cell `start // 32` and every cell is divided
by the number of windows that covered it (cells no window covers stay 0).

`constant` and `gaussian` are MONAI's voxel-level blending (`sliding_window_inference` with
`mode=...` and an output at 1/32 of the input resolution): the importance map is computed for the
whole `roi^3` window (`compute_importance_map`, Gaussian sigma = `sigma_scale * roi`, weights
clamped below at `max(min, 1e-3)`), resized to the `g^3` cells with nearest-exact sampling
(voxel `floor((c + 0.5) * 32)` of each axis), and each cell becomes the weighted mean of the
windows covering it. `constant` therefore equals `original`. Unlike MONAI, the grid is not
cropped back to the unpadded volume, so all three modes share the original's geometry.

Shapes: window cells `(W, g, g, g, C)` channels-last (as the encoder returns them), starts
`(W, 3)` voxel corners in padded coordinates; the merged grid is `(C, gi, gj, gk)` float32
(channels first, as written to disk).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from feature_extraction.sliding_window import CELL

MERGE_MODES = ("original", "constant", "gaussian")


def importance_map(roi: int, mode: str, sigma_scale: float = 0.125) -> np.ndarray:
    """MONAI's `compute_importance_map` for a cubic `roi^3` window, `(roi, roi, roi)` float32."""
    if mode == "constant":
        return np.ones((roi, roi, roi), np.float32)
    if mode != "gaussian":
        raise ValueError(f"unknown blending mode {mode!r}; use one of {MERGE_MODES}")
    sigma = roi * sigma_scale
    x = np.arange(-(roi - 1) / 2.0, (roi - 1) / 2.0 + 1, dtype=np.float32)
    g = np.exp(x ** 2 / np.float32(-2 * sigma ** 2)).astype(np.float32)
    # Same product order as MONAI: ((g_i x g_j) x g_k), in float32.
    weights = (g[:, None] * g[None, :])[:, :, None] * g[None, None, :]
    floor = max(float(weights.min()), 1e-3)
    return np.maximum(weights, np.float32(floor)).astype(np.float32)


def cell_weights(roi: int, mode: str, sigma_scale: float = 0.125) -> np.ndarray:
    """Per-cell blending weights `(g, g, g)` float32: the voxel importance map sampled nearest-exact."""
    g = roi // CELL
    if mode == "original":
        return np.ones((g, g, g), np.float32)
    full = importance_map(roi, mode, sigma_scale)
    # torch nearest-exact: source = min(floor((dst + 0.5) * in / out), in - 1).
    idx = np.minimum(np.floor((np.arange(g) + 0.5) * (roi / g)).astype(np.int64), roi - 1)
    return full[np.ix_(idx, idx, idx)]


def merge_windows(cells: np.ndarray, starts: np.ndarray, padded_shape: Sequence[int],
                  mode: str = "original", sigma_scale: float = 0.125) -> np.ndarray:
    """Combine per-window cells into the volume's feature grid.

    Args:
      cells: `(W, g, g, g, C)` window features (channels last).
      starts: `(W, 3)` window corners in voxels of the padded volume.
      padded_shape: `(I, J, K)` of the padded volume.
      mode: "original" (cell average), "constant" or "gaussian" (MONAI blending).
    Returns:
      `(C, gi, gj, gk)` float32 with `gi = padded_shape[0] // 32`, etc.
    """
    if mode not in MERGE_MODES:
        raise ValueError(f"unknown merge mode {mode!r}; use one of {MERGE_MODES}")
    cells = np.asarray(cells, dtype=np.float32)
    starts = np.asarray(starts, dtype=np.int64)
    w, g = cells.shape[0], cells.shape[1]
    channels = cells.shape[-1]
    grid = tuple(int(s) // CELL for s in padded_shape)
    weights = cell_weights(g * CELL, mode, sigma_scale)  # (g, g, g)

    # Flat grid index of every cell of every window, in window order; np.add.at is unbuffered and
    # applies the additions in that order, as the original's loop over windows does.
    offs = np.stack(np.meshgrid(*([np.arange(g)] * 3), indexing="ij"), -1).reshape(-1, 3)  # (g^3, 3)
    pos = (starts // CELL)[:, None, :] + offs[None]  # (W, g^3, 3)
    if np.any(pos >= np.array(grid)):
        raise ValueError(f"window cells fall outside the grid {grid}; starts do not fit {padded_shape}")
    flat = np.ravel_multi_index((pos[..., 0], pos[..., 1], pos[..., 2]), grid).ravel()

    total = np.zeros((int(np.prod(grid)), channels), np.float32)
    count = np.zeros(int(np.prod(grid)), np.float32)
    wflat = weights.reshape(-1)
    values = cells.reshape(w, g ** 3, channels)
    if mode != "original":
        values = values * wflat[None, :, None]
    np.add.at(total, flat, values.reshape(-1, channels))
    np.add.at(count, flat, np.tile(wflat, w))
    count[count == 0] = 1.0  # cells outside every window stay 0, as in the original
    merged = total / count[:, None]
    return np.ascontiguousarray(merged.reshape(*grid, channels).transpose(3, 0, 1, 2))
