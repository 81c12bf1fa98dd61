"""Radiologist-like readers: a reader style per subject and one scanpath per (CT, reader).

Reading model (`make_scanpath`). A reader drills through the slices from top to bottom: each
search fixation either advances (exponential step), stays on the slice (in-plane search) or
backtracks a few slices, with reader-specific probabilities. In-plane, search fixations land on
tissue of the current slice (never outside the body), spread around the slice's centre by a
reader-specific factor, and stay near the previous point for a few fixations before jumping.
When the drilling reaches a lesion the reader detects it with a probability that grows with its
size and contrast, and dwells on it: several fixations inside it, scrolling back and forth over
its slices, each lasting longer than a search fixation. Some lesions are revisited later
(a back-jump in Z). Durations are log-normal with a median of about 0.25 s. Reader r has a
fixed "thoroughness" (golden-ratio sequence over r) that sets its fixation count, drilling
speed, backtracking, search spread, durations, dwell and sensitivity, so the same reader
behaves alike on every CT.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Sequence

import numpy as np

from ctsearcher_jax.config import GAZE_FRAME
from ctsearcher_jax.data.coordinates import voxel_to_gaze
from ctsearcher_jax.data.synthetic.anatomy import Lesion
from ctsearcher_jax.data.synthetic.seeds import STREAM_READER, stream_rng
from ctsearcher_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ReaderStyle:
    """How one reader reads (fixed across CTs). Probabilities are per search fixation."""

    subject: int
    thoroughness: float          # 0 fast ... 1 thorough; every trait below follows from it
    count_level: float           # fixation count: min * (max/min) ** count_level, before noise
    p_stay: float                # stay on the slice (in-plane search)
    p_back: float                # scroll back (backtrack)
    back_scale: float            # mean backtrack size, in units of the mean forward step
    spread: float                # in-plane spread around the slice centre (1 = whole body)
    p_jump: float                # jump to a new in-plane region (else look near the last point)
    local_sd_px: float           # in-plane step when looking nearby, 512-frame pixels
    duration_median_s: float     # median search-fixation duration, seconds
    duration_sigma: float        # log-normal sigma of durations
    dwell_scale: float           # lesion-fixation duration / search-fixation duration
    dwell_fixations: float       # mean extra fixations on a detected lesion
    sensitivity: float           # detection probability of a large, high-contrast lesion
    p_revisit: float             # probability of coming back to a detected lesion later


def reader_style(seed: int, subject: int) -> ReaderStyle:
    """The style of reader `subject` (1-based) for a dataset seed.

    Thoroughness follows the golden-ratio sequence over subjects (0.5, 0.12, 0.74, 0.36, ...), so
    readers differ systematically for every seed; the seed adds a small jitter to each trait.
    """
    a = (0.5 + (subject - 1) * 0.6180339887498949) % 1.0
    rng = stream_rng(seed, STREAM_READER, subject)

    def jitter(v: float) -> float:
        """v scaled by a random factor in [0.95, 1.05] (the seed's variation of a trait)."""
        return float(v * rng.uniform(0.95, 1.05))

    return ReaderStyle(
        subject=subject, thoroughness=a,
        count_level=float(np.clip(jitter(0.1 + 0.8 * a), 0.0, 1.0)),
        p_stay=jitter(0.15 + 0.25 * a), p_back=jitter(0.05 + 0.07 * a), back_scale=jitter(2.0 + 2.0 * a),
        spread=float(np.clip(jitter(0.65 + 0.3 * a), 0.3, 1.0)), p_jump=jitter(0.5 - 0.2 * a),
        local_sd_px=jitter(12.0 + 12.0 * a), duration_median_s=jitter(0.21 + 0.06 * a),
        duration_sigma=jitter(0.45), dwell_scale=jitter(1.7 + 1.0 * a), dwell_fixations=jitter(3.0 + 5.0 * a),
        sensitivity=float(np.clip(jitter(0.85 + 0.13 * a), 0.0, 0.99)), p_revisit=jitter(0.2 + 0.45 * a))


class GazeSequence(NamedTuple):
    """One scanpath: x, y (512-frame pixels), z (slice numbers), t (seconds); each (n,) float64."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    t: np.ndarray


def _conspicuity(les: Lesion) -> float:
    """0..1: how easily a lesion is seen (size and contrast)."""
    size = 1.0 - math.exp(-les.radius_mm / 5.0)
    contrast = min(1.0, abs(les.contrast_hu) / 50.0) ** 0.25
    return size * contrast


def make_scanpath(hu: np.ndarray, lesions: Sequence[Lesion], style: ReaderStyle,
                  rng: np.random.Generator, *, min_fixations: int = 50,
                  max_fixations: int = 400) -> GazeSequence:
    """One reader's scanpath over one volume (see the module docstring for the model).

    hu: (I, J, K) Hounsfield units (any dtype). Returns rounded values exactly as written to
    the dataset: X, Y in [1, 512] (2 decimals), Z integer slice numbers in [1, K], T >= 0.05 s.
    The steps draw from `rng` in a fixed order, so a seed always gives the same scanpath.
    """
    if not 1 <= min_fixations <= max_fixations:
        raise ConfigError(f"min_fixations ({min_fixations}) and max_fixations ({max_fixations}) "
                          f"must satisfy 1 <= min <= max")
    K = hu.shape[2]
    lo, hi = float(min_fixations), float(max_fixations)
    base = lo * (hi / lo) ** style.count_level
    n_total = int(np.clip(round(base * math.exp(0.15 * rng.standard_normal())
                                * (1.0 + 0.05 * len(lesions))), min_fixations, max_fixations))
    episodes = _lesion_episodes(lesions, style, rng, n_total)
    n_search = n_total - sum(e[1] for e in episodes)
    kz = _drilling(style, rng, n_search, K)
    sx, sy, st = _search_fixations(hu, style, rng, kz)

    # Lesion fixations, keyed so that a stable sort slots them into the search sequence.
    keys = [np.arange(n_search, dtype=np.float64)]
    xs, ys, zs, ts = [sx], [sy], [kz + 1.0], [st]
    first_visit: dict[int, int] = {}
    mu = math.log(style.duration_median_s)
    for e_idx, (q, m, is_revisit) in enumerate(episodes):
        les = lesions[q]
        ci, cj, ck = les.center_ijk
        ri, rj, rk = les.radii_ijk
        if not is_revisit:
            reach = int(np.searchsorted(np.maximum.accumulate(kz), ck - rk))
            at = min(n_search, reach + int(rng.integers(0, 3)))
            first_visit[q] = at
        else:
            at = int(rng.integers(min(first_visit.get(q, 0) + 1, n_search), n_search + 1))
        li = ci + rng.normal(0.0, 0.45, m) * ri
        lj = cj + rng.normal(0.0, 0.45, m) * rj
        lk = np.clip(ck + rng.normal(0.0, 0.5, m) * rk, ck - rk, ck + rk)
        g = np.stack(voxel_to_gaze(li, lj, lk, hu.shape), axis=-1)
        xs.append(g[:, 0] + rng.normal(0.0, 3.0, m))
        ys.append(g[:, 1] + rng.normal(0.0, 3.0, m))
        zs.append(g[:, 2])
        ts.append(np.exp(mu + math.log(style.dwell_scale) + style.duration_sigma * rng.standard_normal(m)))
        keys.append(at - 0.5 + 1e-3 * e_idx + 1e-6 * np.arange(m))
    order_idx = np.argsort(np.concatenate(keys), kind="stable")
    x = np.concatenate(xs)[order_idx]
    y = np.concatenate(ys)[order_idx]
    z = np.concatenate(zs)[order_idx]
    t = np.concatenate(ts)[order_idx]
    return GazeSequence(
        x=np.round(np.clip(x, 1.0, GAZE_FRAME), 2),
        y=np.round(np.clip(y, 1.0, GAZE_FRAME), 2),
        z=np.clip(np.rint(z), 1, K).astype(np.float64),
        t=np.round(np.clip(t, 0.05, 4.0), 3))


def _lesion_episodes(lesions: Sequence[Lesion], style: ReaderStyle, rng: np.random.Generator,
                     n_total: int) -> list[list[int]]:
    """Lesion episodes `[lesion index, number of fixations, is_revisit]` in slice order, cut so
    that at least half of the `n_total` fixations are search."""
    order = sorted(range(len(lesions)), key=lambda q: lesions[q].center_ijk[2])
    episodes: list[list[int]] = []
    for q in order:
        les = lesions[q]
        p_detect = style.sensitivity * (0.4 + 0.6 * _conspicuity(les))
        detected = rng.uniform() < p_detect
        size = min(2.0, les.radius_mm / 10.0)
        m = 2 + int(rng.poisson(style.dwell_fixations * (0.6 + 0.4 * size)))
        revisit = rng.uniform() < style.p_revisit
        m2 = 1 + int(rng.poisson(0.4 * style.dwell_fixations))
        if detected:
            episodes.append([q, m, 0])
            if revisit:
                episodes.append([q, m2, 1])
    cap = n_total // 2                     # at least half the fixations are search
    total = sum(e[1] for e in episodes)
    if total > cap:
        for e in episodes:
            e[1] = int(e[1] * cap / total)
        episodes = [e for e in episodes if e[1] >= 1]
    return episodes


def _drilling(style: ReaderStyle, rng: np.random.Generator, n_search: int, K: int) -> np.ndarray:
    """(n_search,) continuous 0-based slice position of each search fixation: steps forward,
    back and staying, stretched over the volume's slices."""
    u = rng.uniform(size=n_search)
    steps = np.where(u < style.p_back, -rng.exponential(style.back_scale, n_search),
                     np.where(u < style.p_back + style.p_stay, 0.0, rng.exponential(1.0, n_search)))
    steps[0] = 0.0
    c = np.cumsum(steps)
    k_start = rng.uniform(0.0, 0.03) * (K - 1)
    k_end = (K - 1) - rng.uniform(0.0, 0.03) * (K - 1)
    span = c.max() - c.min()
    return k_start + (k_end - k_start) * ((c - c.min()) / span if span > 0 else np.zeros_like(c))


def _search_fixations(hu: np.ndarray, style: ReaderStyle, rng: np.random.Generator,
                      kz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, duration) of the search fixations at slices `kz`: tissue voxels of the current
    slice (a strided grid keeps memory small), held between jumps with local jitter."""
    I, J, K = hu.shape
    n_search = len(kz)
    ks = np.clip(np.rint(kz), 0, K - 1).astype(np.int64)
    stride = max(1, int(math.ceil(max(I, J) / 128)))
    sub = np.asarray(hu[::stride, ::stride, :]) > -950
    kk, ii, jj = np.nonzero(np.moveaxis(sub, 2, 0))        # sorted by slice
    counts = np.bincount(kk, minlength=K)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cen_i = np.bincount(kk, weights=ii, minlength=K) / np.maximum(counts, 1) * stride
    cen_j = np.bincount(kk, weights=jj, minlength=K) / np.maximum(counts, 1) * stride
    cen_i = np.where(counts > 0, cen_i, (I - 1) / 2.0)
    cen_j = np.where(counts > 0, cen_j, (J - 1) / 2.0)
    pick = offsets[ks] + np.floor(rng.uniform(size=n_search) * np.maximum(counts[ks], 1)).astype(np.int64)
    pick = np.minimum(pick, max(len(kk) - 1, 0))
    if len(kk):
        vi = np.where(counts[ks] > 0, ii[pick] * stride, cen_i[ks]) + rng.uniform(-0.5, stride - 0.5, n_search)
        vj = np.where(counts[ks] > 0, jj[pick] * stride, cen_j[ks]) + rng.uniform(-0.5, stride - 0.5, n_search)
    else:
        vi, vj = np.full(n_search, cen_i[0]), np.full(n_search, cen_j[0])
    vi = cen_i[ks] + style.spread * (vi - cen_i[ks])
    vj = cen_j[ks] + style.spread * (vj - cen_j[ks])
    anchors = np.stack(voxel_to_gaze(vi, vj, kz, hu.shape), axis=-1)
    jump = rng.uniform(size=n_search) < style.p_jump
    jump[0] = True
    held = np.maximum.accumulate(np.where(jump, np.arange(n_search), 0))   # last jump index
    sx = anchors[held, 0] + rng.normal(0.0, style.local_sd_px, n_search) * ~jump
    sy = anchors[held, 1] + rng.normal(0.0, style.local_sd_px, n_search) * ~jump
    mu = math.log(style.duration_median_s)
    st = np.exp(mu + style.duration_sigma * rng.standard_normal(n_search))
    return sx, sy, st
