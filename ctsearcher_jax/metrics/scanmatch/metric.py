"""The ScanMatch metric of the evaluation: host scanpaths -> symbols -> alignment -> score.

Exact, float64, on symbol sequences of any length built on the host (`symbols.py`); the scores
equal the original's (tests/metrics: the 60 reference pairs). `nw_max_batch` lays the pairs out
for the kernel `kernel.choose_kernel` picks: all pairs in one native call on the host's CPU
device, or the stripe kernel one pair per host thread (CPU) or in chunks of pairs of similar size
(accelerators), both through `alignment.gap0_alignment`; other gaps go to `masked.py`. A pair's
score never depends on the kernel, the other pairs, the chunking or the threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ctsearcher_jax.metrics._batch import pad_batch, pad_sequences, x64
from ctsearcher_jax.metrics.scanmatch.alignment import gap0_alignment
from ctsearcher_jax.metrics.scanmatch.kernel import KernelChoice, check_kernel, choose_kernel
from ctsearcher_jax.metrics.scanmatch.masked import masked_max_batch
from ctsearcher_jax.metrics.scanmatch.symbols import (
    WITH_DURATION,
    WITHOUT_DURATION,
    ScanMatchParams,
    fixations_to_symbols,
    score_constants,
    substitution_matrix,
)
from ctsearcher_jax.runtime.devices import usable_cores

STRIPE = 256  # rows per stripe on CPU: long enough to amortise the loop, short enough for the cache

# One pair per call (the CPU path) or a chunk of pairs (accelerators), compiled per shape.
_aligned = jax.jit(gap0_alignment, static_argnames=("params", "kernel", "dtype", "width",
                                                    "group_size", "threads"))


def _pow2(n: int) -> int:
    return 1 << max(3, (int(n) - 1).bit_length())


def default_threads() -> int:
    """Host threads for per-pair kernels on CPU: the cores this process may use."""
    return usable_cores()


def default_chunk(platform: str) -> int:
    """Pairs per stripe-kernel call on `platform`: 1 on CPU (one pair per host thread, see
    `nw_max_batch`), 64 on accelerators (parallel lanes)."""
    return 1 if platform == "cpu" else 64


def default_stripe(platform: str) -> int | None:
    """Stripe height on `platform`: STRIPE rows on CPU (cache-sized vectors); None = one stripe of
    the whole height on accelerators, where each loop step costs kernel launches, so fewer,
    longer steps (whole anti-diagonals) win."""
    return STRIPE if platform == "cpu" else None


def nw_max_batch(seq_a: Sequence[np.ndarray], seq_b: Sequence[np.ndarray],
                 params: ScanMatchParams, chunk: int | None = None,
                 threads: int | None = None, stripe: int | None | str = "auto",
                 kernel: str = "auto") -> np.ndarray:
    """max(F) of the Needleman-Wunsch matrix for many symbol-sequence pairs: (B,) float64.

    kernel ("auto", "native", "stripe") goes to `choose_kernel`: with gap 0 the pairs run the
    native kernel on the host's CPU device, also on GPU/TPU machines (C++, `threads` host
    threads inside one call); when it is unavailable, or kernel="stripe", the striped jnp kernel
    on the default device: chunk = 1 (the CPU default) runs one pair per call on `threads` host
    threads (default: the usable cores), largest pairs first; a larger chunk batches that many
    pairs of similar size per call (accelerators). stripe: rows per stripe ("auto":
    `default_stripe`; None: the whole height). Other gaps use the masked whole-matrix kernel,
    `chunk` pairs per call. Results do not depend on kernel, chunk, threads or stripe.
    """
    if not len(seq_a):
        check_kernel(kernel)
        return np.zeros((0,), np.float64)
    choice = choose_kernel(kernel, gap=params.gap)
    if choice.name == "native":
        return _native_max(seq_a, seq_b, params, threads, choice)
    chunk = default_chunk(choice.platform) if chunk is None else max(1, int(chunk))
    # NW with a symmetric substitution matrix is symmetric in its arguments (F(B, A) = F(A, B)^T),
    # so the shorter sequence goes on the rows: fewer, shorter stripes / diagonals.
    swapped = [(b, a) if len(b) < len(a) else (a, b) for a, b in zip(seq_a, seq_b)]
    seq_a = [x for x, _ in swapped]
    seq_b = [y for _, y in swapped]
    order = np.argsort([-len(x) * len(y) for x, y in zip(seq_a, seq_b)], kind="stable")
    if choice.name == "masked":
        return masked_max_batch(seq_a, seq_b, params, order, chunk)
    stripe = default_stripe(choice.platform) if stripe == "auto" else stripe
    threads = default_threads() if threads is None else max(1, int(threads))
    return _stripe_max(seq_a, seq_b, params, order, chunk, threads, stripe, choice)


def _stripe_max(seq_a: Sequence[np.ndarray], seq_b: Sequence[np.ndarray], params: ScanMatchParams,
                order: np.ndarray, chunk: int, threads: int, stripe: int | None,
                choice: KernelChoice) -> np.ndarray:
    """`nw_max_batch` by the stripe kernel: `chunk` pairs per call in `order`, calls spread over
    `threads` host threads. Rows are the shorter sequences (`seq_a`)."""
    out = np.zeros((len(seq_a),), np.float64)
    # One padded length for the whole call (loop trip counts follow each pair's own lengths, so
    # padding costs memory, not time): few compiled shapes, (stripe width, lengths).
    rows = _pow2(max(len(x) for x in seq_a))
    cols = _pow2(max(len(x) for x in seq_b))
    width_max = rows if stripe is None else min(int(stripe), rows)
    # An argument of the compiled call, not a constant XLA could fold: bit for bit the DP.
    consts = score_constants(params.bins, params.threshold)
    calls = []
    for start in range(0, len(seq_a), chunk):
        idx = order[start:start + chunk]
        width = min(width_max, _pow2(max(len(seq_a[i]) for i in idx)))
        a, la = pad_sequences([seq_a[i] for i in idx], rows, dtype=np.int32)
        b, lb = pad_sequences([seq_b[i] for i in idx], cols, dtype=np.int32)
        calls.append((idx, a, la, b, lb, width))

    def run(call):
        idx, a, la, b, lb, width = call
        with x64():  # a thread-local switch: each worker thread sets it
            res = _aligned(a, la, b, lb, params=params, kernel=choice, dtype=np.float64,
                           width=width, consts=consts)
            out[idx] = np.asarray(res, np.float64).reshape(-1)

    if threads > 1 and len(calls) > 1:
        with ThreadPoolExecutor(min(threads, len(calls))) as pool:
            list(pool.map(run, calls))  # list(): re-raises a worker's exception here
    else:
        for call in calls:
            run(call)
    return out


def _native_max(seq_a: Sequence[np.ndarray], seq_b: Sequence[np.ndarray], params: ScanMatchParams,
                threads: int | None, choice: KernelChoice) -> np.ndarray:
    """`nw_max_batch` (gap 0) by the native kernel on the choice's CPU device: all pairs in one
    call, float64. (device None: kernel="native" was asked for without one; the call says why.)"""
    n = pad_batch(len(seq_a))  # bucketed shapes: a varying pair count reuses the compiled call
    empty = [np.zeros(0, np.int32)] * (n - len(seq_a))
    a, la = pad_sequences(list(seq_a) + empty, _pow2(max(len(x) for x in seq_a)), dtype=np.int32)
    b, lb = pad_sequences(list(seq_b) + empty, _pow2(max(len(x) for x in seq_b)), dtype=np.int32)
    with x64(), jax.default_device(choice.device):
        best = gap0_alignment(jnp.asarray(a), jnp.asarray(la), jnp.asarray(b), jnp.asarray(lb),
                              params=params, kernel=choice, dtype=jnp.float64, threads=threads)
        return np.asarray(best, np.float64)[:len(seq_a)]


def scanmatch_batch(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray],
                    params: ScanMatchParams = WITH_DURATION, chunk: int | None = None,
                    kernel: str = "auto") -> np.ndarray:
    """ScanMatch scores of many (gt, pred) pairs.

    gt, pred: sequences of (n_i, 4) float64 `[x, y, z, duration_seconds]` arrays (ground truth is
    the first sequence of the alignment, as in the original evaluation).
    Returns (B,) float64 in [.., 1]; NaN where both symbol sequences are empty (as the original).
    chunk, kernel: see `nw_max_batch`; results do not depend on them.
    """
    if len(gt) != len(pred):
        raise ValueError(f"scanmatch_batch: {len(gt)} ground-truth vs {len(pred)} predicted scanpaths")
    sa = [fixations_to_symbols(g, params) for g in gt]
    sb = [fixations_to_symbols(p, params) for p in pred]
    max_f = nw_max_batch(sa, sb, params, chunk, kernel=kernel)
    max_sub = float(np.max(substitution_matrix(params.bins, params.threshold)))
    scale = np.array([max_sub * max(len(x), len(y)) for x, y in zip(sa, sb)], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return max_f / scale


def scanmatch(gt: np.ndarray, pred: np.ndarray, params: ScanMatchParams = WITH_DURATION) -> float:
    """ScanMatch score of one pair (see `scanmatch_batch`)."""
    return float(scanmatch_batch([gt], [pred], params)[0])


def score_pairs(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The `scanmatch` family (metrics/registry.py): {name: (K,) float64} with and without duration."""
    return {"scanmatch_with_duration": scanmatch_batch(gt, pred, WITH_DURATION),
            "scanmatch_without_duration": scanmatch_batch(gt, pred, WITHOUT_DURATION)}
