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

The batched kernel runs the DP over anti-diagonals (`lax.fori_loop` with a per-pair trip count,
one step per diagonal, vector over rows), vmapped over pairs; cells beyond a pair's lengths are
masked, so a pair's score does not depend on the other pairs in the batch.

Cost: with durations, the sequences are the fixations expanded by their repeat counts (a 0.3 s
fixation is 12 symbols), so a pair of 250-fixation scanpaths is a ~3000 x 3000 DP; this is the
dominant cost of an evaluation (see `scripts/bench_metrics.py`). The DP is exact, in float64.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ctsearcher_jax.metrics._batch import bucket, pad_batch, pad_sequences, x64


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


def _nw_last_gap0_one(a: jax.Array, la: jax.Array, b: jax.Array, lb: jax.Array,
                      consts: jax.Array, bins: tuple[int, int, int]) -> jax.Array:
    """F[la, lb] of one padded pair with gap 0 (then F is monotone, so this is max(F)).

    Same recurrence as `_nw_max_one` without the masks: cells beyond a pair's lengths are never
    read by cells inside them, and the loop stops at the pair's own last diagonal. The symbols
    of b along a diagonal are a contiguous slice of b reversed, and the substitution score is
    computed from the bin coordinates instead of gathered from the table (a gather per cell is
    the slowest part of the loop on CPU): `|sqrt(d2) - max_d| - (max_d - threshold)` with the
    integer squared bin distance d2 -- the same float operations that build the table, so the
    values are bit-identical (checked in the tests).
    consts: (2,) float64 [max_d, max_d - threshold].
    """
    xbins, _, zbins = bins  # bins are (x, y, z)
    rows = a.shape[0] + 1
    i = jnp.arange(rows)
    a_prev = jnp.concatenate([a[:1], a])
    # brev_pad[rows + t] = b[Lb - 1 - t], so b[d - i - 1] = brev_pad[rows + Lb - d + i].
    brev = jnp.concatenate([jnp.zeros((rows,), b.dtype), b[::-1], jnp.zeros((rows,), b.dtype)])

    def coords(sym):
        return sym // (xbins * zbins), (sym // zbins) % xbins, sym % zbins

    ay, ax, az = coords(a_prev)
    by, bx, bz = coords(brev)
    max_d, offset = consts[0], consts[1]
    zero = jnp.zeros((), consts.dtype)

    def body(d, carry):
        f1, diag = carry  # diagonal d-1, and diagonal d-2 already shifted to row i-1
        start = rows + b.shape[0] - d
        dy = ay - jax.lax.dynamic_slice(by, (start,), (rows,))
        dx = ax - jax.lax.dynamic_slice(bx, (start,), (rows,))
        dz = az - jax.lax.dynamic_slice(bz, (start,), (rows,))
        s = jnp.abs(jnp.sqrt((dx * dx + dy * dy + dz * dz).astype(consts.dtype)) - max_d) - offset
        up = jnp.concatenate([f1[:1], f1[:-1]])  # F[i-1, j]; next step's diagonal term
        f = jnp.maximum(jnp.maximum(diag + s, up), f1)
        f = jnp.where((i == 0) | (i >= d), zero, f)  # borders F[0, j] = F[i, 0] = 0 (and j < 0)
        return f, up

    init = (jnp.zeros((rows,), consts.dtype), jnp.zeros((rows,), consts.dtype))
    f, _ = jax.lax.fori_loop(0, la + lb + 1, body, init)
    return f[la]


@functools.partial(jax.jit, static_argnames=("bins",))
def _nw_last_gap0_batch(a, la, b, lb, consts, bins):
    return jax.vmap(_nw_last_gap0_one, in_axes=(0, 0, 0, 0, None, None))(a, la, b, lb, consts, bins)


@functools.partial(jax.jit, static_argnames=("k",))
def _nw_max_batch(a, la, b, lb, sub_flat, gap, k):
    return jax.vmap(_nw_max_one, in_axes=(0, 0, 0, 0, None, None, None))(a, la, b, lb, sub_flat, k, gap)


def default_chunk() -> int:
    """Pairs per kernel call: small on CPU (the anti-diagonals of 1-2 pairs stay in cache; measured
    fastest on a 2-core CPU), large on accelerators (parallel lanes)."""
    return 2 if jax.default_backend() == "cpu" else 64


def nw_max_batch(seq_a: Sequence[np.ndarray], seq_b: Sequence[np.ndarray],
                 params: ScanMatchParams, chunk: int | None = None) -> np.ndarray:
    """max(F) of the Needleman-Wunsch matrix for many symbol-sequence pairs: (B,) float64.

    Pairs are sorted by size and run in chunks of `chunk` (default `default_chunk()`), each
    padded to its own bucketed lengths: long and short pairs do not share padding.
    """
    chunk = default_chunk() if chunk is None else int(chunk)
    # NW with a symmetric substitution matrix is symmetric in its arguments (F(B, A) = F(A, B)^T),
    # so the shorter sequence goes on the rows: the diagonals (the vector width) are shorter.
    swapped = [(b, a) if len(b) < len(a) else (a, b) for a, b in zip(seq_a, seq_b)]
    seq_a = [x for x, _ in swapped]
    seq_b = [y for _, y in swapped]
    n = len(seq_a)
    out = np.zeros((n,), np.float64)
    if n == 0:
        return out
    sub = substitution_matrix(params.bins, params.threshold)
    order = np.argsort([max(len(x), len(y)) for x, y in zip(seq_a, seq_b)], kind="stable")
    with x64():
        sub_j = jnp.asarray(sub.ravel())
        gap = jnp.float64(params.gap)
        consts = jnp.asarray(_score_constants(params.bins, params.threshold))
        for start in range(0, n, chunk):
            idx = order[start:start + chunk]
            nb = pad_batch(len(idx))
            ca = [seq_a[i] for i in idx] + [np.zeros(0, np.int32)] * (nb - len(idx))
            cb = [seq_b[i] for i in idx] + [np.zeros(0, np.int32)] * (nb - len(idx))
            # The row length sets the vector width (the cost): fine buckets. The column length
            # only sizes a lookup array: powers of two, so fewer shapes are compiled (and held).
            a, la = pad_sequences(ca, bucket(max(len(s) for s in ca)), dtype=np.int32)
            b, lb = pad_sequences(cb, 1 << max(3, (max(len(s) for s in cb) - 1).bit_length()),
                                  dtype=np.int32)
            args = (jnp.asarray(a), jnp.asarray(la), jnp.asarray(b), jnp.asarray(lb))
            if params.gap == 0:  # the paper's setting: the cheaper unmasked kernel
                res = _nw_last_gap0_batch(*args, consts, bins=params.bins)
            else:
                res = _nw_max_batch(*args, sub_j, gap, k=params.num_symbols)
            out[idx] = np.asarray(res, dtype=np.float64)[:len(idx)]
    return out


def scanmatch_batch(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray],
                    params: ScanMatchParams = WITH_DURATION, chunk: int | None = None) -> np.ndarray:
    """ScanMatch scores of many (gt, pred) pairs.

    gt, pred: sequences of (n_i, 4) float64 `[x, y, z, duration_seconds]` arrays (ground truth is
    the first sequence of the alignment, as in the original evaluation).
    Returns (B,) float64 in [.., 1]; NaN where both symbol sequences are empty (as the original).
    chunk: pairs per kernel call (see `nw_max_batch`); results do not depend on it.
    """
    if len(gt) != len(pred):
        raise ValueError(f"scanmatch_batch: {len(gt)} ground-truth vs {len(pred)} predicted scanpaths")
    sa = [fixations_to_symbols(g, params) for g in gt]
    sb = [fixations_to_symbols(p, params) for p in pred]
    max_f = nw_max_batch(sa, sb, params, chunk)
    max_sub = float(np.max(substitution_matrix(params.bins, params.threshold)))
    scale = np.array([max_sub * max(len(x), len(y)) for x, y in zip(sa, sb)], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return max_f / scale


def scanmatch(gt: np.ndarray, pred: np.ndarray, params: ScanMatchParams = WITH_DURATION) -> float:
    """ScanMatch score of one pair (see `scanmatch_batch`)."""
    return float(scanmatch_batch([gt], [pred], params)[0])

