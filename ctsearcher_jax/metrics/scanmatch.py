"""ScanMatch in 3D (Cristino et al. 2010), batched and jit-compiled, equal to the original's numbers.

Pipeline for one pair (as `src/utils/evaltools/scanmatch3d.py` of CT-ScanGaze computes it):

1. **Symbols** (host, NumPy float64). Each fixation `[x, y, z, t_seconds]` becomes `[x, y, z, ms]`
   with `ms = t_seconds * 1000` (a float64 product), the offset is subtracted from x, y, z,
   every negative value (all four columns) is set to 0, x/y/z >= resolution are clamped to
   `res - 1`, then every column is truncated to an integer (Python `int()`). The bin of an axis
   is `int32(arange(0, bins, bins/res))[coord]`, arithmetic on a 1-D table (no `res^3` array);
   the symbol is `yb * (Xbin*Zbin) + xb * Zbin + zb`.
   With a temporal bin (`temp_bin` ms, 25 in the paper) each symbol is repeated
   `np.round(int(ms) / temp_bin)` times (round half to even; 0 repeats drop the fixation).
2. **Needleman-Wunsch** (jnp, float64). Substitution `S = |D - max D| - (max D - threshold)` with
   `D` the Euclidean distance between bins in (y, x, z) bin units (i.e. `threshold - D`), gap
   value 0 by default, borders `F[i, 0] = gap * (i + 1)`, `F[0, j] = gap * (j + 1)`,
   `F[i, j] = max(F[i-1, j-1] + S[a_i, b_j], F[i-1, j] + gap, F[i, j-1] + gap)`.
3. **Score** = `max(F) / (max(S) * max(len_a, len_b))`.

Original quirks kept: two empty symbol sequences (every fixation shorter than half a temporal
bin) give `0 / 0 = NaN`, as the original does; one empty sequence gives 0.

Kernels. With gap 0 (the paper's setting) F is monotone, so max(F) = F[la, lb]. All pairs go to
the native kernel on the host's CPU, on accelerator machines too (`metrics/scanmatch_native.py`:
C++ inside jit, rows swept over the runs of repeated symbols, host threads over pairs); without
a C++ compiler (or a CPU backend) each pair runs `stripe_kernel` (stripes of rows swept by
anti-diagonals; on CPU one pair per host thread, on accelerators chunks of pairs in one batched
call). Both are bit-identical to the written-out DP. Other gaps use `_nw_max_one` (whole
anti-diagonals, masked). A pair's score never depends on the kernel, the other pairs, the
chunking or the threads.
With durations a 250-fixation pair is a ~3000 x 3000 DP (a 0.3 s fixation is 12 symbols), the
dominant cost of an evaluation; timings in README, Benchmarks (`scripts/bench_metrics.py`).
"""

from __future__ import annotations

import dataclasses
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ctsearcher_jax.metrics import scanmatch_native
from ctsearcher_jax.metrics._batch import bucket, pad_batch, pad_sequences, x64
from ctsearcher_jax.runtime.devices import usable_cores


@dataclasses.dataclass(frozen=True)
class ScanMatchParams:
    """ScanMatch grid and scoring parameters (defaults: the CT-ScanGaze evaluation)."""

    # Frame size in pixels / slices along x, y, z (gaze coordinates are binned over [0, res)).
    res: tuple[int, int, int] = (512, 512, 512)
    # Number of bins along x, y, z.
    bins: tuple[int, int, int] = (6, 4, 8)
    # Offset subtracted from x, y, z before binning.
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # Temporal bin in milliseconds (0 = ignore durations: one symbol per fixation).
    temp_bin: float = 25.0
    # Substitution threshold: pairs of bins closer than this score positively.
    threshold: float = 3.5
    # Gap value of the alignment.
    gap: float = 0.0

    def __post_init__(self) -> None:
        if any(r <= 0 for r in self.res) or any(b <= 0 for b in self.bins):
            raise ValueError(f"ScanMatchParams: res {self.res} and bins {self.bins} must be > 0")
        if self.temp_bin < 0:
            raise ValueError(f"ScanMatchParams: temp_bin {self.temp_bin} must be >= 0")

    @property
    def num_symbols(self) -> int:
        return self.bins[0] * self.bins[1] * self.bins[2]


WITH_DURATION = ScanMatchParams()
WITHOUT_DURATION = ScanMatchParams(temp_bin=0.0)


@functools.lru_cache(maxsize=16)
def _axis_tables(res: tuple[int, int, int], bins: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
    """Per-axis coordinate -> bin tables, built like the original (`int32(arange(0, b, b/res))`)."""
    tables = []
    for r, b in zip(res, bins):
        t = np.int32(np.arange(0, b, float(b) / r))
        if t.shape[0] < r:  # float arange came out short: the original would fail to index
            raise ValueError(f"ScanMatch grid: arange(0, {b}, {b}/{r}) has {t.shape[0]} < {r} entries")
        tables.append(t[:r].astype(np.int64))
    return tuple(tables)


@functools.lru_cache(maxsize=16)
def substitution_matrix(bins: tuple[int, int, int], threshold: float) -> np.ndarray:
    """(K, K) float64 substitution matrix, K = Xbin*Ybin*Zbin, symbol = yb*Xbin*Zbin + xb*Zbin + zb."""
    xb, yb, zb = bins
    iy, ix, iz = np.meshgrid(np.arange(yb), np.arange(xb), np.arange(zb), indexing="ij")
    coords = np.stack([iy.ravel(), ix.ravel(), iz.ravel()], axis=1)
    diff = coords[:, None, :] - coords[None, :, :]
    # Same operations as the original: sqrt of an integer sum of squares, then |D - max| - (max - T).
    dist = np.sqrt((diff[..., 1] ** 2 + diff[..., 0] ** 2 + diff[..., 2] ** 2).astype(np.float64))
    max_d = np.max(dist)
    return np.abs(dist - max_d) - (max_d - threshold)


def _score_constants(bins: tuple[int, int, int], threshold: float) -> np.ndarray:
    """[max_d, max_d - threshold] as `substitution_matrix` computes them (max of sqrt = sqrt of max)."""
    xb, yb, zb = bins
    max_d = np.sqrt(np.float64((xb - 1) ** 2 + (yb - 1) ** 2 + (zb - 1) ** 2))
    return np.array([max_d, max_d - threshold], dtype=np.float64)


def fixations_to_symbols(fixations: np.ndarray, params: ScanMatchParams = WITH_DURATION) -> np.ndarray:
    """Symbol sequence of one scanpath.

    fixations: (n, 4) float64 `[x, y, z, duration_seconds]` rows (gaze frame, pixels/slices).
    Returns (m,) int32 symbols in [0, K); m = n without temporal bin, else the sum of repeats.
    """
    d = np.array(fixations, dtype=np.float64, copy=True).reshape(-1, 4)
    d[:, 3] *= 1000.0  # seconds -> ms, the float64 product the original uses
    d[:, :3] -= np.asarray(params.offset, dtype=np.float64)
    d[d < 0] = 0
    for axis in range(3):
        d[d[:, axis] >= params.res[axis], axis] = params.res[axis] - 1
    di = np.trunc(d).astype(np.int64)  # Python int() on non-negative values
    tx, ty, tz = _axis_tables(params.res, params.bins)
    xb, yb, zb = tx[di[:, 0]], ty[di[:, 1]], tz[di[:, 2]]
    symbols = (yb * (params.bins[0] * params.bins[2]) + xb * params.bins[2] + zb).astype(np.int32)
    if params.temp_bin != 0:
        repeats = np.round(di[:, 3] / float(params.temp_bin)).astype(np.int64)
        symbols = np.repeat(symbols, repeats)
    return symbols


def _nw_max_one(a: jax.Array, la: jax.Array, b: jax.Array, lb: jax.Array,
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


# Null coordinates (bin units) that pad the row and the column sequences: farther from every
# real bin, and from each other, than any two real bins, so their substitution score is negative
# (see `stripe_kernel`). Squared distances stay within int32.
_NULL_ROW, _NULL_COL = 1 << 12, -(1 << 12)


def stripe_kernel(ac: jax.Array, la: jax.Array, bc: jax.Array, lb: jax.Array, consts: jax.Array,
                  width: int) -> jax.Array:
    """F[la, lb] of a batch of pairs with gap 0 (F is then monotone, so this is max(F)): (*P,).

    ac: (*P, 3, N) int32 bin coordinates (y, x, z) of the row sequences, right-aligned (each
    pair's la rows last, `_NULL_ROW` before them), N >= max(la) a multiple of `width`; bc:
    (*P, 3, M) of the column sequences, left-aligned, `_NULL_COL` after them, M >= max(lb) +
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
    null = jnp.full((3, width + 4, *batch), _NULL_COL, jnp.int32)
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


# One pair as (3, N) vectors (the CPU path) or a chunk as (P, 3, N) (accelerators).
_stripe = jax.jit(stripe_kernel, static_argnames=("width",))


@functools.partial(jax.jit, static_argnames=("k",))
def _nw_max_batch(a, la, b, lb, sub_flat, gap, k):
    return jax.vmap(_nw_max_one, in_axes=(0, 0, 0, 0, None, None, None))(a, la, b, lb, sub_flat, k, gap)


STRIPE = 256  # rows per stripe: long enough to amortise the loop, short enough to stay in cache


def _pow2(n: int) -> int:
    return 1 << max(3, (int(n) - 1).bit_length())


def symbol_bins(symbols, bins: tuple[int, int, int]) -> tuple:
    """(y, x, z) bin indices of symbols `yb * Xbin*Zbin + xb * Zbin + zb` (NumPy or jnp arrays)."""
    xbins, _, zbins = bins
    return symbols // (xbins * zbins), (symbols // zbins) % xbins, symbols % zbins


def _coords(symbols: np.ndarray, length: int, bins: tuple[int, int, int], null: int,
            right: bool = False) -> np.ndarray:
    """(3, length) int32 bin coordinates (y, x, z) of a symbol sequence, padded with `null`
    after it (before it when `right`: the row sequences of `stripe_kernel`)."""
    out = np.full((3, length), null, np.int32)
    s = np.asarray(symbols, np.int64)
    start = length - len(s) if right else 0
    out[:, start:start + len(s)] = np.stack(symbol_bins(s, bins))
    return out


def default_threads() -> int:
    """Host threads for per-pair kernels on CPU: the cores this process may use."""
    return usable_cores()


def default_chunk() -> int:
    """Pairs per kernel call: 1 on CPU (one pair per host thread, see `nw_max_batch`), 64 on
    accelerators (parallel lanes)."""
    return 1 if jax.default_backend() == "cpu" else 64


def default_stripe() -> int | None:
    """Stripe height: STRIPE rows on CPU (cache-sized vectors); None = one stripe of the whole
    height on accelerators, where each loop step costs kernel launches, so fewer, longer steps
    (whole anti-diagonals) win."""
    return STRIPE if jax.default_backend() == "cpu" else None


def nw_max_batch(seq_a: Sequence[np.ndarray], seq_b: Sequence[np.ndarray],
                 params: ScanMatchParams, chunk: int | None = None,
                 threads: int | None = None, stripe: int | None | str = "auto",
                 kernel: str = "auto") -> np.ndarray:
    """max(F) of the Needleman-Wunsch matrix for many symbol-sequence pairs: (B,) float64.

    With gap 0 (the paper's setting) the pairs run the native kernel on the host's CPU device,
    also on GPU/TPU machines (`metrics/scanmatch_native.py`, C++, `threads` host threads inside
    one call); when it is unavailable, or kernel="stripe", each pair runs the striped jnp kernel
    (`stripe_kernel`): chunk = 1 (the CPU default) runs one pair per call on `threads` host
    threads (default: the usable cores), largest pairs first; a larger chunk batches that many
    pairs of similar size per call (accelerators). stripe: rows per stripe ("auto":
    `default_stripe()`; None: the whole height). Other gaps use the masked whole-matrix kernel,
    `chunk` pairs per call. Results do not depend on kernel, chunk, threads or stripe.
    """
    scanmatch_native.check_kernel(kernel)
    if params.gap == 0 and len(seq_a) and kernel != "stripe":
        cpu = scanmatch_native.host_cpu()
        if cpu is not None or kernel == "native":
            return _native_max_batch(seq_a, seq_b, params, threads, cpu)
    chunk = default_chunk() if chunk is None else max(1, int(chunk))
    stripe = default_stripe() if stripe == "auto" else stripe
    threads = default_threads() if threads is None else max(1, int(threads))
    # NW with a symmetric substitution matrix is symmetric in its arguments (F(B, A) = F(A, B)^T),
    # so the shorter sequence goes on the rows: fewer, shorter stripes / diagonals.
    swapped = [(b, a) if len(b) < len(a) else (a, b) for a, b in zip(seq_a, seq_b)]
    seq_a = [x for x, _ in swapped]
    seq_b = [y for _, y in swapped]
    n = len(seq_a)
    out = np.zeros((n,), np.float64)
    if n == 0:
        return out
    order = np.argsort([-len(x) * len(y) for x, y in zip(seq_a, seq_b)], kind="stable")
    if params.gap == 0:
        consts = _score_constants(params.bins, params.threshold)
        # One padded length for the whole call (loop trip counts follow each pair's own lengths,
        # so padding costs memory, not time): few compiled shapes, (stripe width, length).
        rows = _pow2(max(len(x) for x in seq_a))
        width_max = rows if stripe is None else min(int(stripe), rows)
        length = _pow2(max(len(x) for x in seq_b) + width_max + 2)
        calls = []
        for start in range(0, n, chunk):
            idx = order[start:start + chunk]
            width = min(width_max, _pow2(max(len(seq_a[i]) for i in idx)))
            ac = np.stack([_coords(seq_a[i], length, params.bins, _NULL_ROW, right=True)
                           for i in idx])
            bc = np.stack([_coords(seq_b[i], length, params.bins, _NULL_COL) for i in idx])
            la = np.array([len(seq_a[i]) for i in idx], np.int32)
            lb = np.array([len(seq_b[i]) for i in idx], np.int32)
            calls.append((idx, ac, la, bc, lb, width))

        def run(call):
            idx, ac, la, bc, lb, width = call
            with x64():  # a thread-local switch: each worker thread sets it
                if chunk == 1:
                    res = _stripe(ac[0], la[0], bc[0], lb[0], consts, width=width)
                else:
                    res = _stripe(ac, la, bc, lb, consts, width=width)
                out[idx] = np.asarray(res, np.float64).reshape(-1)

        if threads > 1 and len(calls) > 1:
            with ThreadPoolExecutor(min(threads, len(calls))) as pool:
                list(pool.map(run, calls))  # list(): re-raises a worker's exception here
        else:
            for call in calls:
                run(call)
        return out
    with x64():
        sub_j = jnp.asarray(substitution_matrix(params.bins, params.threshold).ravel())
        gap = jnp.float64(params.gap)
        for start in range(0, n, chunk):
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


def _native_max_batch(seq_a: Sequence[np.ndarray], seq_b: Sequence[np.ndarray],
                      params: ScanMatchParams, threads: int | None,
                      cpu: jax.Device | None) -> np.ndarray:
    """`nw_max_batch` (gap 0) by the native kernel on CPU device `cpu`: all pairs in one call,
    float64. (cpu None: kernel="native" was asked for without one; `gap0_max` says why.)"""
    n = pad_batch(len(seq_a))  # bucketed shapes: a varying pair count reuses the compiled call
    empty = [np.zeros(0, np.int32)] * (n - len(seq_a))
    a, la = pad_sequences(list(seq_a) + empty, _pow2(max(len(x) for x in seq_a)), dtype=np.int32)
    b, lb = pad_sequences(list(seq_b) + empty, _pow2(max(len(x) for x in seq_b)), dtype=np.int32)
    with x64(), jax.default_device(cpu):
        sub = jnp.asarray(substitution_matrix(params.bins, params.threshold))
        best = scanmatch_native.gap0_max(jnp.asarray(a), jnp.asarray(la), jnp.asarray(b),
                                         jnp.asarray(lb), sub, threads)
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
