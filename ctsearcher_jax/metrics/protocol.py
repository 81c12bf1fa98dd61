"""Evaluation protocols: which pairs are scored and how the scores are aggregated.

A scanpath here is an (n, 4) float64 array `[x, y, z, duration_s]` in the gaze frame. A CT is
a list of ground-truth scanpaths (one per reader) and a list of predicted scanpaths.

* `original_protocol`: the original evaluation (`comprehensive_evaluation_by_subject`): each
  prediction is scored against the reader of the same CT with the same subject
  (`pairs_by_subject`). Without subjects, reader r's subject is r and prediction i's is
  i mod #readers for i < repeats * #readers (R blocks of one prediction per reader, as sampling
  writes them; later predictions are not scored), which is the original's index rule. Means and
  population stds (ddof 0) over all scored pairs of all CTs; MultiMatch rows with a NaN are
  dropped (as the original's `is_eliminating_nan`); ScanMatch and SED keep every value, so a
  NaN ScanMatch (both symbol sequences empty) makes the mean NaN, as in the original.
  `MultiMatch mean` = mean of the five MultiMatch means.
* `all_pairs_protocol`: every prediction of a CT against every reader of the same CT.
* `human_consistency`: every reader against every *other* reader of the same CT (never itself):
  the ceiling a model can be compared with.

Families and their scoring functions come from `metrics/registry.py`. Pairs are scored in
chunks of at most `PAIR_CHUNK_PAIRS` pairs and `PAIR_CHUNK_CELLS` alignment cells (the sum of
n x m over the chunk's pairs), one batch per family and chunk: memory grows with the largest
pair, not with the number of pairs, and results do not depend on the chunking. A pair larger
than `MAX_PAIR_CELLS` cells, or than `EXACT_MAX_CELLS` for MultiMatch `exact` (whose Dijkstra
graph needs about 120 bytes per cell, measured at 1,000 x 1,000), is refused with a DataError
naming it.
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from ctsearcher_jax.errors import DataError
from ctsearcher_jax.metrics.multimatch import NAMES
from ctsearcher_jax.metrics.registry import DEFAULT_FAMILIES, FAMILY, METRICS, check_families, resolve
from ctsearcher_jax.metrics.scanmatch import default_threads
from ctsearcher_jax.metrics.stats import summary_stats

# Fewest pairs per call when scoring reports progress (enough to keep the host threads busy).
PROGRESS_CHUNK = 16


# Working-set bounds (docs/failure-behaviour.md). A chunk holds at most this many pairs and
# this many DP cells (sum of n x m fixations); one pair larger than the cell budget is a chunk
# of its own.
PAIR_CHUNK_PAIRS = 2048
PAIR_CHUNK_CELLS = 1 << 24
# The largest pair scored at all: 10,000 x 10,000 fixations (the dataset's scanpaths have at
# most a few hundred); MultiMatch `exact` builds an n x m graph, so it stops at 2,000 x 2,000.
MAX_PAIR_CELLS = 100_000_000
EXACT_MAX_CELLS = 4_000_000


@dataclasses.dataclass(frozen=True)
class Pair:
    """One scored pair: CT index, which ground-truth reader, which prediction."""

    ct: int
    gt_index: int
    pred_index: int


def check_scanpath(arr: np.ndarray, what: str) -> np.ndarray:
    """Validate one (n, 4) scanpath for scoring; raise DataError naming `what`.

    An empty scanpath is an error (the original evaluation crashes on it), as is NaN/inf.
    """
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise DataError(f"{what}: expected an (n, 4) array of [x, y, z, duration_s], got shape "
                        f"{arr.shape}")
    if arr.shape[0] == 0:
        raise DataError(f"{what}: empty scanpath (0 fixations); every scanpath needs >= 1 fixation")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{what}: contains NaN or infinite values")
    return arr


# ----------------------------------------------------------------------------- pairing

def pairs_by_subject(gt_subjects: Sequence[Sequence[Hashable]],
                     predictions: Sequence[tuple[int, Hashable | None]], *,
                     describe: Callable[[int], str] | None = None) -> list[Pair]:
    """The original protocol's pairs, in the order of `predictions`.

    gt_subjects[c]: the subject of each reader of CT c. predictions[k] = (c, subject): the
    prediction is CT c's next one (pred_index counts per CT in this order) and is paired with
    the first reader of CT c with that subject; subject None = not scored. A subject that is
    not a reader of its CT is a DataError starting with `describe(k)`.
    """
    describe = describe or (lambda k: f"prediction {k}")
    pairs, counts = [], [0] * len(gt_subjects)
    for k, (c, subject) in enumerate(predictions):
        j, counts[c] = counts[c], counts[c] + 1
        if subject is None:
            continue
        readers = list(gt_subjects[c])
        if subject not in readers:
            raise DataError(f"{describe(k)}: subject {subject!r} is not a reader of this CT "
                            f"(readers {readers}); the original protocol pairs a prediction with "
                            f"its reader (use --protocol all-pairs to score against every reader)")
        pairs.append(Pair(c, readers.index(subject), j))
    return pairs


def pairs_all(num_readers: Sequence[int], predictions: Sequence[int]) -> list[Pair]:
    """Every prediction against every reader of its CT, in the order of `predictions`.

    predictions[k] = c: the prediction is CT c's next one; num_readers[c]: readers of CT c.
    """
    pairs, counts = [], [0] * len(num_readers)
    for c in predictions:
        j, counts[c] = counts[c], counts[c] + 1
        pairs.extend(Pair(c, g, j) for g in range(num_readers[c]))
    return pairs


def pairs_human(num_readers: Sequence[int]) -> list[Pair]:
    """Each reader (as prediction) against every other reader of its CT, never itself."""
    return [Pair(c, gi, pi) for c, n in enumerate(num_readers)
            for pi in range(n) for gi in range(n) if gi != pi]


# ----------------------------------------------------------------------------- scoring

def _scorer_options(family: str, options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k in FAMILY[family].options}


def _check_options(options: dict[str, Any]) -> None:
    known = {o for f in FAMILY.values() for o in f.options}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown scoring options {unknown}; known: {sorted(known)}")


def score_pairs(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray],
                families: Sequence[str] = DEFAULT_FAMILIES, **options) -> dict[str, np.ndarray]:
    """Per-pair scanpath metrics of (gt[k], pred[k]) pairs: {metric name: (K,) float64}.

    families: pair families of the registry (per-CT families such as saliency: `score_cts`).
    options: the families' keyword options (multimatch_alignment, multimatch_padding, sed_code...).
    """
    check_families(families)
    _check_options(options)
    jobs = [FAMILY[f] for f in families if FAMILY[f].unit == "pair"]

    def run(family):
        return resolve(family.scorer)(gt, pred, **_scorer_options(family.name, options))

    # The families are independent: on a multi-core host they run side by side (the kernels
    # release the GIL), which fills the cores while one family's last pairs finish.

    if len(jobs) > 1 and default_threads() > 1:
        with ThreadPoolExecutor(len(jobs)) as pool:
            parts = list(pool.map(run, jobs))
    else:
        parts = [run(job) for job in jobs]
    out: dict[str, np.ndarray] = {}
    for part in parts:
        out.update(part)
    return out


def check_pair_sizes(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray], families: Sequence[str],
                     options: dict[str, Any], describe: Callable[[int], str]) -> None:
    """DataError naming the first pair beyond `MAX_PAIR_CELLS` (or `EXACT_MAX_CELLS` for
    MultiMatch `exact`), before any scoring starts."""
    exact = "multimatch" in families and options.get("multimatch_alignment", "exact") == "exact"
    for k, (g, p) in enumerate(zip(gt, pred)):
        cells = len(g) * len(p)
        if cells > MAX_PAIR_CELLS:
            raise DataError(f"{describe(k)}: {len(g)} x {len(p)} fixations ({cells:.3g} alignment "
                            f"cells) is beyond the {MAX_PAIR_CELLS:.0e}-cell limit of one pair; "
                            "not a scanpath of a CT reading (split or subsample it)")
        if exact and cells > EXACT_MAX_CELLS:
            raise DataError(f"{describe(k)}: {len(g)} x {len(p)} fixations is beyond MultiMatch "
                            f"exact's limit of {EXACT_MAX_CELLS:,} cells (its graph needs about "
                            "120 bytes per cell); use --multimatch-alignment dp, which needs a few "
                            "bytes per cell")


def _chunks(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray],
            max_pairs: int | None = None) -> list[tuple[int, int]]:
    """Consecutive [start, stop) ranges within the chunk budgets (a big pair alone)."""
    max_pairs = min(max_pairs or PAIR_CHUNK_PAIRS, PAIR_CHUNK_PAIRS)
    out, start, cells = [], 0, 0
    for k, (g, p) in enumerate(zip(gt, pred)):
        c = len(g) * len(p)
        if k > start and (k - start >= max_pairs or cells + c > PAIR_CHUNK_CELLS):
            out.append((start, k))
            start, cells = k, 0
        cells += c
    if len(gt) > start:
        out.append((start, len(gt)))
    return out


def score_pairs_chunked(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray],
                        families: Sequence[str] = DEFAULT_FAMILIES, *,
                        progress: Callable[[int, int], None] | None = None,
                        **options) -> dict[str, np.ndarray]:
    """`score_pairs` over chunks of pairs (module docstring): same values, bounded memory.

    progress: `progress(done, total)` after each chunk; chunks are then also at most about a
    twentieth of the pairs (and at least `PROGRESS_CHUNK`), so the reports come regularly.
    """
    total = len(gt)
    max_pairs = max(PROGRESS_CHUNK, math.ceil(total / 20)) if progress is not None else None
    if progress is not None:
        progress(0, total)
    parts = []
    for a, b in _chunks(gt, pred, max_pairs):
        parts.append(score_pairs(gt[a:b], pred[a:b], families, **options))
        if progress is not None:
            progress(b, total)
    if not parts:
        return {}
    return {n: np.concatenate([part[n] for part in parts]) for n in parts[0]}


def score_cts(gt_cts: Sequence[Sequence[np.ndarray]], pred_cts: Sequence[Sequence[np.ndarray]],
              families: Sequence[str], **options) -> dict[str, np.ndarray]:
    """Per-CT metrics of the "ct" families among `families`: {metric name: (C,) float64}."""
    check_families(families)
    _check_options(options)
    out: dict[str, np.ndarray] = {}
    for f in families:
        if FAMILY[f].unit == "ct":
            out.update(resolve(FAMILY[f].scorer)(gt_cts, pred_cts, **_scorer_options(f, options)))
    return out


def aggregate(scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean, population std and count per metric, the original's way (see module docstring);
    a family with an `aggregate` in the registry summarises its own metrics."""
    out: dict[str, dict[str, float]] = {}
    by_family: dict[str, dict[str, np.ndarray]] = {}
    for n, v in scores.items():
        family = METRICS[n].family if n in METRICS else None
        by_family.setdefault(family, {})[n] = v
    for family, part in by_family.items():
        custom = FAMILY[family].aggregate if family is not None else None
        if custom is not None:
            out.update(resolve(custom)(part))
        else:
            out.update({n: summary_stats(v) for n, v in part.items()})
    return {n: out[n] for n in METRICS if n in out}


def to_original_layout(agg: dict[str, dict[str, float]]) -> tuple[dict, dict]:
    """(cur_metrics, cur_metrics_std) nested like the original's return value."""
    cur: dict = {}
    std: dict = {}
    if "multimatch_vector" in agg:
        cur["MultiMatch"] = {n: agg[f"multimatch_{n}"]["mean"] for n in NAMES}
        cur["MultiMatch"]["mean"] = agg["multimatch_mean"]["mean"]
        std["MultiMatch"] = {n: agg[f"multimatch_{n}"]["std"] for n in NAMES}
    if "scanmatch_with_duration" in agg:
        cur["ScanMatch"] = {"w/o duration": agg["scanmatch_without_duration"]["mean"],
                            "with duration": agg["scanmatch_with_duration"]["mean"]}
        std["ScanMatch"] = {"w/o duration": agg["scanmatch_without_duration"]["std"],
                            "with duration": agg["scanmatch_with_duration"]["std"]}
    if "sed" in agg:
        cur["VAME"] = {"SED": agg["sed"]["mean"]}
        std["VAME"] = {"SED": agg["sed"]["std"]}
    return cur, std


@dataclasses.dataclass
class ProtocolResult:
    """Scored pairs, their per-pair (or per-CT) values and the aggregate."""

    pairs: list[Pair]
    scores: dict[str, np.ndarray]
    summary: dict[str, dict[str, float]]


def run_pairs(pairs: list[Pair], gt_cts: Sequence[Sequence[np.ndarray]],
              pred_cts: Sequence[Sequence[np.ndarray]], families: Sequence[str], *,
              gt_is_pred: bool = False, ct_inputs: tuple | None = None,
              progress: Callable[[int, int], None] | None = None,
              describe: Callable[[int], str] | None = None, **options) -> ProtocolResult:
    """Score explicit pairs (validating every scanpath used) and aggregate them.

    Per-CT families score `ct_inputs` = (gt_cts, pred_cts) when given, else the CTs themselves.
    progress: called as `progress(done, total)` pairs; the pairs are then scored in about 20
    chunks (each pair's scores do not depend on the others, so the values are the same).
    describe(k): how error messages name pair k (default: indices).
    """
    check_families(families)
    for c, readers in enumerate(gt_cts):
        for r, g in enumerate(readers):
            check_scanpath(g, f"ground truth: CT {c}, reader {r}")
    if not gt_is_pred:
        for c, preds in enumerate(pred_cts):
            for r, p in enumerate(preds):
                check_scanpath(p, f"prediction: CT {c}, scanpath {r}")
    gt = [np.asarray(gt_cts[p.ct][p.gt_index], np.float64) for p in pairs]
    pred = [np.asarray(pred_cts[p.ct][p.pred_index], np.float64) for p in pairs]
    describe = describe or (lambda k: f"CT {pairs[k].ct}, reader {pairs[k].gt_index} vs "
                                      f"prediction {pairs[k].pred_index}")
    check_pair_sizes(gt, pred, families, options, describe)
    scores = score_pairs_chunked(gt, pred, families, progress=progress, **options) if pairs else {}
    summary = aggregate(scores)
    per_ct = score_cts(*(ct_inputs or (gt_cts, pred_cts)), families, **options)
    scores.update(per_ct)
    summary.update({n: summary_stats(v) for n, v in per_ct.items()})
    return ProtocolResult(pairs, scores, {n: summary[n] for n in METRICS if n in summary})


def _index_subjects(gt_cts, pred_cts, repeats: int):
    """The original's index rule as subjects (module docstring)."""
    gt_subjects = [list(range(len(readers))) for readers in gt_cts]
    predictions = [(c, i % len(readers) if i < repeats * len(readers) else None)  # len 0: None
                   for c, (readers, preds) in enumerate(zip(gt_cts, pred_cts))
                   for i in range(len(preds))]
    return gt_subjects, predictions


def original_protocol(gt_cts: Sequence[Sequence[np.ndarray]], pred_cts: Sequence[Sequence[np.ndarray]],
                      families: Sequence[str] = DEFAULT_FAMILIES, repeats: int = 1, *,
                      gt_subjects: Sequence[Sequence[Hashable]] | None = None,
                      pred_subjects: Sequence[Sequence[Hashable]] | None = None,
                      **options) -> ProtocolResult:
    """Each prediction against the reader with its subject (module docstring), aggregated.

    gt_cts[c]: the readers' scanpaths of CT c; pred_cts[c]: its predictions; gt_subjects /
    pred_subjects: their subjects, in the same nesting (both or neither; without them the
    index rule with `repeats` applies). options go to `score_pairs`.
    """
    if len(gt_cts) != len(pred_cts):
        raise DataError(f"{len(pred_cts)} CTs with predictions but {len(gt_cts)} with ground truth")
    if (gt_subjects is None) != (pred_subjects is None):
        raise ValueError("original_protocol: give both gt_subjects and pred_subjects, or neither")
    if gt_subjects is None:
        gt_subjects, predictions = _index_subjects(gt_cts, pred_cts, repeats)
    else:
        predictions = [(c, s) for c, subjects in enumerate(pred_subjects) for s in subjects]
    pairs = pairs_by_subject(gt_subjects, predictions,
                             describe=lambda k: f"CT {predictions[k][0]}, prediction {k}")
    return run_pairs(pairs, gt_cts, pred_cts, families, **options)


def all_pairs_protocol(gt_cts: Sequence[Sequence[np.ndarray]], pred_cts: Sequence[Sequence[np.ndarray]],
                       families: Sequence[str] = DEFAULT_FAMILIES, **options) -> ProtocolResult:
    """Every prediction of a CT against every reader of the same CT."""
    if len(gt_cts) != len(pred_cts):
        raise DataError(f"{len(pred_cts)} CTs with predictions but {len(gt_cts)} with ground truth")
    pairs = pairs_all([len(r) for r in gt_cts],
                      [c for c, preds in enumerate(pred_cts) for _ in preds])
    return run_pairs(pairs, gt_cts, pred_cts, families, **options)


def human_consistency(gt_cts: Sequence[Sequence[np.ndarray]],
                      families: Sequence[str] = DEFAULT_FAMILIES, **options) -> ProtocolResult:
    """Each reader (as prediction) against every other reader of the same CT, never itself.

    CTs with a single reader contribute nothing. Per-CT families (saliency) compare each reader's
    fixations with the pooled fixations of the other readers.
    """
    preds, gts = [], []
    for readers in gt_cts:
        for k in range(len(readers)):
            others = [r for m, r in enumerate(readers) if m != k]
            if others:
                preds.append([readers[k]])
                gts.append(others)
    return run_pairs(pairs_human([len(r) for r in gt_cts]), gt_cts, gt_cts, families,
                     gt_is_pred=True, ct_inputs=(gts, preds), **options)
