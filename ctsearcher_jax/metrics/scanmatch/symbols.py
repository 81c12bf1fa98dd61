"""ScanMatch's grid: parameters, the substitution matrix, and fixations -> symbol sequences.

Host side, NumPy float64, as `src/utils/evaltools/scanmatch3d.py` of CT-ScanGaze computes them
(the package docstring gives the whole pipeline). The reward's fixed-shape twin of
`fixations_to_symbols` is `reward.symbols`, built on `axis_tables` and the same arithmetic.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np


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
def axis_tables(res: tuple[int, int, int], bins: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
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


def score_constants(bins: tuple[int, int, int], threshold: float) -> np.ndarray:
    """[max_d, max_d - threshold] as `substitution_matrix` computes them (max of sqrt = sqrt of
    max): the stripe kernel scores bin pairs from them."""
    xb, yb, zb = bins
    max_d = np.sqrt(np.float64((xb - 1) ** 2 + (yb - 1) ** 2 + (zb - 1) ** 2))
    return np.array([max_d, max_d - threshold], dtype=np.float64)


def symbol_bins(symbols, bins: tuple[int, int, int]) -> tuple:
    """(y, x, z) bin indices of symbols `yb * Xbin*Zbin + xb * Zbin + zb` (NumPy or jnp arrays)."""
    xbins, _, zbins = bins
    return symbols // (xbins * zbins), (symbols // zbins) % xbins, symbols % zbins


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
    tx, ty, tz = axis_tables(params.res, params.bins)
    xb, yb, zb = tx[di[:, 0]], ty[di[:, 1]], tz[di[:, 2]]
    symbols = (yb * (params.bins[0] * params.bins[2]) + xb * params.bins[2] + zb).astype(np.int32)
    if params.temp_bin != 0:
        repeats = np.round(di[:, 3] / float(params.temp_bin)).astype(np.int64)
        symbols = np.repeat(symbols, repeats)
    return symbols
