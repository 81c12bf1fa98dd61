"""Padding helpers shared by the batched metrics (host side, NumPy), and where they run.

Every batched metric takes padded arrays plus true lengths. Padded lengths are rounded up to a
few bucket sizes so that a jit-compiled kernel is reused across calls instead of recompiled for
every new maximum length.

Placement: the evaluation's float64 kernels (MultiMatch `dp`, DTW, ScanMatch with a gap) run in
`float64_on_host()`, on this process's CPU device, also on GPU and TPU machines: a TPU has no
float64 (XLA emulates it, slowly) and these DPs are sequential over one pair's diagonals, which
the host's cores run well. ScanMatch's gap-0 kernel makes the same choice in
`scanmatch.kernel.choose_kernel` (natively on the host CPU); SED (integers) and saliency
(float32) stay on the default device.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import jax
import numpy as np


def bucket(n: int, minimum: int = 8) -> int:
    """Round a length up to a bucket: powers of two up to 256, then steps of ~25 % (multiples of 64).

    Few distinct shapes means few jit compilations (about 25 buckets cover 1..10^4); the padding
    waste is at most 2x for short inputs and 25 % for long ones.
    """
    n = max(int(n), minimum)
    if n <= 256:
        return 1 << (n - 1).bit_length()
    b = 256
    while b < n:
        b = -(-int(b * 1.25) // 64) * 64
    return b


def pad_sequences(seqs: Sequence[np.ndarray], length: int | None = None, fill: float = 0,
                  dtype: np.dtype | type = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Stack 1-D or 2-D per-item arrays into `(B, L, ...)` with `fill` beyond each item's length.

    Returns (padded, lengths) with lengths `(B,)` int32. `length` defaults to the bucketed maximum.
    """
    lengths = np.array([len(s) for s in seqs], dtype=np.int32)
    if length is None:
        length = bucket(int(lengths.max()) if len(seqs) else 1)
    trailing = np.asarray(seqs[0]).shape[1:] if len(seqs) else ()
    out = np.full((len(seqs), length, *trailing), fill, dtype=dtype)
    for b, s in enumerate(seqs):
        if len(s):
            out[b, :len(s)] = s
    return out, lengths


def pad_batch(n: int) -> int:
    """Batch sizes are bucketed too (powers of two), so a varying pair count reuses kernels."""
    return 1 << max(int(n) - 1, 0).bit_length()


def host_cpu():
    """This process's own CPU device (jax.devices() also lists other processes' ones), or None
    when the process has no CPU backend (e.g. JAX_PLATFORMS=cuda)."""
    try:
        return jax.local_devices(backend="cpu")[0]
    except RuntimeError:
        return None


@contextlib.contextmanager
def float64_on_host() -> Iterator[None]:
    """float64 (`x64()`) with this process's CPU device as the default device (module docstring);
    on the default device only when the process has no CPU backend."""
    cpu = host_cpu()
    with x64():
        if cpu is None:
            yield
        else:
            with jax.default_device(cpu):
                yield


def x64():
    """Context in which JAX computes in float64/int64.

    The metrics need float64 for 1e-6 parity with the original (long sums of irrational
    substitution scores, Dijkstra-style path costs). The switch is scoped to the metric call,
    so importing the metrics never changes the precision of model code.
    """
    return jax.enable_x64(True)
