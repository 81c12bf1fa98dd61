"""The jnp gap-0 kernel: `stripe_kernel` (stripes of rows swept by anti-diagonals) and
`stripe_best`, which lays a batch of padded symbol sequences out for it.

With gap 0 F is monotone, so max(F) = F[la, lb], the quantity this kernel returns. It runs
wherever JAX runs (CPU, GPU, TPU, sharded over devices inside a jit) and is bit-identical to the
written-out DP in float64 (tested); the native C++ kernel (`native.py`) gives the same numbers on
CPU devices. Which of the two runs is `kernel.choose_kernel`'s decision, not this module's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ctsearcher_jax.metrics.scanmatch.symbols import ScanMatchParams, score_constants, symbol_bins

# Null coordinates (bin units) that pad the row and the column sequences: farther from every
# real bin, and from each other, than any two real bins, so their substitution score is negative
# (see `stripe_kernel`). Squared distances stay within int32.
NULL_ROW, NULL_COL = 1 << 12, -(1 << 12)


def stripe_kernel(ac: jax.Array, la: jax.Array, bc: jax.Array, lb: jax.Array, consts: jax.Array,
                  width: int) -> jax.Array:
    """F[la, lb] of a batch of pairs with gap 0 (F is then monotone, so this is max(F)): (*P,).

    ac: (*P, 3, N) int32 bin coordinates (y, x, z) of the row sequences, right-aligned (each
    pair's la rows last, `NULL_ROW` before them), N >= max(la) a multiple of `width`; bc:
    (*P, 3, M) of the column sequences, left-aligned, `NULL_COL` after them, M >= max(lb) +
    width + 2. la, lb: (*P,) int32; *P is () for one pair (the
    CPU path: 1-D vectors, twice as fast there as a batch of one) or (P,). consts: (2,) [max_d,
    max_d - threshold] in the DP's dtype (float64 for the metric, float32 for the RL reward).

    Stripes of `width` rows, each swept by anti-diagonals with the previous stripe's last row as
    its top border: no empty corners of a whole-matrix sweep, and a cache-sized working set.
    No masks: a null symbol scores below 0 against everything, so padding leaves F[la, lb]
    unchanged (extra null rows copy the top border down, extra null columns lie right of lb).
    That is also why the pairs of a batch share one loop counter (diagonals up to width +
    max(lb) - 1): every slice starts at the same offset for all pairs, a contiguous copy rather
    than the per-pair gather a vmapped loop would make. Rows are right-aligned so that every
    pair ends on the last stripe's last row (where F[la, lb] is read) and the sweep starts at
    the first real row of the longest pair: leading null rows keep F at 0, so stripes and
    diagonals that meet only them are skipped exactly. With one stripe of the whole height
    (accelerators) that sweeps max(la) + max(lb) diagonals, not N + max(lb).
    Internally the sequence axis comes first and the pairs last, (width, *P) per diagonal: the
    one-row shifts of the recurrence then move whole rows of P lanes, and on CPU a batch of 16
    or 32 pairs fills the SIMD registers (1.4x faster per cell than pairs first; measured).
    Scores come from bin coordinates, `|sqrt(d2) - max_d| - (max_d - threshold)`, the table's
    own float operations (bit-identical; tested), faster than a lookup on CPU.
    """
    batch, nb = ac.shape[:-2], bc.shape[-1]
    ac, bc = (jnp.moveaxis(x, (-2, -1), (0, 1)) for x in (ac, bc))  # (3, N, *P), (3, M, *P)
    null = jnp.full((3, width + 4, *batch), NULL_COL, jnp.int32)
    # Columns reversed: on diagonal e, stripe row t meets column e - t, i.e. brev[nb-1-e+t].
    brev = jnp.concatenate([bc[:, ::-1], null], axis=1)
    by, bx, bz = brev[0], brev[1], brev[2]
    max_d, offset = consts[0], consts[1]
    pairs_of_diagonals = (width + jnp.max(lb)) // 2  # width + lb - 1 diagonals, two per step
    n_rows = ac.shape[1]
    first_row = n_rows - jnp.max(la)  # of the longest pair; all rows above are null
    first_stripe = first_row // width

    def stripe(s, top):
        a_s = jax.lax.dynamic_slice_in_dim(ac, s * width, width, axis=1)
        ay, ax, az = a_s[0], a_s[1], a_s[2]

        def diagonal(e, f1, f2, bottom):
            # f1, f2: diagonals e-1 and e-2, (width, *P) by stripe row.
            start = nb - 1 - e
            dy = ay - jax.lax.dynamic_slice_in_dim(by, start, width, axis=0)
            dx = ax - jax.lax.dynamic_slice_in_dim(bx, start, width, axis=0)
            dz = az - jax.lax.dynamic_slice_in_dim(bz, start, width, axis=0)
            root = jnp.sqrt((dx * dx + dy * dy + dz * dz).astype(consts.dtype))
            # |D - max_d| == max_d - D bit for bit for real bins (D <= max_d; rounding is
            # symmetric); for null symbols (D > max_d) this is very negative, i.e. "skip".
            score = (max_d - root) - offset
            border = jax.lax.dynamic_slice_in_dim(top, e, 2, axis=0)  # F[top, e], F[top, e+1]
            up = jnp.concatenate([border[1:], f1[:-1]], axis=0)     # F[i-1, j]
            diag = jnp.concatenate([border[:1], f2[:-1]], axis=0)   # F[i-1, j-1]
            f = jnp.maximum(jnp.maximum(diag + score, up), f1)
            # The stripe's last row reaches column e - width + 2 on this diagonal.
            col = jnp.clip(e - width + 2, 0, bottom.shape[0] - 1).astype(jnp.int32)
            return f, jax.lax.dynamic_update_slice_in_dim(bottom, f[width - 1:], col, 0)

        def two_diagonals(k, carry):
            # Two diagonals per step, written back into the slots they came from: a swap of
            # buffers in the loop carry makes XLA copy them; also half the loop overhead.
            (f_even, f_odd), bottom = carry
            f_even, bottom = diagonal(2 * k, f_odd, f_even, bottom)
            f_odd, bottom = diagonal(2 * k + 1, f_even, f_odd, bottom)
            return (f_even, f_odd), bottom

        # Diagonals before the longest pair's first row meet only null rows (F = 0) and columns
        # left of 0 (F = 0): start there with zero diagonals (an even one: two per step).
        skip = jnp.maximum(first_row - s * width, 0) // 2
        zeros = jnp.zeros((width, *batch), consts.dtype)
        _, bottom = jax.lax.fori_loop(skip, pairs_of_diagonals, two_diagonals,
                                      ((zeros, zeros), jnp.zeros_like(top)))
        return bottom.at[0].set(0.0)

    top = jax.lax.fori_loop(first_stripe, n_rows // width, stripe,
                            jnp.zeros((nb + width + 4, *batch), consts.dtype))
    return jnp.take_along_axis(top, jnp.asarray(lb, jnp.int32)[None], axis=0)[0]


def bin_coordinates(sym: jax.Array, length: jax.Array, size: int, null: int,
                    params: ScanMatchParams, right: bool = False) -> jax.Array:
    """(P, 3, size) int32 bin coordinates (y, x, z) of symbol rows (P, M) of `length` symbols,
    `null` after them (before them when `right`: the row sequences of `stripe_kernel`)."""
    sym = jnp.pad(sym, ((0, 0), (0, size - sym.shape[1])))
    position = jnp.arange(size)[None, :]
    if right:  # position q holds symbol q - (size - length)
        source = position - (size - length[:, None])
        sym = jnp.take_along_axis(sym, jnp.maximum(source, 0), axis=1)
        valid = source >= 0
    else:
        valid = position < length[:, None]
    coords = jnp.stack(symbol_bins(sym, params.bins), axis=1)
    return jnp.where(valid[:, None, :], coords, null).astype(jnp.int32)


def stripe_best(a: jax.Array, la: jax.Array, b: jax.Array, lb: jax.Array, *,
                params: ScanMatchParams, dtype, width: int | None = None,
                group_size: int | None = None, consts: jax.Array | None = None) -> jax.Array:
    """F[la, lb] of P padded pairs by `stripe_kernel`: (P,) in `dtype`.

    a: (P, N) int32 symbols, the first la of each row used; la: (P,); b: (P, M); lb: (P,).
    The shorter sequence of each pair goes on the rows (the score is symmetric): fewer stripes.
    width: rows per stripe (None: one stripe of the whole height). One pair (P = 1) runs as 1-D
    vectors, twice as fast on CPU as a batch of one. The pairs of one kernel call share its loop
    bounds (the longest pair's): group_size None runs all pairs in one call (keep it when the
    batch is sharded over devices: a sort would gather it); group_size G sorts the pairs by
    length and cuts them into calls of G (the last filled with empty pairs), each sweeping only
    its own longest pair. The scores depend on neither width nor group_size.
    consts: `stripe_kernel`'s [max_d, max_d - threshold] (None: from params, as constants of the
    compiled program, which XLA may fold into the score arithmetic: float64 results may then
    move by an ulp. Passed as an argument, they keep it bit-identical to the written-out DP.)
    """
    size = max(a.shape[1], b.shape[1])
    a, b = (jnp.pad(x, ((0, 0), (0, size - x.shape[1]))) for x in (a, b))
    swap = lb < la
    rows, row_len = jnp.where(swap[:, None], b, a), jnp.where(swap, lb, la)
    cols, col_len = jnp.where(swap[:, None], a, b), jnp.where(swap, la, lb)
    width = size if width is None else width
    width = max(1, min(int(width), size))
    ac = bin_coordinates(rows, row_len, -(-size // width) * width, NULL_ROW, params, right=True)
    bc = bin_coordinates(cols, col_len, size + width + 2, NULL_COL, params)
    if consts is None:
        consts = score_constants(params.bins, params.threshold)
    consts = jnp.asarray(consts, dtype)
    n = ac.shape[0]
    if n == 1:
        return stripe_kernel(ac[0], row_len[0], bc[0], col_len[0], consts, width)[None]
    if group_size is None or int(group_size) >= n:
        return stripe_kernel(ac, row_len, bc, col_len, consts, width)
    g = max(1, int(group_size))
    calls = -(-n // g)
    # Empty pairs (length 0: F = 0) fill the last call; sorted first, so they join the
    # shortest pairs' call and never raise a call's loop bounds.
    order = jnp.argsort(jnp.pad(row_len * (size + 1) + col_len, (0, calls * g - n)))
    pad = lambda x: jnp.pad(x, ((0, calls * g - n),) + ((0, 0),) * (x.ndim - 1))  # noqa: E731
    ac, row_len, bc, col_len = (pad(x)[order].reshape(calls, g, *x.shape[1:])
                                for x in (ac, row_len, bc, col_len))
    sorted_best = jnp.concatenate([stripe_kernel(ac[i], row_len[i], bc[i], col_len[i],
                                                 consts, width) for i in range(calls)])
    return jnp.zeros((calls * g,), dtype).at[order].set(sorted_best)[:n]
