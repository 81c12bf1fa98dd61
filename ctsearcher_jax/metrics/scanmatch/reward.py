"""ScanMatch as a fixed-shape, jit-able function of batches of padded scanpaths (the RL reward).

`metric.py` is the evaluation metric: exact, float64, on symbol sequences of any length built
on the host. A training step needs the same score inside `jax.jit` on padded device arrays. This
module computes it with the same parameters and the same arithmetic (symbols, 25 ms repeats,
Needleman-Wunsch with gap 0, score normalisation), in the dtype of its inputs (float32 in
training; float64 under `jax.experimental.enable_x64` reproduces the metric), for scanpaths
padded to a fixed number of fixations.

Fixed shapes. Without durations a scanpath of at most L fixations is at most L symbols. With
durations each fixation becomes round(int(ms) / temp_bin) repeats, which is unbounded, so the
durations are clipped at `duration_cap_s` first: the expanded sequence then has at most

    max_expanded = L * round(1000 * duration_cap_s / temp_bin)      (L = padded fixations)

symbols (40 per fixation for the default 1 s cap and 25 ms bins). Scores equal the metric's
exactly for scanpaths whose fixations are all shorter than the cap (up to the float32 rounding
of `seconds * 1000` at integer milliseconds and of the DP sums: `tests/metrics` measures it on the
reference pairs); longer fixations count as `duration_cap_s`.

The DP is `alignment.gap0_alignment`, the evaluation's own entry point, on the whole batch of
pairs in one call, with the kernel `kernel.choose_kernel` picks for where the step runs (`devices`:
the step's shardings or mesh; `train/finetune.py` passes them). On one CPU device it is the native
kernel (C++ inside the jitted step, rows swept over the other sequence's runs of repeated symbols,
pairs over host threads). Elsewhere (accelerators, a batch sharded over devices, no C++ compiler)
it is the jnp stripe kernel (stripes of rows swept by anti-diagonals, scores from bin
coordinates, null padding instead of masks), each step slicing every pair at the same offset
under one loop counter; the pairs of one call sweep the longest pair's rows x columns, so on one
CPU device they are sorted by length into calls of `CPU_GROUP_SIZE` (`default_group_size`).
For the fine-tuning bench (80 pairs of ~580 x ~590 symbols, ~27 M cells) the reward takes
~10 ms on the 2-core CPU with the native kernel, ~36 ms with the sorted stripe kernel and ~1 s
with the row-by-row DP of the first version (docs/benchmarks.md, Learning).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ctsearcher_jax.metrics.scanmatch.alignment import gap0_alignment
from ctsearcher_jax.metrics.scanmatch.kernel import choose_kernel
from ctsearcher_jax.metrics.scanmatch.symbols import (
    WITH_DURATION,
    WITHOUT_DURATION,
    ScanMatchParams,
    axis_tables,
    substitution_matrix,
)

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
    Entries past the returned length are 0 (replaced by null symbols before the DP).
    """
    n = coords.shape[0]
    dtype = coords.dtype
    d = coords - jnp.asarray(params.offset, dtype)
    d = jnp.maximum(d, 0)
    d = jnp.minimum(d, jnp.asarray(params.res, dtype) - 1)
    di = jnp.trunc(d).astype(jnp.int32)
    tx, ty, tz = (jnp.asarray(t, jnp.int32) for t in axis_tables(params.res, params.bins))
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
    # Fixation of each expanded symbol: +1 at every fixation's end, then a running sum (a
    # scatter of L and a cumsum of max_symbols; a binary search per symbol was 4x slower).
    starts = jnp.zeros((max_symbols + 1,), jnp.int32).at[jnp.minimum(ends, max_symbols)].add(1)
    source = jnp.cumsum(starts[:-1])
    out = jnp.where(position < total, sym[jnp.minimum(source, n - 1)], 0)
    return out.astype(jnp.int32), total.astype(jnp.int32)


# Rows per stripe on CPU: the fastest of 32-128 for the bench's 80 pairs of ~600 x ~1000 symbols
# (measured on the 2-core CPU). Accelerators take one stripe of the whole height, as evaluation
# does (`metric.default_stripe`): fewer, longer loop steps.
CPU_STRIPE_WIDTH = 64
# Pairs per kernel call on one CPU device (`group_size`): 16 float32 lanes fill an AVX-512
# register (two AVX2 ones), and 16 pairs of similar length waste little of the shared loop bounds.
CPU_GROUP_SIZE = 16


def default_group_size(devices=None) -> int | None:
    """`group_size` for a training step on `devices` (the step's shardings, mesh or devices, as
    `choose_kernel` reads them; None: the default backend's devices): `CPU_GROUP_SIZE` on one
    CPU device; None (one call) when the batch is sharded (a sort would gather it) or on an
    accelerator (all pairs in parallel lanes)."""
    where = choose_kernel("stripe", step=True, devices=devices)  # where the step's DP runs
    return CPU_GROUP_SIZE if where.platform == "cpu" and not where.sharded else None


def scanmatch_pairs(gt_coords, gt_durations, gt_length, coords, durations, length, *,
                    params: ScanMatchParams = WITH_DURATION,
                    duration_cap_s: float = DEFAULT_DURATION_CAP_S, group_size: int | None = None,
                    width: int | None = None, kernel: str = "auto", devices=None) -> jax.Array:
    """ScanMatch of P (ground truth, prediction) pairs of padded scanpaths: (P,) in coords' dtype.

    gt_coords (P, Lg, 3) [x, y, z], gt_durations (P, Lg) seconds, gt_length (P,); coords
    (P, Lp, 3), durations (P, Lp), length (P,). NaN when both symbol sequences are empty (as the
    metric), 0 when one is.

    The DP is `gap0_alignment` on the whole batch at once with the kernel `choose_kernel(kernel,
    step=True, devices=devices)` picks: devices are where the step runs (its shardings, mesh or
    devices; None: the default backend's devices). kernel "auto": the native C++ kernel on one
    CPU device when the library builds (~4x faster; width and group_size unused), else the jnp
    stripe kernel; "native" or "stripe" force one. The stripe kernel's width: rows per stripe
    (None: `CPU_STRIPE_WIDTH` on CPU, the whole height elsewhere); group_size None: one call for
    all pairs (keep it when the batch is sharded over devices); G: sorted calls of G pairs
    (`default_group_size`, which `train/finetune.py` uses). The scores depend on none of them.
    """
    choice = choose_kernel(kernel, gap=params.gap, step=True, devices=devices)
    dtype = coords.dtype

    def sym(c, d, n):
        m = max_expanded_length(c.shape[1], duration_cap_s, params)
        return jax.vmap(lambda *x: symbols(*x, params=params, max_symbols=m,
                                           duration_cap_s=duration_cap_s))(c, d, n)

    sa, la = sym(gt_coords.astype(dtype), gt_durations, gt_length)
    sb, lb = sym(coords, durations, length)
    size = max(sa.shape[1], sb.shape[1])
    sa, sb = (jnp.pad(x, ((0, 0), (0, size - x.shape[1]))) for x in (sa, sb))
    if width is None:
        width = CPU_STRIPE_WIDTH if choice.platform == "cpu" else size
    best = gap0_alignment(sa, la, sb, lb, params=params, kernel=choice, dtype=dtype, width=width,
                          group_size=group_size)
    scale = jnp.asarray(np.max(substitution_matrix(params.bins, params.threshold)), dtype) * \
        jnp.maximum(la, lb).astype(dtype)
    return jnp.where(scale > 0, best / jnp.where(scale > 0, scale, 1), jnp.nan)


def hmean_reward(gt_coords, gt_durations, gt_length, coords, durations, length, *,
                 duration_cap_s: float = DEFAULT_DURATION_CAP_S, group_size: int | None = None,
                 kernel: str = "auto", with_duration: ScanMatchParams = WITH_DURATION,
                 without_duration: ScanMatchParams = WITHOUT_DURATION, devices=None) -> jax.Array:
    """Harmonic mean of ScanMatch with and without duration of each sample: (B, S).

    gt_coords (B, Lg, 3), gt_durations (B, Lg), gt_length (B,): one recorded scanpath per row;
    coords (B, S, L, 3), durations (B, S, L), length (B, S): S samples scored against it.
    0 where either score is 0 or NaN. group_size, kernel, devices: see `scanmatch_pairs`.
    """
    b, s = length.shape
    flat = lambda x: x.reshape(b * s, *x.shape[2:])  # noqa: E731
    repeat = lambda x: jnp.repeat(x, s, axis=0)  # noqa: E731
    args = (repeat(gt_coords), repeat(gt_durations), repeat(gt_length), flat(coords),
            flat(durations), flat(length))
    a = scanmatch_pairs(*args, params=with_duration, duration_cap_s=duration_cap_s,
                        group_size=group_size, kernel=kernel, devices=devices)
    c = scanmatch_pairs(*args, params=without_duration, duration_cap_s=duration_cap_s,
                        group_size=group_size, kernel=kernel, devices=devices)
    a, c = jnp.nan_to_num(a), jnp.nan_to_num(c)  # both empty: NaN in the metric, 0 here
    total = a + c
    return jnp.where(total > 0, 2 * a * c / jnp.where(total > 0, total, 1), 0).reshape(b, s)
