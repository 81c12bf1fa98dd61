"""ScanMatch as a fixed-shape, jit-able, vmappable function of padded scanpaths (the RL reward).

`metrics/scanmatch.py` is the evaluation metric: exact, float64, one pair per host thread, with
symbol sequences of any length built on the host. A training step needs the same score inside
`jax.jit` on padded device arrays. This module computes it with the same parameters and the same
arithmetic (symbols, 25 ms repeats, Needleman-Wunsch with gap 0, score normalisation), in the
dtype of its inputs (float32 in training; float64 under `jax.experimental.enable_x64` reproduces
the metric), for scanpaths padded to a fixed number of fixations.

Fixed shapes. Without durations a scanpath of at most L fixations is at most L symbols. With
durations each fixation becomes round(int(ms) / temp_bin) repeats, which is unbounded, so the
durations are clipped at `duration_cap_s` first: the expanded sequence then has at most

    max_expanded = L * round(1000 * duration_cap_s / temp_bin)      (L = padded fixations)

symbols (40 per fixation for the default 1 s cap and 25 ms bins). Scores equal the metric's
exactly for scanpaths whose fixations are all shorter than the cap (up to the float32 rounding
of `seconds * 1000` at integer milliseconds and of the DP sums: `tests/metrics` measures it on the
reference pairs); longer fixations count as `duration_cap_s`.

Needleman-Wunsch with gap 0 row by row: F[i, j] = max(F[i-1, j-1] + S[a_i, b_j], F[i-1, j],
F[i, j-1]) with zero borders, i.e. row i is the running maximum (`lax.cummax`) over j of
max(F[i-1, j-1] + S, F[i-1, j]): one vector operation of the padded width per row, rows
looped up to the pair's own length. F is monotone, so max(F) = F[la, lb]; padding columns lie
right of lb and never reach it. Cost per pair: rows x padded columns cells.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ctsearcher_jax.metrics.scanmatch import (WITH_DURATION, WITHOUT_DURATION, ScanMatchParams,
                                               _axis_tables, substitution_matrix)

DEFAULT_DURATION_CAP_S = 1.0


def max_expanded_length(max_fixations: int, duration_cap_s: float,
                        params: ScanMatchParams = WITH_DURATION) -> int:
    """Symbols of a scanpath of `max_fixations` fixations each at most `duration_cap_s` long."""
    if params.temp_bin == 0:
        return int(max_fixations)
    per_fixation = max(1, int(np.round(math.floor(1000.0 * duration_cap_s) / params.temp_bin)))
    return int(max_fixations) * per_fixation


def symbols(coords: jax.Array, durations: jax.Array, length: jax.Array, *,
            params: ScanMatchParams, max_symbols: int,
            duration_cap_s: float = DEFAULT_DURATION_CAP_S) -> tuple[jax.Array, jax.Array]:
    """Symbol sequence of one padded scanpath: ((max_symbols,) int32, () int32 length).

    coords: (L, 3) [x, y, z] gaze frame; durations: (L,) seconds; length: () fixations used.
    Entries past the returned length are 0 (never read by `alignment_score`).
    """
    n = coords.shape[0]
    dtype = coords.dtype
    d = coords - jnp.asarray(params.offset, dtype)
    d = jnp.maximum(d, 0)
    d = jnp.minimum(d, jnp.asarray(params.res, dtype) - 1)
    di = jnp.trunc(d).astype(jnp.int32)
    tx, ty, tz = (jnp.asarray(t, jnp.int32) for t in _axis_tables(params.res, params.bins))
    xb, yb, zb = tx[di[:, 0]], ty[di[:, 1]], tz[di[:, 2]]
    sym = yb * (params.bins[0] * params.bins[2]) + xb * params.bins[2] + zb
    valid = jnp.arange(n) < length
    if params.temp_bin == 0:
        out = jnp.zeros((max_symbols,), jnp.int32).at[:n].set(jnp.where(valid, sym, 0)[:max_symbols])
        return out, jnp.minimum(length, max_symbols).astype(jnp.int32)
    ms = jnp.maximum(durations.astype(dtype) * 1000, 0)
    ms = jnp.minimum(ms, jnp.asarray(1000.0 * duration_cap_s, dtype))
    repeats = jnp.round(jnp.trunc(ms) / params.temp_bin).astype(jnp.int32)  # half to even
    repeats = jnp.where(valid, repeats, 0)
    ends = jnp.cumsum(repeats)
    total = jnp.minimum(ends[-1], max_symbols)
    position = jnp.arange(max_symbols)
    source = jnp.searchsorted(ends, position, side="right")  # fixation of each expanded symbol
    out = jnp.where(position < total, sym[jnp.minimum(source, n - 1)], 0)
    return out.astype(jnp.int32), total.astype(jnp.int32)


def alignment_score(a: jax.Array, la: jax.Array, b: jax.Array, lb: jax.Array, *,
                    params: ScanMatchParams, dtype=jnp.float32) -> jax.Array:
    """ScanMatch score of two symbol sequences (gap 0): () in `dtype`.

    NaN when both are empty (as the metric), 0 when one is.
    """
    if params.gap != 0:
        raise ValueError("the jit ScanMatch supports gap 0 only (the evaluation's setting)")
    sub = jnp.asarray(substitution_matrix(params.bins, params.threshold), dtype)
    nb = b.shape[0]
    zero = jnp.zeros((1,), dtype)

    def row(i, f):
        s = sub[a[i]][b]  # S[a_i, b_j] for every column j (no (K, Nb) table per pair)
        diag = jnp.concatenate([zero, f[:-1]])  # F[i-1, j-1] for column j+1 ... stored at j
        return jax.lax.cummax(jnp.maximum(diag + s, f), axis=0)

    # f[j] holds F[i, j + 1]; the border F[i, 0] = 0 is the `zero` prepended above.
    f = jax.lax.fori_loop(0, la, row, jnp.zeros((nb,), dtype))
    best = jnp.where(lb > 0, f[jnp.maximum(lb - 1, 0)], 0).astype(dtype)
    best = jnp.where(la > 0, best, 0)
    scale = jnp.asarray(np.max(substitution_matrix(params.bins, params.threshold)), dtype) * \
        jnp.maximum(la, lb).astype(dtype)
    return jnp.where(scale > 0, best / jnp.where(scale > 0, scale, 1), jnp.nan)


def scanmatch_padded(gt_coords, gt_durations, gt_length, coords, durations, length, *,
                     params: ScanMatchParams = WITH_DURATION,
                     duration_cap_s: float = DEFAULT_DURATION_CAP_S) -> jax.Array:
    """ScanMatch of one (ground truth, prediction) pair of padded scanpaths (see module doc).

    gt_coords (Lg, 3), gt_durations (Lg,), gt_length (); coords (Lp, 3), durations (Lp,),
    length (). Returns () in the dtype of `coords`. vmap it for batches.
    """
    dtype = coords.dtype
    sa, la = symbols(gt_coords.astype(dtype), gt_durations, gt_length, params=params,
                     max_symbols=max_expanded_length(gt_coords.shape[0], duration_cap_s, params),
                     duration_cap_s=duration_cap_s)
    sb, lb = symbols(coords, durations, length, params=params,
                     max_symbols=max_expanded_length(coords.shape[0], duration_cap_s, params),
                     duration_cap_s=duration_cap_s)
    return alignment_score(sa, la, sb, lb, params=params, dtype=dtype)


def hmean_reward(gt_coords, gt_durations, gt_length, coords, durations, length, *,
                 duration_cap_s: float = DEFAULT_DURATION_CAP_S,
                 with_duration: ScanMatchParams = WITH_DURATION,
                 without_duration: ScanMatchParams = WITHOUT_DURATION) -> jax.Array:
    """Harmonic mean of ScanMatch with and without duration of one pair; 0 when either is 0/NaN."""
    args = (gt_coords, gt_durations, gt_length, coords, durations, length)
    a = scanmatch_padded(*args, params=with_duration, duration_cap_s=duration_cap_s)
    b = scanmatch_padded(*args, params=without_duration, duration_cap_s=duration_cap_s)
    a, b = jnp.nan_to_num(a), jnp.nan_to_num(b)  # both empty: NaN in the metric, 0 here
    total = a + b
    return jnp.where(total > 0, 2 * a * b / jnp.where(total > 0, total, 1), 0)
