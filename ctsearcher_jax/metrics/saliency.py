"""Saliency metrics in 3D: fixation maps, saliency volumes, CC, NSS, KLD, AUC-Judd.

The original evaluates only scanpath metrics; this module defines the 3D saliency versions,
following pysaliency / the MIT saliency benchmark conventions:

* **Grid.** A volume of `grid = (gy, gx, gz)` voxels covers the gaze frame `frame = (512, 512,
  512)` (Y pixels, X pixels, Z slices); a fixation at 1-based (x, y, z) falls into voxel
  `floor((c - 1) * g / frame)` per axis, clipped to the grid. Axis order (Y, X, Z) = volume
  (i, j, k), as everywhere in the project. Default grid 64^3 (8 px / 8 slices per voxel).
* **Fixation map** F: number of fixations per voxel (optionally weighted by duration).
* **Saliency volume**: F smoothed by a separable Gaussian of standard deviation `sigma` voxels
  (default 2 voxels = 16 px, about 1 degree of visual angle at reading distance for a 512 px
  slice), truncated at 4 sigma, zero outside the grid (scipy's `mode='constant'`,
  `truncate=4.0`), then normalised to sum 1.
* **CC** (pysaliency `CC`): Pearson correlation of two volumes over all voxels.
* **NSS** (pysaliency `NSS`): the predicted volume standardised with its mean and *population*
  std (ddof = 0), averaged over the ground-truth fixations (a voxel fixated k times counts k
  times).
* **KLD** (MIT `KLdiv`): P = pred / sum(pred), Q = gt / sum(gt),
  `sum(Q * log(eps + Q / (P + eps)))`, eps = 2.2204e-16 (MATLAB `eps`). Lower is better.
* **AUC-Judd** (MIT `AUC_Judd`, no jitter): thresholds are the predicted values at the fixated
  voxels (each fixated voxel once); true-positive rate = fraction of fixated voxels at or above
  the threshold, false-positive rate = fraction of the other voxels at or above it; trapezoidal
  area with the (0, 0) and (1, 1) end points. Ties between equal values are not jittered, so the
  result is deterministic.

All functions take a batch axis first; they are jit-compiled and vmapped.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

MATLAB_EPS = 2.2204e-16
DEFAULT_GRID = (64, 64, 64)
DEFAULT_FRAME = (512.0, 512.0, 512.0)
DEFAULT_SIGMA = 2.0


def fixation_voxels(fixations: np.ndarray, grid: Sequence[int] = DEFAULT_GRID,
                    frame: Sequence[float] = DEFAULT_FRAME) -> np.ndarray:
    """(n, 3) int voxel indices (iy, ix, iz) of (n, 4) `[x, y, z, s]` 1-based fixations."""
    f = np.asarray(fixations, dtype=np.float64).reshape(-1, 4)
    coords = np.stack([f[:, 1], f[:, 0], f[:, 2]], axis=1)  # (Y, X, Z) = volume axes
    g = np.asarray(grid, dtype=np.float64)
    idx = np.floor((coords - 1.0) * g / np.asarray(frame, dtype=np.float64)).astype(np.int64)
    return np.clip(idx, 0, np.asarray(grid) - 1)


def fixation_map(fixations: np.ndarray, grid: Sequence[int] = DEFAULT_GRID,
                 frame: Sequence[float] = DEFAULT_FRAME, duration_weighted: bool = False) -> np.ndarray:
    """(gy, gx, gz) float32 fixation counts (or summed durations in seconds) of one scanpath set.

    fixations: (n, 4) `[x, y, z, duration_s]`; stack several readers' scanpaths to pool them.
    """
    f = np.asarray(fixations, dtype=np.float64).reshape(-1, 4)
    vox = fixation_voxels(f, grid, frame)
    out = np.zeros(tuple(grid), np.float64)
    np.add.at(out, (vox[:, 0], vox[:, 1], vox[:, 2]), f[:, 3] if duration_weighted else 1.0)
    return out.astype(np.float32)


def gaussian_matrix(size: int, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """(size, size) matrix K with (K @ v) = 1-D Gaussian filter of v, zero outside (scipy 'constant')."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    w /= w.sum()
    k = np.zeros((size, size), np.float64)
    for off, weight in zip(range(-radius, radius + 1), w):
        k += weight * np.eye(size, k=off)
    return k.astype(np.float32)


@jax.jit
def _smooth(maps: jax.Array, ky: jax.Array, kx: jax.Array, kz: jax.Array) -> jax.Array:
    out = jnp.einsum("ab,nbcd->nacd", ky, maps)
    out = jnp.einsum("ab,ncbd->ncad", kx, out)
    out = jnp.einsum("ab,ncdb->ncda", kz, out)
    return out / jnp.maximum(out.sum(axis=(1, 2, 3), keepdims=True), 1e-30)


def saliency_volumes(maps: np.ndarray, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """(B, gy, gx, gz) fixation maps -> Gaussian-smoothed saliency volumes summing to 1 (float32)."""
    maps = np.asarray(maps, np.float32)
    if sigma <= 0:
        return maps / np.maximum(maps.sum(axis=(1, 2, 3), keepdims=True), 1e-30)
    ks = [jnp.asarray(gaussian_matrix(s, sigma)) for s in maps.shape[1:]]
    return np.asarray(_smooth(jnp.asarray(maps), *ks))


def _cc(a: jax.Array, b: jax.Array) -> jax.Array:
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    return (a * b).sum() / jnp.sqrt((a * a).sum() * (b * b).sum())


def _nss(sal: jax.Array, fix: jax.Array) -> jax.Array:
    z = (sal - sal.mean()) / sal.std()  # population std, as pysaliency
    return (z * fix).sum() / fix.sum()


def _kld(pred: jax.Array, gt: jax.Array) -> jax.Array:
    p = pred / pred.sum()
    q = gt / gt.sum()
    return (q * jnp.log(MATLAB_EPS + q / (p + MATLAB_EPS))).sum()


def _auc_judd(sal: jax.Array, fix: jax.Array) -> jax.Array:
    s = sal.ravel()
    s = (s - s.min()) / jnp.maximum(s.max() - s.min(), 1e-30)
    fixated = fix.ravel() > 0
    n_fix = fixated.sum()
    n_all = s.shape[0]
    # Thresholds: fixated values in descending order; non-fixated slots pushed to the end.
    th = jnp.sort(jnp.where(fixated, s, -jnp.inf))[::-1]
    above = n_all - jnp.searchsorted(jnp.sort(s), th, side="left")  # count(s >= th)
    k = jnp.arange(1, n_all + 1)
    valid = k <= n_fix
    tp = jnp.where(valid, k / n_fix, 1.0)
    fp = jnp.where(valid, (above - k) / jnp.maximum(n_all - n_fix, 1), 1.0)
    tp = jnp.concatenate([jnp.zeros(1), tp, jnp.ones(1)])
    fp = jnp.concatenate([jnp.zeros(1), fp, jnp.ones(1)])
    return jnp.sum((fp[1:] - fp[:-1]) * (tp[1:] + tp[:-1]) / 2)


_cc_b = jax.jit(jax.vmap(_cc))
_nss_b = jax.jit(jax.vmap(_nss))
_kld_b = jax.jit(jax.vmap(_kld))
_auc_b = jax.jit(jax.vmap(_auc_judd))


def cc(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(B,) Pearson correlation between (B, ...) predicted and ground-truth saliency volumes."""
    return np.asarray(_cc_b(jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32)))


def nss(pred: np.ndarray, gt_fixation_map: np.ndarray) -> np.ndarray:
    """(B,) NSS of (B, ...) predicted volumes at (B, ...) ground-truth fixation counts."""
    return np.asarray(_nss_b(jnp.asarray(pred, jnp.float32), jnp.asarray(gt_fixation_map, jnp.float32)))


def kld(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(B,) KL divergence (MIT convention) of ground-truth density `gt` from prediction `pred`."""
    return np.asarray(_kld_b(jnp.asarray(pred, jnp.float32), jnp.asarray(gt, jnp.float32)))


def auc_judd(pred: np.ndarray, gt_fixation_map: np.ndarray) -> np.ndarray:
    """(B,) AUC-Judd of (B, ...) predicted volumes against (B, ...) ground-truth fixation maps."""
    return np.asarray(_auc_b(jnp.asarray(pred, jnp.float32), jnp.asarray(gt_fixation_map, jnp.float32)))


def saliency_scores(pred_fixations: Sequence[np.ndarray], gt_fixations: Sequence[np.ndarray],
                    grid: Sequence[int] = DEFAULT_GRID, frame: Sequence[float] = DEFAULT_FRAME,
                    sigma: float = DEFAULT_SIGMA) -> dict[str, np.ndarray]:
    """All four saliency metrics for B items (e.g. CTs): predicted vs ground-truth fixations.

    pred_fixations[b], gt_fixations[b]: (n, 4) `[x, y, z, s]` arrays (pool readers by stacking).
    Returns {"saliency_cc", "saliency_nss", "saliency_kld", "saliency_auc_judd"} -> (B,).
    """
    pmaps = np.stack([fixation_map(p, grid, frame) for p in pred_fixations])
    gmaps = np.stack([fixation_map(g, grid, frame) for g in gt_fixations])
    psal = saliency_volumes(pmaps, sigma)
    gsal = saliency_volumes(gmaps, sigma)
    return {"saliency_cc": cc(psal, gsal), "saliency_nss": nss(psal, gmaps),
            "saliency_kld": kld(psal, gsal), "saliency_auc_judd": auc_judd(psal, gmaps)}


def score_cts(gt_cts: Sequence[Sequence[np.ndarray]], pred_cts: Sequence[Sequence[np.ndarray]],
              **kwargs) -> dict[str, np.ndarray]:
    """The `saliency` family (metrics/registry.py): per CT with both ground truth and
    predictions, its pooled predictions against its pooled readers: {name: (C,) float64}."""
    items = [(np.concatenate(list(g)), np.concatenate(list(p)))
             for g, p in zip(gt_cts, pred_cts) if len(g) and len(p)]
    if not items:
        return {n: np.zeros(0) for n in ("saliency_cc", "saliency_nss", "saliency_kld",
                                         "saliency_auc_judd")}
    return saliency_scores([p for _, p in items], [g for g, _ in items], **kwargs)
