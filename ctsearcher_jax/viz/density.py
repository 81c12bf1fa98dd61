"""Fixation-density volumes and their overlay on axial slices.

The density is a sum of 3D Gaussians, one per fixation, weighted by its duration (dwell time),
evaluated exactly at the voxel centres of a display grid (not binned first). A 3D Gaussian is
separable, so the whole volume is one contraction of three (n, size) factor tables:
`density[i, j, k] = sum_f w_f * gy[f, i] * gx[f, j] * gz[f, k]`, vectorised over fixations.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import colormaps

from ctsearcher_jax.config import GAZE_FRAME
from ctsearcher_jax.data.schema import Scanpath
from ctsearcher_jax.text import visible
from ctsearcher_jax.viz.figure import new_figure, save_png
from ctsearcher_jax.viz.volume import CTVolume, Window, gaze_to_voxel

SIGMA_FRAME = 16.0   # in-plane Gaussian sigma, pixels of the 512 frame (about 1 degree of view)
SIGMA_SLICES = 2.0   # through-plane Gaussian sigma, slices
MAX_INPLANE = 128    # display grid side at most (the density is smooth; keeps it cheap)


def _gauss_table(centres: np.ndarray, size: int, sigma: float) -> np.ndarray:
    grid = np.arange(size, dtype=np.float64)
    return np.exp(-0.5 * ((grid[None, :] - centres[:, None]) / sigma) ** 2)


def _factors(scanpaths: Sequence[Scanpath], shape: Sequence[int], sigma_frame: float,
             sigma_slices: float, weight: str, frame: int):
    """Per-fixation separable factors: (wy (n, I) = w * gy, gx (n, J), gz (n, K)); None if empty."""
    n_i, n_j, n_k = (int(s) for s in shape)
    fixations = [sp for sp in scanpaths if sp.length]
    if not fixations:
        return None
    x = np.concatenate([sp.x for sp in fixations])
    y = np.concatenate([sp.y for sp in fixations])
    z = np.concatenate([sp.z for sp in fixations])
    if weight == "duration":
        w = np.concatenate([sp.t for sp in fixations])
    elif weight == "count":
        w = np.ones_like(x)
    else:
        raise ValueError(f"weight {weight!r}: use 'duration' or 'count'")
    i, j, k = gaze_to_voxel(x, y, z, (n_i, n_j, n_k), frame)
    wy = _gauss_table(i, n_i, sigma_frame * n_i / frame) * w[:, None]
    gx = _gauss_table(j, n_j, sigma_frame * n_j / frame)
    gz = _gauss_table(k, n_k, sigma_slices)
    return wy, gx, gz


def fixation_density(scanpaths: Sequence[Scanpath], shape: Sequence[int], *,
                     sigma_frame: float = SIGMA_FRAME, sigma_slices: float = SIGMA_SLICES,
                     weight: str = "duration", frame: int = GAZE_FRAME) -> np.ndarray:
    """Gaussian-smoothed fixation density on a voxel grid `shape` (I, J, K); float32, sums to 1.

    weight: "duration" (each fixation weighs its duration in seconds) or "count" (1 each).
    sigma_frame is in 512-frame pixels (scaled to the grid's in-plane size), sigma_slices in
    slices. All-zero when there is no fixation. Cost: n * I * J * K multiply-adds; figures use
    `density_z_profile` and `density_slices`, which need only the slices shown.
    """
    n_i, n_j, n_k = (int(s) for s in shape)
    factors = _factors(scanpaths, shape, sigma_frame, sigma_slices, weight, frame)
    if factors is None:
        return np.zeros((n_i, n_j, n_k), np.float32)
    wy, gx, gz = factors
    density = np.zeros((n_i, n_j * n_k), np.float64)
    # (c, I)^T @ (c, J*K) per chunk of fixations: a matmul, with the (c, J*K) table bounded
    # to about 64 MB however many scanpaths are pooled.
    chunk = max(1, (8 << 20) // max(n_j * n_k, 1))
    for s in range(0, wy.shape[0], chunk):
        sl = slice(s, s + chunk)
        density += wy[sl].T @ (gx[sl, :, None] * gz[sl, None, :]).reshape(-1, n_j * n_k)
    density = density.reshape(n_i, n_j, n_k)
    total = density.sum()
    return (density / total if total > 0 else density).astype(np.float32)


def density_z_profile(scanpaths: Sequence[Scanpath], shape: Sequence[int], *,
                      sigma_frame: float = SIGMA_FRAME, sigma_slices: float = SIGMA_SLICES,
                      weight: str = "duration", frame: int = GAZE_FRAME) -> np.ndarray:
    """(K,) float64: `fixation_density(...).sum(axis=(0, 1))` without building the volume."""
    factors = _factors(scanpaths, shape, sigma_frame, sigma_slices, weight, frame)
    if factors is None:
        return np.zeros(int(shape[2]))
    wy, gx, gz = factors
    profile = (wy.sum(1) * gx.sum(1)) @ gz
    total = profile.sum()
    return profile / total if total > 0 else profile


def density_slices(scanpaths: Sequence[Scanpath], shape: Sequence[int], slices: Sequence[int], *,
                   sigma_frame: float = SIGMA_FRAME, sigma_slices: float = SIGMA_SLICES,
                   weight: str = "duration", frame: int = GAZE_FRAME) -> np.ndarray:
    """(len(slices), I, J) float64: `fixation_density(...)[:, :, k]` for each k, volume unbuilt."""
    n_i, n_j, _ = (int(s) for s in shape)
    factors = _factors(scanpaths, shape, sigma_frame, sigma_slices, weight, frame)
    if factors is None:
        return np.zeros((len(slices), n_i, n_j))
    wy, gx, gz = factors
    total = float(wy.sum(1) @ (gx.sum(1) * gz.sum(1)))
    out = np.stack([(wy * gz[:, k, None]).T @ gx for k in slices]) if len(slices) else \
        np.zeros((0, n_i, n_j))
    return out / total if total > 0 else out


def display_grid(shape: Sequence[int], max_inplane: int = MAX_INPLANE) -> tuple[int, int, int]:
    """Grid (I', J', K) for densities: in-plane downsampled to at most `max_inplane`, all slices."""
    n_i, n_j, n_k = (int(s) for s in shape)
    f = max(n_i, n_j) / max_inplane
    if f <= 1:
        return n_i, n_j, n_k
    return max(1, round(n_i / f)), max(1, round(n_j / f)), n_k


def representative_slices(profile: np.ndarray, count: int = 4) -> np.ndarray:
    """Slice indices (0-based, sorted, distinct) at evenly spaced quantiles of a (K,) Z-profile of
    the density (the 1/(2c), 3/(2c), ... quantiles): where the dwell time is, spread along Z."""
    marginal = np.asarray(profile, np.float64)
    n_k = marginal.shape[0]
    if marginal.sum() <= 0:
        return np.unique(np.linspace(0, n_k - 1, count).round().astype(int))
    cdf = np.cumsum(marginal) / marginal.sum()
    quantiles = (np.arange(count) + 0.5) / count
    return np.unique(np.clip(np.searchsorted(cdf, quantiles), 0, n_k - 1))


def plot_density(volume: CTVolume, window: Window, gt: Sequence[Scanpath],
                 pred: Sequence[Scanpath] | None, out_path: str | os.PathLike[str], *,
                 num_slices: int = 4, dpi: int = 100, panel_inches: float = 2.2,
                 title: str = "") -> Path:
    """Write the density figure: rows GT (all readers pooled) and prediction (all samples pooled),
    each row only when it has scanpaths; columns = the same `num_slices` axial slices, chosen from
    the first row's density.

    Each panel: the windowed axial slice with the duration-weighted density as a heat overlay
    (transparent where low); the colour scale is shared by all panels of the figure so rows
    compare. Pixel size: (num_slices * panel_inches * dpi) x ((rows * panel_inches + 0.3) * dpi).
    """
    rows = [(label, list(sps)) for label, sps in (("ground truth", gt), ("prediction", pred))
            if sps]
    if not rows:
        raise ValueError("nothing to draw: no ground-truth and no predicted scanpath")
    grid = display_grid(volume.shape)
    profiles = [density_z_profile(sps, grid) for _, sps in rows]
    chosen = representative_slices(profiles[0], num_slices)
    densities = [density_slices(sps, grid, chosen) for _, sps in rows]   # (c, I', J') each
    # Pad to a fixed column count so the figure size does not depend on the data.
    slices = np.concatenate([chosen, np.full(num_slices - len(chosen), -1)]).astype(int)
    vmax = max(float(d.max()) for d in densities) or 1.0
    heat = colormaps["inferno"]
    fig = new_figure(num_slices * panel_inches, len(rows) * panel_inches + 0.3, dpi)
    axes = fig.subplots(len(rows), num_slices, squeeze=False)
    n_i, n_j, _ = volume.shape
    for r, ((label, _), dens, profile) in enumerate(zip(rows, densities, profiles)):
        for c, k in enumerate(slices):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if k < 0:
                ax.set_axis_off()
                continue
            ax.imshow(window.apply(volume.data[:, :, k]), cmap="gray", vmin=0, vmax=1,
                      extent=(-0.5, n_j - 0.5, n_i - 0.5, -0.5), interpolation="antialiased")
            # Square root: the hottest spot (a lesion dwell) would otherwise hide the search.
            d = np.sqrt(np.clip(dens[c] / vmax, 0.0, 1.0))
            rgba = heat(d)
            rgba[..., 3] = np.clip((d - 0.05) * 1.2, 0, 0.8)  # transparent where no attention
            ax.imshow(rgba, extent=(-0.5, n_j - 0.5, n_i - 0.5, -0.5), interpolation="bilinear")
            share = float(profile[k])
            ax.set_title(f"slice {k + 1}: {share:.1%} of dwell", fontsize=6.5)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.suptitle(f"{visible(title)}  duration-weighted fixation density (σ {SIGMA_FRAME:g} px, "
                 f"{SIGMA_SLICES:g} slices; shared sqrt scale), {window.label}", fontsize=7.5)
    return save_png(fig, out_path)
