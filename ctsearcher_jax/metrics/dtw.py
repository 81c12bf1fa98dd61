"""Dynamic time warping (DTW) distance between two 3D scanpaths, batched and jit-compiled.

A scanpath is read as its fixation positions p_i = (x_i, y_i, z_i): x, y in pixels of the
512 x 512 gaze frame, z the slice number taken as it is (one slice = one unit, the 512^3 frame
that ScanMatch 3D and MultiMatch 3D use; z is not rescaled by the CT's slice count). Durations
are ignored. With d(i, j) = ||p_i - q_j||_2 between ground-truth fixation i (1..n) and predicted
fixation j (1..m),

    D(0, 0) = 0,   D(i, 0) = D(0, j) = inf  (i, j >= 1),
    D(i, j) = d(i, j) + min(D(i-1, j), D(i, j-1), D(i-1, j-1)),
    DTW = D(n, m)

in pixel units, lower is better (0 for identical paths). Every fixation of both paths is matched
at least once, so DTW grows with the path lengths: compare models on the same pairs only. An
empty scanpath gives NaN.

The DP runs over anti-diagonals i + j = k (each diagonal one vector step, `lax.scan` over k) in
float64, vmapped over pairs padded to bucketed lengths; padding never feeds a cell inside the
(n, m) rectangle, and D(n, m) is read when k = n + m.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ctsearcher_jax.metrics._batch import bucket, float64_on_host, pad_batch, pad_sequences


def _dtw_one(a: jax.Array, la: jax.Array, b: jax.Array, lb: jax.Array) -> jax.Array:
    """DTW of one padded pair: a (3, N) valid up to la, b (3, M) valid up to lb -> () float64."""
    rows = a.shape[1] + 1
    i = jnp.arange(rows)
    ax, ay, az = jnp.concatenate([a[:, :1], a], axis=1)  # column i = fixation i (1-based); 0 unused
    inf = jnp.asarray(jnp.inf, a.dtype)

    def step(carry, k):
        d1, d2, result = carry  # diagonals k-1 and k-2, indexed by i
        j = k - i
        col = jnp.clip(j - 1, 0, b.shape[1] - 1)
        cost = jnp.sqrt((ax - b[0, col]) ** 2 + (ay - b[1, col]) ** 2 + (az - b[2, col]) ** 2)
        up = jnp.concatenate([d1[:1], d1[:-1]])    # D(i-1, j)   on diagonal k-1
        left = d1                                   # D(i, j-1)   on diagonal k-1
        diag = jnp.concatenate([d2[:1], d2[:-1]])  # D(i-1, j-1) on diagonal k-2
        inner = cost + jnp.minimum(jnp.minimum(up, left), diag)
        d = jnp.where((i == 0) & (j == 0), 0.0, jnp.where((i == 0) | (j == 0), inf, inner))
        d = jnp.where((j >= 0) & (j <= b.shape[1]), d, inf)
        result = jnp.where(k == la + lb, d[jnp.clip(la, 0, rows - 1)], result)
        return (d, d1, result), None

    init = (jnp.full((rows,), inf), jnp.full((rows,), inf), jnp.asarray(jnp.nan, a.dtype))
    (_, _, result), _ = jax.lax.scan(step, init, jnp.arange(a.shape[1] + b.shape[1] + 1))
    return jnp.where((la == 0) | (lb == 0), jnp.nan, result)


_dtw_batch = jax.jit(jax.vmap(_dtw_one))


def dtw_batch(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray]) -> np.ndarray:
    """DTW of many (gt, pred) pairs of (n, 4) `[x, y, z, duration_s]` arrays: (B,) float64 pixels."""
    if len(gt) != len(pred):
        raise ValueError(f"dtw_batch: {len(gt)} ground-truth vs {len(pred)} predicted scanpaths")
    n = len(gt)
    if n == 0:
        return np.zeros((0,), np.float64)
    nb = pad_batch(n)  # bucketed batch and lengths: few compiled shapes
    empty = np.zeros((0, 3))
    ga = [np.asarray(g, np.float64).reshape(-1, 4)[:, :3] for g in gt] + [empty] * (nb - n)
    pb = [np.asarray(p, np.float64).reshape(-1, 4)[:, :3] for p in pred] + [empty] * (nb - n)
    a, la = pad_sequences(ga, bucket(max(len(s) for s in ga)))
    b, lb = pad_sequences(pb, bucket(max(len(s) for s in pb)))
    with float64_on_host():
        # coordinates first, (B, 3, L): each diagonal gathers three contiguous rows
        out = _dtw_batch(jnp.asarray(a.transpose(0, 2, 1)), jnp.asarray(la),
                         jnp.asarray(b.transpose(0, 2, 1)), jnp.asarray(lb))
        return np.asarray(out, np.float64)[:n]


def dtw(gt: np.ndarray, pred: np.ndarray) -> float:
    """DTW of one pair (see `dtw_batch`)."""
    return float(dtw_batch([gt], [pred])[0])


def score_pairs(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The `dtw` family (metrics/registry.py): {"dtw": (K,) float64 pixels}."""
    return {"dtw": dtw_batch(gt, pred)}
