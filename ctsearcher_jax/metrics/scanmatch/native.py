"""ScanMatch's gap-0 Needleman-Wunsch as a native CPU kernel inside `jax.jit` (XLA FFI).

`gap0_max(a, la, b, lb, sub)` is F[la, lb] of each pair of symbol sequences, the quantity the jnp
kernel `stripe.stripe_kernel` computes, in the dtype of `sub`: bit for bit in float64 (the
evaluation; tested against the original's numbers); in float32 (the RL reward) the scores are the
float64 table rounded, where the stripe kernel computes them in float32, so the two may differ in
the last bits (7e-9 on the test pairs). The C++ source (`scanmatch_gap0.cc`, the algorithm is in
its header) goes through the rows of one sequence with the other's runs of repeated symbols as
the vector loop, so no anti-diagonal skew and no per-cell score arithmetic: on the project's
2-core CPU it takes 0.27 ns per cell on one thread in float32 (0.5 ns in float64) against ~1 ns
per useful cell for the stripe kernel, and it spreads the pairs over `threads` host threads
(docs/benchmarks.md, Learning).

It runs on CPU devices only and needs the library built (`runtime/native.py`: compiled on first
use, `CTSEARCHER_NATIVE=0` turns it off); `available()` says whether it is. Where it runs (the
host's CPU device for the evaluation, one CPU device for a training step, never an accelerator
or a sharded step) is `kernel.choose_kernel`'s decision.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ctsearcher_jax.runtime import native as runtime_native
from ctsearcher_jax.runtime.devices import usable_cores

SOURCE = str(Path(__file__).with_name("scanmatch_gap0.cc"))
TARGETS = {np.dtype(np.float32): "ctsearcher_scanmatch_gap0_f32",
           np.dtype(np.float64): "ctsearcher_scanmatch_gap0_f64"}
_HANDLERS = (("ctsearcher_scanmatch_gap0_f32", "CtsearcherScanMatchGap0F32"),
             ("ctsearcher_scanmatch_gap0_f64", "CtsearcherScanMatchGap0F64"))


def available() -> bool:
    """True when the native kernel is built and registered (builds it on the first call)."""
    return runtime_native.register(SOURCE, _HANDLERS)


def gap0_max(a: jax.Array, la: jax.Array, b: jax.Array, lb: jax.Array, sub: jax.Array,
             threads: int | None = None) -> jax.Array:
    """F[la, lb] of gap-0 Needleman-Wunsch for P pairs: (P,) in sub's dtype (float32/float64).

    a: (P, N) int32 symbols in [0, K), the first la of each row used; la: (P,) int32; b: (P, M),
    lb: (P,); sub: (K, K) symmetric substitution matrix. threads: host threads (default: the
    usable cores). Lengths outside [0, N] / [0, M], symbols outside [0, K) or an asymmetric `sub`
    are an error raised by the call, never a read out of bounds. CPU devices only; call
    `available()` first (`kernel.choose_kernel` does).
    """
    dtype = np.dtype(sub.dtype)
    if dtype not in TARGETS:
        raise TypeError(f"gap0_max: sub must be float32 or float64, got {dtype}")
    if not available():
        raise RuntimeError("the native ScanMatch kernel is unavailable (see the warning above); "
                           "use the stripe kernel (kernel=\"stripe\")")
    threads = usable_cores() if threads is None else max(1, int(threads))
    call = jax.ffi.ffi_call(TARGETS[dtype], jax.ShapeDtypeStruct(la.shape, dtype),
                            vmap_method="broadcast_all")
    return call(jnp.asarray(a, jnp.int32), jnp.asarray(la, jnp.int32), jnp.asarray(b, jnp.int32),
                jnp.asarray(lb, jnp.int32), sub, threads=np.int64(threads))
