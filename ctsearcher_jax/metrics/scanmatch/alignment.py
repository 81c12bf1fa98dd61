"""`gap0_alignment`: the gap-0 alignment of a batch of padded pairs, the one entry point that the
metric (`metric.nw_max_batch`) and the fine-tuning reward (`reward.scanmatch_pairs`) both call.

It runs the kernel `kernel.choose_kernel` chose: the native C++ kernel (`native.gap0_max`) or the
jnp stripe kernel (`stripe.stripe_best`). Traceable: the reward calls it inside its jitted step,
the metric eagerly (native, on the device the choice names) or jitted per call (stripe).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ctsearcher_jax.metrics.scanmatch import native
from ctsearcher_jax.metrics.scanmatch.kernel import KernelChoice
from ctsearcher_jax.metrics.scanmatch.stripe import stripe_best
from ctsearcher_jax.metrics.scanmatch.symbols import ScanMatchParams, substitution_matrix


def gap0_alignment(a: jax.Array, la: jax.Array, b: jax.Array, lb: jax.Array, *,
                   params: ScanMatchParams, kernel: KernelChoice, dtype,
                   width: int | None = None, group_size: int | None = None,
                   threads: int | None = None, consts: jax.Array | None = None) -> jax.Array:
    """max(F) = F[la, lb] of gap-0 Needleman-Wunsch for P pairs of padded symbol sequences: (P,).

    a: (P, N) int32 symbols in [0, K), the first la of each row used; la: (P,) int32; b: (P, M);
    lb: (P,). Computed in `dtype` (float64: the metric, bit for bit the written-out DP; float32:
    the reward, within rounding of it). kernel: `choose_kernel`'s choice, "native" or "stripe".
    width, group_size: the stripe kernel's rows per stripe (None: the whole height) and pairs
    per call (None: one call; see `stripe.stripe_best`); threads: the native kernel's host
    threads (None: the usable cores). None of them changes a score. consts: the stripe kernel's
    score constants as an array argument (`stripe.stripe_best`: the metric passes them so that
    its float64 is bit for bit the written-out DP; None: constants of the compiled program).
    """
    if params.gap != 0:
        raise ValueError(f"gap0_alignment: gap must be 0, got {params.gap}")
    if kernel.name == "native":
        sub = jnp.asarray(substitution_matrix(params.bins, params.threshold), dtype)
        return native.gap0_max(a, la, b, lb, sub, threads)
    if kernel.name == "stripe":
        return stripe_best(a, la, b, lb, params=params, dtype=dtype, width=width,
                           group_size=group_size, consts=consts)
    raise ValueError(f"gap0_alignment runs the native or the stripe kernel, not {kernel.name!r}")
