"""The masked whole-matrix Needleman-Wunsch kernel: any gap value (jnp, float64).

With gap != 0, F is not monotone and max(F) is a maximum over the whole matrix, so the gap-0
kernels (the stripe kernel, the native kernel) do not apply; this one sweeps whole anti-diagonals
of each pair, masked to its own lengths, `chunk` pairs per vmapped call. `kernel.choose_kernel`
sends every gap != 0 here.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ctsearcher_jax.metrics._batch import bucket, float64_on_host, pad_batch, pad_sequences
from ctsearcher_jax.metrics.scanmatch.symbols import ScanMatchParams, substitution_matrix


def nw_max_one(a: jax.Array, la: jax.Array, b: jax.Array, lb: jax.Array,
               sub_flat: jax.Array, k: int, gap: jax.Array) -> jax.Array:
    """max(F) of the Needleman-Wunsch matrix of one padded pair, over anti-diagonals.

    a: (La,) int32 symbols (valid up to la); b: (Lb,) int32 (valid up to lb);
    sub_flat: (K*K,) float64 substitution matrix, row-major. Returns () float64.
    """
    rows = a.shape[0] + 1
    i = jnp.arange(rows)
    a_prev = jnp.concatenate([a[:1], a])  # a_prev[i] = a[i-1] for i >= 1
    row_base = a_prev * k
    neg = jnp.array(-jnp.inf, dtype=sub_flat.dtype)

    def step(carry, d):
        f1, f2, best = carry  # diagonals d-1 and d-2, indexed by row i
        j = d - i
        valid = (j >= 0) & (j <= lb) & (i <= la)
        interior = (i >= 1) & (j >= 1)
        bj = b[jnp.clip(j - 1, 0, b.shape[0] - 1)]
        s = sub_flat[row_base + bj]
        up = jnp.concatenate([f1[:1], f1[:-1]])     # F[i-1, j]  (diagonal d-1, row i-1)
        diag = jnp.concatenate([f2[:1], f2[:-1]])   # F[i-1, j-1](diagonal d-2, row i-1)
        inner = jnp.maximum(jnp.maximum(diag + s, up + gap), f1 + gap)
        border = gap * (i + j + 1).astype(sub_flat.dtype)
        f = jnp.where(interior, inner, border)
        f = jnp.where(valid, f, neg)
        best = jnp.maximum(best, jnp.max(f))
        return (f, f1, best), None

    def body(d, carry):
        return step(carry, d)[0]

    init = (jnp.full((rows,), neg), jnp.full((rows,), neg), neg)
    # Dynamic trip count: a pair stops at its own last diagonal, whatever the padded lengths.
    _, _, best = jax.lax.fori_loop(0, la + lb + 1, body, init)
    return best



@functools.partial(jax.jit, static_argnames=("k",))
def _nw_max_batch(a, la, b, lb, sub_flat, gap, k):
    return jax.vmap(nw_max_one, in_axes=(0, 0, 0, 0, None, None, None))(a, la, b, lb, sub_flat, k, gap)


def masked_max_batch(seq_a: Sequence[np.ndarray], seq_b: Sequence[np.ndarray],
                     params: ScanMatchParams, order: np.ndarray, chunk: int) -> np.ndarray:
    """max(F) of each symbol-sequence pair: (B,) float64, `chunk` pairs per call taken in
    `order` (pairs of similar size together), each call padded to bucketed shapes."""
    out = np.zeros((len(seq_a),), np.float64)
    with float64_on_host():
        sub_j = jnp.asarray(substitution_matrix(params.bins, params.threshold).ravel())
        gap = jnp.float64(params.gap)
        for start in range(0, len(seq_a), chunk):
            idx = order[start:start + chunk]
            nb = pad_batch(len(idx))
            ca = [seq_a[i] for i in idx] + [np.zeros(0, np.int32)] * (nb - len(idx))
            cb = [seq_b[i] for i in idx] + [np.zeros(0, np.int32)] * (nb - len(idx))
            a, la = pad_sequences(ca, bucket(max(len(s) for s in ca)), dtype=np.int32)
            b, lb = pad_sequences(cb, bucket(max(len(s) for s in cb)), dtype=np.int32)
            res = _nw_max_batch(jnp.asarray(a), jnp.asarray(la), jnp.asarray(b), jnp.asarray(lb),
                                sub_j, gap, k=params.num_symbols)
            out[idx] = np.asarray(res, dtype=np.float64)[:len(idx)]
    return out
