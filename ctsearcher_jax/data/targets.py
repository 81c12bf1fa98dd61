"""Training targets of one scanpath: spatial classes, durations and masks (no Python loop per fixation).

Discretisation is the original's: a 1-based gaze coordinate c becomes cell `int((c - 1) / downscale)`
computed in float32 and truncated toward zero, with downscale = frame / Gx (X), frame / Gy (Y) and
z_extent / Gz (Z). The cell is clipped into the grid (the original would crash on a coordinate past
the frame). Class 0 is STOP, class `1 + iy*Gx*Gz + ix*Gz + iz` is a cell.

Per step t < n (n = fixations kept, at most max_length): the target is the cell's one-hot, or a
Gaussian blur of it (sigma in cells, scipy `gaussian_filter` as the original, normalised to sum 1);
durations are the fixation times in seconds. Every step t >= n has target STOP, but only the first
of them (the stop step) is in the action mask; a scanpath longer than max_length gets no stop step.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import scipy.ndimage

from ctsearcher_jax.config import GAZE_FRAME
from ctsearcher_jax.errors import DataError


class ScanpathTargets(NamedTuple):
    """Targets of one scanpath (or a stack of them with leading axes).

    spatial: (L, K) float32, K = 1 + Gy*Gx*Gz, class 0 = STOP; each row sums to 1.
    duration: (L,) float32 seconds, 0 after the last fixation.
    action_mask: (L,) float32, 1 for the fixations and the stop step.
    duration_mask: (L,) float32, 1 for the fixations.
    """

    spatial: np.ndarray
    duration: np.ndarray
    action_mask: np.ndarray
    duration_mask: np.ndarray


def discretise(coord: np.ndarray, extent: int | float, bins: int) -> np.ndarray:
    """Cell index of 1-based coordinates: int32(float32(coord - 1) / float32(extent / bins)).

    coord: (n,) any float; returns (n,) int32 in [0, bins).
    """
    downscale = np.float32(extent / bins)
    # float32 like the original (np.float32 coordinates divided by a Python float under NEP 50).
    cell = ((np.asarray(coord, dtype=np.float32) - np.float32(1)) / downscale).astype(np.int32)
    return np.clip(cell, 0, bins - 1)


# Offsets are kept strictly below 1, so cell + offset never reaches the next cell.
OFFSET_MAX = np.float32(1.0) - np.finfo(np.float32).epsneg


def _cell_and_offset(coord: np.ndarray, extent: int | float, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(cell (n,) int32 as `discretise`, offset (n,) float32 in [0, 1) inside that cell)."""
    downscale = np.float32(extent / bins)
    u = (np.asarray(coord, dtype=np.float32) - np.float32(1)) / downscale
    cell = discretise(coord, extent, bins)
    return cell, np.clip(u - cell.astype(np.float32), 0.0, OFFSET_MAX).astype(np.float32)


def fixation_targets(x: np.ndarray, y: np.ndarray, z: np.ndarray, *, grid: Sequence[int],
                     max_length: int, frame: int = GAZE_FRAME,
                     z_extent: int = GAZE_FRAME) -> tuple[np.ndarray, np.ndarray]:
    """Class and within-cell offset of each fixation (autoregressive models read them).

    x, y, z: (n,) 1-based gaze coordinates. Returns (classes (L,) int32: `1 + token` of the
    first min(n, L) fixations, the cell `build_targets` puts its one-hot on, 0 after;
    offsets (L, 3) float32 [x, y, z] in [0, 1): u - cell with u = float32(c - 1) /
    float32(extent / bins), the position inside the cell, 0 after). A coordinate past the
    frame lies in the clipped last cell at an offset just below 1 (before 0: offset 0).
    """
    gy, gx, gz = (int(g) for g in grid)
    n = min(len(x), max_length)
    iy, oy = _cell_and_offset(np.asarray(y)[:n], frame, gy)
    ix, ox = _cell_and_offset(np.asarray(x)[:n], frame, gx)
    iz, oz = _cell_and_offset(np.asarray(z)[:n], z_extent, gz)
    classes = np.zeros(max_length, np.int32)
    classes[:n] = 1 + iy * gx * gz + ix * gz + iz
    offsets = np.zeros((max_length, 3), np.float32)
    offsets[:n] = np.stack([ox, oy, oz], axis=1)
    return classes, offsets


def build_targets(x: np.ndarray, y: np.ndarray, z: np.ndarray, t: np.ndarray, *,
                  grid: Sequence[int], max_length: int, frame: int = GAZE_FRAME,
                  z_extent: int = GAZE_FRAME, blur_sigma: float | None = None) -> ScanpathTargets:
    """Targets of one scanpath.

    x, y, z: (n,) 1-based gaze coordinates (pixels, pixels, slice); t: (n,) seconds.
    grid: (Gy, Gx, Gz) model grid; z_extent: slices binned into Gz cells (512 = original).
    Returns ScanpathTargets with L = max_length and K = 1 + Gy*Gx*Gz.
    """
    gy, gx, gz = (int(g) for g in grid)
    num_cells = gy * gx * gz
    length = max_length
    n = min(len(x), length)
    iy = discretise(np.asarray(y)[:n], frame, gy)
    ix = discretise(np.asarray(x)[:n], frame, gx)
    iz = discretise(np.asarray(z)[:n], z_extent, gz)
    token = (iy * gx * gz + ix * gz + iz).astype(np.int64)
    steps = np.arange(n)

    spatial = np.zeros((length, 1 + num_cells), np.float32)
    spatial[n:, 0] = 1.0
    if blur_sigma:
        cells = np.zeros((n, gy, gx, gz), np.float32)
        cells[steps, iy, ix, iz] = 1.0
        # sigma 0 on the step axis: scipy then filters each step's grid alone, as the original does.
        cells = scipy.ndimage.gaussian_filter(cells, sigma=(0.0, blur_sigma, blur_sigma, blur_sigma))
        cells /= cells.sum(axis=(1, 2, 3), keepdims=True)
        spatial[:n, 1:] = cells.reshape(n, num_cells)
    else:
        spatial[steps, 1 + token] = 1.0

    duration = np.zeros(length, np.float32)
    duration[:n] = np.asarray(t, dtype=np.float32)[:n]
    duration_mask = (np.arange(length) < n).astype(np.float32)
    action_mask = (np.arange(length) <= n).astype(np.float32)
    return ScanpathTargets(spatial, duration, action_mask, duration_mask)


def build_ct_targets(readers: Sequence, *, num_readers_padded: int, grid: Sequence[int],
                     max_length: int, frame: int = GAZE_FRAME, z_extent: int = GAZE_FRAME,
                     blur_sigma: float | None = None) -> tuple[ScanpathTargets, np.ndarray]:
    """Targets of every reader of one CT, padded to a fixed reader count.

    readers: Scanpath objects (fields x, y, z, t). Returns (ScanpathTargets stacked on a leading axis
    R = num_readers_padded, reader_mask (R,) float32). Padded readers have all-zero targets and masks.
    """
    if len(readers) > num_readers_padded:
        name = getattr(readers[0], "name", "?")
        raise DataError(f"CT '{name}' has {len(readers)} readers but the batch is padded to "
                        f"{num_readers_padded}; raise the reader padding to the dataset's maximum")
    gy, gx, gz = (int(g) for g in grid)
    rows = [build_targets(r.x, r.y, r.z, r.t, grid=grid, max_length=max_length, frame=frame,
                          z_extent=z_extent, blur_sigma=blur_sigma) for r in readers]
    pad = num_readers_padded - len(rows)
    empty = ScanpathTargets(np.zeros((max_length, 1 + gy * gx * gz), np.float32),
                            np.zeros(max_length, np.float32), np.zeros(max_length, np.float32),
                            np.zeros(max_length, np.float32))
    rows = rows + [empty] * pad
    stacked = ScanpathTargets(*(np.stack(field) for field in zip(*rows)))
    reader_mask = np.array([1.0] * len(readers) + [0.0] * pad, np.float32)
    return stacked, reader_mask
