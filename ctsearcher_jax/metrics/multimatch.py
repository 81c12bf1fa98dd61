"""MultiMatch (Jarodzka et al. 2010; Dewhurst et al. 2012) in 3D and 2D, batched.

Five similarities in [0, 1] (higher is better): vector, direction, length, position, duration.
3D is the variant of CT-ScanGaze (`multimatch_3dgaze.py`, screen 512^3); 2D equals the
`multimatch-gaze` package (no grouping/simplification in either).

For one pair (first = ground truth, second = prediction, each >= 3 fixations, else all NaN):

* saccade k = fixation k+1 - fixation k; rho = |v|, theta = atan2(vy, vx),
  phi = atan2(sqrt(vx^2 + vy^2), vz) (3D only); a saccade starts at fixation k and carries
  fixation k's duration.
* M[i, j] = |v_gt,i - v_pred,j|; the alignment is a cheapest monotone path from (0, 0) to
  (R-1, C-1) over the grid with moves right, down and diagonal, each move costing M of the
  cell it enters.
* Along the path: vector |v_i - v_j|; direction |theta_i - theta_j| with angles mapped to
  [0, 2pi) (`pi + (pi + theta)` for negative theta) and folded to [0, pi], plus the same for phi
  in 3D, the sum folded once more; length |rho_i - rho_j|; position = distance of the saccade
  start points; duration |d_i - d_j| / max(d_i, d_j). Medians (`np.median` semantics).
* Normalisation with diag = sqrt(sum(screen^2)): vector 1 - med/(2 diag), direction
  1 - med/pi, length and position 1 - med/diag, duration 1 - med.

Alignment modes:
* `exact` (default): the graph built as CSR arrays exactly as the original builds it node by
  node (same node numbering, same edge order, a 0-weight self loop on the last node) and solved
  by `scipy.sparse.csgraph.dijkstra(directed=True, indices=0)`. Where several paths cost the
  same, the result is the path scipy's Dijkstra picks, so it equals the original on every pair.
  This step runs on the host, one pair at a time (scipy's C code); the rest is batched jnp.
* `dp`: a jit-compiled dynamic programme over anti-diagonals (no graph library). Cost
  `D[i, j] = M[i, j] + min(D[i-1, j-1], D[i-1, j], D[i, j-1])`; on equal cost it prefers the
  diagonal predecessor, then (i-1, j) (ground truth advances), then (i, j-1). Equal to `exact`
  whenever the cheapest path is unique (or all cheapest paths give the same medians); on tied
  pairs the values can differ (see `scripts/bench_metrics.py` for the measured gap).

Everything runs in float64 (`_batch.float64_on_host`: scoped x64, on the host CPU device also on
GPU/TPU machines), because exact ties in path costs decide the alignment and the parity bar is 1e-6.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from ctsearcher_jax.metrics._batch import bucket, float64_on_host, pad_batch, pad_sequences
from ctsearcher_jax.metrics.stats import summary_stats

Alignment = Literal["exact", "dp"]
NAMES = ("vector", "direction", "length", "position", "duration")
PAD_FIXATION = (1.0, 1.0, 1.0, 1e-3)  # what the original evaluation pads with ([x, y, z, seconds])


def pad_like_original(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The padding `comprehensive_evaluation_by_subject` applies before MultiMatch.

    A scanpath with fewer than 3 fixations is padded to 3 with `(1, 1, 1, 1e-3 s)`; then a
    prediction shorter than the ground truth is padded with the same fixation up to the ground
    truth's length (a longer prediction is not truncated). Arrays are (n, 4) `[x, y, z, s]`.
    """
    pad = np.asarray(PAD_FIXATION, dtype=np.float64)[None, :]
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    if len(gt) < 3:
        gt = np.concatenate([gt, np.repeat(pad, 3 - len(gt), axis=0)])
    if len(pred) < 3:
        pred = np.concatenate([pred, np.repeat(pad, 3 - len(pred), axis=0)])
    if len(pred) < len(gt):
        pred = np.concatenate([pred, np.repeat(pad, len(gt) - len(pred), axis=0)])
    return gt, pred


# --------------------------------------------------------------------------------------------
# exact: scipy Dijkstra on the original's graph


def saccade_matrix(gt_xyz: np.ndarray, pred_xyz: np.ndarray) -> np.ndarray:
    """M (R, C) float64 of saccade-vector differences, same float operations as the original.

    gt_xyz: (n, D) fixation coordinates, pred_xyz: (m, D); R = n - 1, C = m - 1.
    """
    vg = np.diff(gt_xyz, axis=0)
    vp = np.diff(pred_xyz, axis=0)
    total = None
    for axis in range(vg.shape[1]):
        diff = np.abs(vg[:, axis][:, None] - vp[:, axis][None, :])
        total = diff ** 2 if total is None else total + diff ** 2
    return np.sqrt(total)


def grid_graph(m: np.ndarray) -> sp.csr_matrix:
    """The original's directed grid graph over M, built vectorised as CSR.

    Node (i, j) = i * C + j. Edges in the original's insertion order: interior nodes -> right,
    down, diagonal; last row -> right; last column -> down; last node -> itself with weight 0.
    Weights are M of the target cell. Rows are in node order and columns ascend within a row,
    so this is exactly the CSR that `coo_matrix((w, (rows, cols))).tocsr()` gives the original.
    """
    r, c = m.shape
    m = np.asarray(m, dtype=np.float64)
    # Rows 0..r-2: per node j < c-1 the targets (+1, +c, +c+1), then the last column's (+c).
    j = np.arange(c - 1, dtype=np.int64)
    pattern = np.concatenate([(j[:, None] + np.array([1, c, c + 1])).ravel(), [2 * c - 1]])
    upper_idx = (np.arange(r - 1, dtype=np.int64) * c)[:, None] + pattern[None, :]
    upper_w = np.concatenate(
        [np.stack([m[:-1, 1:], m[1:, :-1], m[1:, 1:]], axis=-1).reshape(r - 1, 3 * (c - 1)),
         m[1:, c - 1:]], axis=1)
    # Last row: right moves, then the 0-weight self loop of the last node.
    last = r * c - 1
    lower_idx = np.concatenate([(r - 1) * c + j + 1, [last]])
    lower_w = np.concatenate([m[r - 1, 1:], [0.0]])
    indices = np.concatenate([upper_idx.ravel(), lower_idx]).astype(np.int32)
    data = np.concatenate([upper_w.ravel(), lower_w])
    counts = np.concatenate([np.tile(np.concatenate([np.full(c - 1, 3), [1]]), r - 1),
                             np.ones(c, np.int64)])
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return sp.csr_matrix((data, indices, indptr), shape=(r * c, r * c))


def dijkstra_path(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cells (i, j) of the path scipy's Dijkstra returns on the original graph, start to end."""
    r, c = m.shape
    _, pred = csgraph.dijkstra(csgraph=grid_graph(m), directed=True, indices=0,
                               return_predecessors=True)
    end = r * c - 1
    nodes = [end]
    while pred[nodes[-1]] >= 0:
        nodes.append(int(pred[nodes[-1]]))
    nodes = np.asarray(nodes[::-1], dtype=np.int64)
    return nodes // c, nodes % c


# --------------------------------------------------------------------------------------------
# dp: jit DP over anti-diagonals


def _dp_path_one(vg: jax.Array, r: jax.Array, vp: jax.Array, c: jax.Array):
    """Cheapest path of one padded pair. vg (Rmax, D), vp (Cmax, D) saccade vectors; valid r, c.

    Returns (path_i, path_j, path_valid), each (Rmax + Cmax - 1,), in reverse order.
    """
    rmax, cmax = vg.shape[0], vp.shape[0]
    i = jnp.arange(rmax)
    inf = jnp.array(jnp.inf, dtype=vg.dtype)

    def cost(d):
        j = jnp.clip(d - i, 0, cmax - 1)
        diff = jnp.abs(vg - vp[j])
        total = diff[:, 0] ** 2
        for axis in range(1, vg.shape[1]):
            total = total + diff[:, axis] ** 2
        return jnp.sqrt(total)

    def step(carry, d):
        f1, f2 = carry  # costs on diagonals d-1, d-2 (indexed by row)
        j = d - i
        valid = (j >= 0) & (j < c) & (i < r)
        up = jnp.concatenate([jnp.full((1,), inf), f1[:-1]])     # D[i-1, j]
        left = f1                                                # D[i, j-1]
        diag = jnp.concatenate([jnp.full((1,), inf), f2[:-1]])   # D[i-1, j-1]
        best = jnp.minimum(jnp.minimum(diag, up), left)
        # Tie-break: diagonal, then up, then left (strict comparisons keep the earlier choice).
        choice = jnp.where(diag <= jnp.minimum(up, left), 0, jnp.where(up <= left, 1, 2))
        value = jnp.where(d == 0, 0.0, best + cost(d))
        value = jnp.where(valid, value, inf)
        return (value, f1), choice.astype(jnp.int8)

    init = (jnp.full((rmax,), inf), jnp.full((rmax,), inf))
    _, choices = jax.lax.scan(step, init, jnp.arange(rmax + cmax - 1))  # (Rmax+Cmax-1, Rmax)

    def back(state, _):
        bi, bj, done = state
        ch = choices[bi + bj, bi]
        at_start = (bi == 0) & (bj == 0)
        ni = jnp.where(ch == 2, bi, bi - 1)
        nj = jnp.where(ch == 1, bj, bj - 1)
        out = (bi, bj, ~done)
        new_done = done | at_start
        return (jnp.where(new_done, bi, ni), jnp.where(new_done, bj, nj), new_done), out

    _, (pi, pj, pv) = jax.lax.scan(back, (r - 1, c - 1, jnp.array(False)), None,
                                   length=rmax + cmax - 1)
    return pi, pj, pv


_dp_path_batch = jax.jit(jax.vmap(_dp_path_one))


# --------------------------------------------------------------------------------------------
# statistics along a path (shared by both modes)


def _masked_median(values: jax.Array, valid: jax.Array) -> jax.Array:
    """np.median of values[valid] (NaN if any valid value is NaN or none is valid)."""
    k = valid.sum()
    v = jnp.sort(jnp.where(valid, values, jnp.inf))
    lo = v[jnp.clip((k - 1) // 2, 0, v.shape[0] - 1)]
    hi = v[jnp.clip(k // 2, 0, v.shape[0] - 1)]
    med = (lo + hi) / 2
    bad = jnp.any(valid & jnp.isnan(values)) | (k == 0)
    return jnp.where(bad, jnp.nan, med)


def _fold(a: jax.Array) -> jax.Array:
    """Map an angle in (-pi, pi] to [0, 2pi) in the original's floating-point order."""
    return jnp.where(a < 0, math.pi + (math.pi + a), a)


def _stats_one(fg: jax.Array, fp: jax.Array, pi: jax.Array, pj: jax.Array, pv: jax.Array) -> jax.Array:
    """Unnormalised medians (5,) along a path. fg (Lg, D+1), fp (Lp, D+1) fixations + duration."""
    ndim = fg.shape[1] - 1
    vg = fg[1:, :ndim] - fg[:-1, :ndim]
    vp = fp[1:, :ndim] - fp[:-1, :ndim]
    a, b = vg[pi], vp[pj]

    def norm(v):
        total = v[..., 0] ** 2
        for axis in range(1, ndim):
            total = total + v[..., axis] ** 2
        return jnp.sqrt(total)

    vector = norm(a - b)
    theta = jnp.abs(_fold(jnp.arctan2(a[:, 1], a[:, 0])) - _fold(jnp.arctan2(b[:, 1], b[:, 0])))
    direction = jnp.where(theta > math.pi, 2 * math.pi - theta, theta)
    if ndim == 3:
        phi_a = jnp.arctan2(jnp.sqrt(a[:, 0] ** 2 + a[:, 1] ** 2), a[:, 2])
        phi_b = jnp.arctan2(jnp.sqrt(b[:, 0] ** 2 + b[:, 1] ** 2), b[:, 2])
        phi = jnp.abs(_fold(phi_a) - _fold(phi_b))
        phi = jnp.where(phi > math.pi, 2 * math.pi - phi, phi)
        direction = direction + phi
        direction = jnp.where(direction > math.pi, 2 * math.pi - direction, direction)
    length = jnp.abs(norm(a) - norm(b))
    position = norm(fg[pi, :ndim] - fp[pj, :ndim])
    dg, dp_ = fg[pi, ndim], fp[pj, ndim]
    duration = jnp.abs(dg - dp_) / jnp.abs(jnp.maximum(dg, dp_))
    return jnp.stack([_masked_median(x, pv) for x in (vector, direction, length, position, duration)])


_stats_batch = jax.jit(jax.vmap(_stats_one))


def normalise(unnormalised: np.ndarray, screen: Sequence[float]) -> np.ndarray:
    """(..., 5) medians -> similarities, the original's formulas (float64)."""
    diag = math.sqrt(sum(s ** 2 for s in screen))
    u = np.asarray(unnormalised, dtype=np.float64)
    return np.stack([1 - u[..., 0] / (2 * diag), 1 - u[..., 1] / math.pi, 1 - u[..., 2] / diag,
                     1 - u[..., 3] / diag, 1 - u[..., 4]], axis=-1)


# --------------------------------------------------------------------------------------------
# public API


def multimatch_batch(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray],
                     alignment: Alignment = "exact", screen: Sequence[float] = (512, 512, 512),
                     return_paths: bool = False, chunk: int = 32):
    """MultiMatch of many (gt, pred) pairs, no padding applied (see `pad_like_original`).

    gt, pred: sequences of (n_i, D+1) float64 arrays, rows `[x, y, (z,) duration_s]`, D = 3 for
    3D (screen of 3 sizes) or 2 for 2D (screen of 2 sizes). Returns (B, 5) float64 similarities
    [vector, direction, length, position, duration]; rows with a scanpath shorter than 3
    fixations are NaN (as the original). With `return_paths`, also the list of (i, j) paths.
    chunk: pairs per kernel call (bounds memory); results do not depend on it.
    """
    if len(gt) != len(pred):
        raise ValueError(f"multimatch_batch: {len(gt)} ground-truth vs {len(pred)} predicted scanpaths")
    ndim = len(screen)
    if ndim not in (2, 3):
        raise ValueError(f"multimatch_batch: screen must have 2 or 3 sizes, got {screen}")
    if alignment not in ("exact", "dp"):
        raise ValueError(f"unknown MultiMatch alignment {alignment!r}; use 'exact' or 'dp'")
    gt = [np.asarray(g, dtype=np.float64).reshape(-1, ndim + 1) for g in gt]
    pred = [np.asarray(p, dtype=np.float64).reshape(-1, ndim + 1) for p in pred]
    n = len(gt)
    out = np.full((n, 5), np.nan)
    ok = [b for b in range(n) if len(gt[b]) >= 3 and len(pred[b]) >= 3]
    paths: list = [None] * n
    if not ok:
        return (out, paths) if return_paths else out
    # Chunks sorted by size bound the memory of the dp choice tables and share little padding.
    order = sorted(ok, key=lambda b: max(len(gt[b]), len(pred[b])))
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        med, pi, pj, pv = _align_and_measure(gt, pred, part, alignment, ndim)
        out[part] = normalise(med[:len(part)], screen)
        if return_paths:
            for row, b in enumerate(part):
                keep = pv[row]
                paths[b] = (pi[row][keep], pj[row][keep])
    return (out, paths) if return_paths else out


def _align_and_measure(gt, pred, part, alignment, ndim):
    """Medians (B, 5) and paths for the pairs `part` (all >= 3 fixations), one padded batch."""
    nb = pad_batch(len(part))
    sel = part + [part[0]] * (nb - len(part))  # batch padding repeats a real pair (discarded)
    fg, lg = pad_sequences([gt[b] for b in sel], bucket(max(len(gt[b]) for b in sel)))
    fp, lp = pad_sequences([pred[b] for b in sel], bucket(max(len(pred[b]) for b in sel)))
    pmax = fg.shape[1] + fp.shape[1] - 3
    with float64_on_host():
        if alignment == "dp":
            vg = np.diff(fg[:, :, :ndim], axis=1)
            vp = np.diff(fp[:, :, :ndim], axis=1)
            pi, pj, pv = _dp_path_batch(jnp.asarray(vg), jnp.asarray(lg - 1),
                                        jnp.asarray(vp), jnp.asarray(lp - 1))
            pi, pj, pv = np.asarray(pi), np.asarray(pj), np.asarray(pv)
        else:
            pi = np.zeros((nb, pmax), np.int64)
            pj = np.zeros((nb, pmax), np.int64)
            pv = np.zeros((nb, pmax), bool)
            for row, b in enumerate(part):
                ci, cj = dijkstra_path(saccade_matrix(gt[b][:, :ndim], pred[b][:, :ndim]))
                pi[row, :len(ci)], pj[row, :len(cj)], pv[row, :len(ci)] = ci, cj, True
            pi[len(part):], pj[len(part):], pv[len(part):] = pi[0], pj[0], pv[0]
        med = np.asarray(_stats_batch(jnp.asarray(fg), jnp.asarray(fp), jnp.asarray(pi),
                                      jnp.asarray(pj), jnp.asarray(pv)))
    return med, pi, pj, pv


def multimatch(gt: np.ndarray, pred: np.ndarray, alignment: Alignment = "exact",
               screen: Sequence[float] = (512, 512, 512)) -> np.ndarray:
    """MultiMatch of one pair (see `multimatch_batch`): (5,) float64."""
    return multimatch_batch([gt], [pred], alignment, screen)[0]


def score_pairs(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray], *,
                multimatch_alignment: Alignment = "exact",
                multimatch_padding: bool = True) -> dict[str, np.ndarray]:
    """The `multimatch` family (metrics/registry.py): {multimatch_<name>: (K,) float64}.

    multimatch_padding: apply the original evaluation's padding (`pad_like_original`) first.
    """
    if multimatch_padding:
        padded = [pad_like_original(g, p) for g, p in zip(gt, pred)]
        gt, pred = [x[0] for x in padded], [x[1] for x in padded]
    res = multimatch_batch(list(gt), list(pred), multimatch_alignment)
    return {f"multimatch_{name}": res[:, k] for k, name in enumerate(NAMES)}


def aggregate_like_original(scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Summary of the family as the original evaluation: rows with any NaN among the five are
    dropped (`is_eliminating_nan`); `multimatch_mean` = mean of the five means (std NaN)."""
    names = [f"multimatch_{n}" for n in NAMES]
    if not all(n in scores for n in names):
        return {n: summary_stats(v) for n, v in scores.items()}
    rows = np.stack([scores[n] for n in names], axis=1)
    rows = rows[~np.isnan(rows.sum(axis=1))]
    out = {n: summary_stats(rows[:, k]) for k, n in enumerate(names)}
    out["multimatch_mean"] = {"mean": float(np.mean([out[n]["mean"] for n in names])),
                              "std": math.nan, "n": int(rows.shape[0])}
    return out
