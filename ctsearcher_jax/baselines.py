"""Reference scanpath generators, scored by the same protocol as the model, so every table has context.

Each baseline turns a list of CTs (`CTItem`s) into dataset-format `Scanpath`s: for every reader of
every CT, `samples_per_reader` scanpaths named after the CT with `subject` = that reader, so the
original protocol's "prediction i against reader i" pairing works unchanged. No baseline looks at
the scanpaths it will be compared with: lengths, durations and the in-plane spread come from the
*training* split (`ScanpathStats.from_items`), the slice range from the volume.

  uniform   fixations uniform in the 512 x 512 frame and over the slices [1, K]; length drawn
            from the training lengths; durations log-normal fitted to the training durations.
  centre    in-plane centre bias: X, Y from a Gaussian around the frame centre (256.5, 256.5)
            with the training set's RMS distance from the centre per axis, truncated to the
            frame; Z uniform over the slices (the bias is in-plane only); length and durations as
            `uniform`.
  drilling  a reader who scrolls once from the top slice to the bottom: Z is monotone
            non-decreasing (sorted uniform slice draws over [1, K]) while the gaze searches
            around the slice centre as a smooth AR(1) random walk (correlation 0.7 between
            consecutive fixations, stationary spread = the training spread); length and durations
            as `uniform`.
  human     the human-consistency row: each reader scored against the *other* readers of the
            same CT, never against itself. `score_human_consistency` scores it with
            `metrics.protocol.human_consistency`; `human_consistency_pairs` lists the (pred, gt)
            pairs; `human_consistency_predictions` writes them in the dataset format (reader
            a's scanpath relabelled with subject b, r - 1 blocks), which the original protocol
            with `repeats = r - 1` scores as exactly those pairs.

Z is a slice number: baselines draw integers in [1, K] where K is the CT's slice count
(`slice_counts[name]`) or, when unknown, `z_extent` (the legacy 512 frame by default).

Determinism: every (baseline, CT, reader, sample) draws from its own
`numpy.random.SeedSequence([seed, baseline, crc32(CT name), crc32(subject), sample])`, so a
scanpath does not change when other CTs or readers are added or reordered.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from scipy.signal import lfilter
from scipy.special import ndtr, ndtri

from ctsearcher_jax.config import GAZE_FRAME
from ctsearcher_jax.data.schema import CTItem, Scanpath
from ctsearcher_jax.errors import DataError
from ctsearcher_jax.metrics import protocol

FRAME_CENTRE = (GAZE_FRAME + 1) / 2.0   # 256.5: the centre of pixels 1..512
DRILL_CORRELATION = 0.7                  # AR(1) coefficient of the drilling baseline's in-plane walk


@dataclasses.dataclass(frozen=True)
class ScanpathStats:
    """What the generators borrow from the training scanpaths.

    lengths: (m,) int, the training scanpath lengths (sampled with replacement).
    log_duration_mean, log_duration_std: mean and standard deviation of log(T / 1 s).
    xy_sigma: (sx, sy) RMS distance of training X and Y from the frame centre, pixels.
    """

    lengths: np.ndarray
    log_duration_mean: float
    log_duration_std: float
    xy_sigma: tuple[float, float]

    @classmethod
    def from_items(cls, items: Iterable[CTItem]) -> "ScanpathStats":
        """Fit from the scanpaths of `items` (pass the training CTs). DataError when empty."""
        scanpaths = [sp for it in items for sp in it.readers]
        if not scanpaths:
            raise DataError("no training scanpaths to fit baseline lengths and durations from; "
                            "the dataset needs CTs with split 'train'")
        lengths = np.array([sp.length for sp in scanpaths], dtype=np.int64)
        log_t = np.log(np.concatenate([sp.t for sp in scanpaths]))
        x = np.concatenate([sp.x for sp in scanpaths])
        y = np.concatenate([sp.y for sp in scanpaths])
        sx = float(np.sqrt(np.mean((x - FRAME_CENTRE) ** 2)))
        sy = float(np.sqrt(np.mean((y - FRAME_CENTRE) ** 2)))
        return cls(lengths=lengths, log_duration_mean=float(log_t.mean()),
                   log_duration_std=float(log_t.std()), xy_sigma=(max(sx, 1.0), max(sy, 1.0)))


def _key(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _rng(seed: int, baseline: str, name: str, subject: object, sample: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(
        [int(seed), _key(baseline), _key(name), _key(repr(subject)), int(sample)]))


def _length_and_durations(rng: np.random.Generator, stats: ScanpathStats) -> tuple[int, np.ndarray]:
    n = int(rng.choice(stats.lengths))
    t = np.exp(stats.log_duration_mean + stats.log_duration_std * rng.standard_normal(n))
    return n, t


def _uniform_slices(rng: np.random.Generator, n: int, num_slices: int) -> np.ndarray:
    return rng.integers(1, num_slices + 1, size=n).astype(np.float64)


def _truncated_normal(rng: np.random.Generator, n: int, mean: float, sigma: float,
                      lo: float, hi: float) -> np.ndarray:
    """n draws of N(mean, sigma) truncated to [lo, hi], by inverting the normal CDF (exact)."""
    a, b = ndtr((lo - mean) / sigma), ndtr((hi - mean) / sigma)
    return np.clip(mean + sigma * ndtri(rng.uniform(a, b, size=n)), lo, hi)


def uniform_scanpath(rng: np.random.Generator, stats: ScanpathStats, num_slices: int):
    """(x, y, z, t) arrays of one uniform-random scanpath."""
    n, t = _length_and_durations(rng, stats)
    x = rng.uniform(1.0, GAZE_FRAME, n)
    y = rng.uniform(1.0, GAZE_FRAME, n)
    return x, y, _uniform_slices(rng, n, num_slices), t


def centre_scanpath(rng: np.random.Generator, stats: ScanpathStats, num_slices: int):
    """(x, y, z, t) arrays of one centre-biased scanpath."""
    n, t = _length_and_durations(rng, stats)
    x = _truncated_normal(rng, n, FRAME_CENTRE, stats.xy_sigma[0], 1.0, GAZE_FRAME)
    y = _truncated_normal(rng, n, FRAME_CENTRE, stats.xy_sigma[1], 1.0, GAZE_FRAME)
    return x, y, _uniform_slices(rng, n, num_slices), t


def _ar1(rng: np.random.Generator, n: int, sigma: float, rho: float) -> np.ndarray:
    """(n,) stationary AR(1) series with marginal std `sigma` and lag-1 correlation `rho`."""
    eps = rng.standard_normal(n)
    eps[0] /= np.sqrt(1.0 - rho ** 2)  # start in the stationary distribution
    return lfilter([sigma * np.sqrt(1.0 - rho ** 2)], [1.0, -rho], eps)


def drilling_scanpath(rng: np.random.Generator, stats: ScanpathStats, num_slices: int):
    """(x, y, z, t) arrays of one top-to-bottom drilling scanpath (z non-decreasing)."""
    n, t = _length_and_durations(rng, stats)
    z = np.sort(_uniform_slices(rng, n, num_slices))
    x = np.clip(FRAME_CENTRE + _ar1(rng, n, stats.xy_sigma[0], DRILL_CORRELATION), 1.0, GAZE_FRAME)
    y = np.clip(FRAME_CENTRE + _ar1(rng, n, stats.xy_sigma[1], DRILL_CORRELATION), 1.0, GAZE_FRAME)
    return x, y, z, t


GENERATORS: dict[str, Callable] = {
    "uniform": uniform_scanpath,
    "centre": centre_scanpath,
    "drilling": drilling_scanpath,
}
BASELINES = (*GENERATORS, "human")


def num_slices_of(name: str, slice_counts: Mapping[str, int] | None, z_extent: int) -> int:
    """Slice count K used for CT `name`: its volume's when known, else `z_extent`."""
    if slice_counts is not None and name in slice_counts:
        return int(slice_counts[name])
    return int(z_extent)


def generate(baseline: str, items: Sequence[CTItem], *, seed: int, stats: ScanpathStats | None = None,
             samples_per_reader: int = 1, slice_counts: Mapping[str, int] | None = None,
             z_extent: int = GAZE_FRAME) -> list[Scanpath]:
    """Scanpaths of `baseline` for every reader of every CT in `items` (dataset order).

    Returns, per CT, `samples_per_reader` blocks of one Scanpath per reader (name = CT,
    subject = the reader's, split None), the layout `original_protocol(repeats=samples)` pairs. X, Y in [1, 512] pixels, Z integer slices in [1, K], T > 0 seconds.
    `stats` (required except for "human") comes from the training split. "human" ignores seed,
    stats and samples_per_reader and returns `human_consistency_predictions(items)`.
    """
    if baseline == "human":
        return human_consistency_predictions(items)
    if baseline not in GENERATORS:
        raise ValueError(f"unknown baseline {baseline!r}; choose from {list(BASELINES)}")
    if stats is None:
        raise ValueError(f"baseline {baseline!r} needs ScanpathStats from the training split")
    if samples_per_reader < 1:
        raise ValueError(f"samples_per_reader must be >= 1, got {samples_per_reader}")
    make = GENERATORS[baseline]
    out: list[Scanpath] = []
    for item in items:
        k = num_slices_of(item.name, slice_counts, z_extent)
        if k < 1:
            raise DataError(f"CT {item.name!r}: slice count {k}; expected >= 1")
        # Sample-major (block s holds one scanpath per reader, in reader order): the layout
        # the original protocol pairs as "prediction i of block s against reader i".
        for s in range(samples_per_reader):
            for reader in item.readers:
                x, y, z, t = make(_rng(seed, baseline, item.name, reader.subject, s), stats, k)
                out.append(Scanpath(name=item.name, subject=reader.subject, split=None,
                                    x=x, y=y, z=z, t=t))
    return out


def human_consistency_pairs(items: Sequence[CTItem]) -> list[tuple[Scanpath, Scanpath]]:
    """Every ordered pair (pred = reader a, gt = reader b), a != b, of the same CT.

    A CT with r readers gives r * (r - 1) pairs; a CT with one reader gives none. Pairs are
    grouped by CT, then by gt reader, then by pred reader (file order).
    """
    pairs = []
    for item in items:
        for b, gt in enumerate(item.readers):
            for a, pred in enumerate(item.readers):
                if a != b:
                    pairs.append((pred, gt))
    return pairs


def human_consistency_predictions(items: Sequence[CTItem]) -> list[Scanpath]:
    """The human row as a predictions list: for reader b of a CT, every other reader's scanpath
    relabelled `subject = b`, in r - 1 blocks of one scanpath per reader (block s holds, for each
    reader b, the s-th other reader). Scored with the original protocol (`repeats = r - 1`), i.e.
    prediction i of each block against reader i, this is exactly every reader against every other
    reader: the pairs of `human_consistency_pairs`. CTs with one reader contribute nothing."""
    out = []
    for item in items:
        readers = item.readers
        for s in range(len(readers) - 1):
            for b, gt in enumerate(readers):
                others = [r for a, r in enumerate(readers) if a != b]
                out.append(dataclasses.replace(others[s], subject=gt.subject, split=None, index=-1,
                                               task=None, report=None))
    return out


def readers_as_arrays(items: Sequence[CTItem]) -> list[list[np.ndarray]]:
    """Per CT, its readers' scanpaths as (n, 4) [x, y, z, duration_s] arrays (protocol input)."""
    return [[sp.as_array() for sp in item.readers] for item in items]


def score_human_consistency(items: Sequence[CTItem], families: Sequence[str] | None = None,
                            **kwargs):
    """Score the human row with `ctsearcher_jax.metrics.protocol.human_consistency`.

    families: metric families (default: the protocol's default); kwargs go to the protocol.
    Returns its `ProtocolResult`.
    """
    if families is None:
        return protocol.human_consistency(readers_as_arrays(items), **kwargs)
    return protocol.human_consistency(readers_as_arrays(items), tuple(families), **kwargs)
