"""The one-call Python API: scanpaths in any form, single-pair metrics, sampling for a CT.

The functions here accept a scanpath as a `Scanpath` (from `load_dataset` / `load_records`), a
dataset record (a dict with X, Y, Z, T) or an `(n, 4)` array of `[x, y, z, t_seconds]` rows, and
score it exactly as `ctsearcher evaluate` does (the original evaluation's MultiMatch padding, the
legacy SED code), so a number computed here equals the one in an evaluation report.

    import ctsearcher_jax as cs
    ct = cs.load_dataset("data", split="test")[0]
    cs.scanmatch(ct.readers[0], ct.readers[1]).with_duration
    cs.multimatch(ct.readers[0], ct.readers[1]).position
"""

from __future__ import annotations

import os
from typing import Any, Mapping, NamedTuple, Sequence, Union

import numpy as np
from flax import nnx

from ctsearcher_jax.data.schema import COORD_FIELDS, Scanpath
from ctsearcher_jax.errors import DataError
from ctsearcher_jax.metrics.multimatch import NAMES
from ctsearcher_jax.metrics.protocol import check_scanpath, score_pairs
from ctsearcher_jax.model.factory import build
from ctsearcher_jax.model.generate import records_to_scanpaths, sample_records

ScanpathLike = Union[Scanpath, Mapping[str, Any], np.ndarray, Sequence[Sequence[float]]]


class ScanMatchScore(NamedTuple):
    """ScanMatch 3D of one pair, in [0, 1], higher is better."""

    with_duration: float
    without_duration: float


class MultiMatchScore(NamedTuple):
    """MultiMatch 3D of one pair: five similarities in [0, 1], higher is better."""

    vector: float
    direction: float
    length: float
    position: float
    duration: float

    @property
    def mean(self) -> float:
        """The mean of the five (the paper's "MultiMatch" column)."""
        return float(np.mean(tuple(self)))


def as_array(scanpath: ScanpathLike, what: str = "scanpath") -> np.ndarray:
    """`(n, 4)` float64 `[x, y, z, t_seconds]` of a Scanpath, a record dict or an array.

    Raises DataError (naming `what`) for a wrong shape, no fixations, or NaN/inf.
    """
    if isinstance(scanpath, Scanpath):
        arr = scanpath.as_array()
    elif isinstance(scanpath, Mapping):
        missing = [k for k in COORD_FIELDS if k not in scanpath]
        if missing:
            raise DataError(f"{what}: a record needs the fields {list(COORD_FIELDS)}; missing {missing}")
        arr = np.stack([np.asarray(scanpath[k], np.float64) for k in COORD_FIELDS], axis=1)
    else:
        arr = np.asarray(scanpath, np.float64)
    return check_scanpath(arr, what)


def scanmatch(gt: ScanpathLike, pred: ScanpathLike) -> ScanMatchScore:
    """ScanMatch 3D of one pair (gaze frame 512 x 512 x 512, as `evaluate`)."""
    s = score_pairs([as_array(gt, "gt")], [as_array(pred, "pred")], ["scanmatch"])
    return ScanMatchScore(float(s["scanmatch_with_duration"][0]),
                          float(s["scanmatch_without_duration"][0]))


def multimatch(gt: ScanpathLike, pred: ScanpathLike, *, alignment: str = "exact") -> MultiMatchScore:
    """MultiMatch 3D of one pair, with the original evaluation's padding (as `evaluate`).

    alignment: "exact" (scipy Dijkstra, as the original) or "dp" (jit DP).
    """
    s = score_pairs([as_array(gt, "gt")], [as_array(pred, "pred")], ["multimatch"],
                    multimatch_alignment=alignment)
    return MultiMatchScore(*(float(s[f"multimatch_{n}"][0]) for n in NAMES))


def sed(gt: ScanpathLike, pred: ScanpathLike, *, code: str = "legacy") -> float:
    """String edit distance of one pair (lower is better); code "legacy" or "bijective"."""
    s = score_pairs([as_array(gt, "gt")], [as_array(pred, "pred")], ["sed"], sed_code=code)
    return float(s["sed"][0])


def build_model(model_config: Any, *, seed: int = 0) -> Any:
    """A freshly initialised (untrained) model of `model_config` (a `ModelConfig`, or a `Config`
    whose `model` section is used), e.g. to export and reload, or to start a custom loop."""
    model_config = getattr(model_config, "model", model_config)
    return build(model_config, nnx.Rngs(params=seed, dropout=seed))


def sample_scanpaths(model: Any, config: Any, name: str, feature_dir: str | os.PathLike[str], *,
                     samples: int = 1, seed: int = 0,
                     readers: Sequence[Scanpath] | None = None) -> list[Scanpath]:
    """Sampled scanpaths of CT `name` from its features in `feature_dir` (`<name>.npy`).

    samples: scanpaths to draw; with `readers` (the CT's ground truth), `samples` per reader,
    each taking its reader's subject, in the order `evaluate`'s original protocol pairs them.
    Deterministic for `seed`. Sampling settings (eval.min_length, data.z_extent, ...) come from
    `config`.
    """
    records = sample_records(model, config, [name], feature_dir, samples=samples, seed=seed,
                             readers={name: list(readers)} if readers else None)
    return records_to_scanpaths(records).get(name, [])
