"""Evaluation protocols: which pairs are scored and how the scores are aggregated.

A scanpath here is an (n, 4) float64 array `[x, y, z, duration_s]` in the gaze frame. A CT is
a list of ground-truth scanpaths (one per reader) and a list of predicted scanpaths.

* `original_protocol`: the original evaluation (`comprehensive_evaluation_by_subject`):
  prediction i is scored against reader i of the same CT (i < min(#predictions, #readers); with
  `repeats` R, the predictions of a CT are R blocks of #readers, block r's prediction i against
  reader i). Means and population stds (ddof 0) over all scored pairs of all CTs; MultiMatch rows
  with a NaN are dropped (as the original's `is_eliminating_nan`); ScanMatch and SED keep every
  value, so a NaN ScanMatch (both symbol sequences empty) makes the mean NaN, as in the original.
  `MultiMatch mean` = mean of the five MultiMatch means.
* `all_pairs_protocol`: every prediction of a CT against every reader of the same CT.
* `human_consistency`: every reader against every *other* reader of the same CT (never itself):
  the ceiling a model can be compared with.

All pairs of a run are scored in one batch per metric (jit + vmap), so the protocols cost about
the same as one batched call.
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from ctsearcher_jax.errors import DataError
from ctsearcher_jax.metrics import multimatch as mm
from ctsearcher_jax.metrics import saliency as sal
from ctsearcher_jax.metrics import scanmatch as sm
from ctsearcher_jax.metrics import sed as sed_mod
from ctsearcher_jax.metrics.registry import DEFAULT_FAMILIES, FAMILIES, METRICS, metrics_of

PAIR_METRICS = ("scanmatch_with_duration", "scanmatch_without_duration", "multimatch_vector",
                "multimatch_direction", "multimatch_length", "multimatch_position",
                "multimatch_duration", "sed")


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


def score_pairs(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray],
                families: Sequence[str] = DEFAULT_FAMILIES, *, multimatch_alignment: str = "exact",
                sed_code: str = "legacy", multimatch_padding: bool = True) -> dict[str, np.ndarray]:
    """Per-pair scanpath metrics of (gt[k], pred[k]) pairs: {metric name: (K,) float64}.

    families: any of scanmatch, multimatch, sed (saliency is per CT, see `saliency_by_ct`).
    multimatch_padding: apply the original evaluation's padding (`multimatch.pad_like_original`).
    """
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise KeyError(f"unknown metric families {unknown}; choose from {list(FAMILIES)}")

    def scanmatch():
        return {"scanmatch_with_duration": sm.scanmatch_batch(gt, pred, sm.WITH_DURATION),
                "scanmatch_without_duration": sm.scanmatch_batch(gt, pred, sm.WITHOUT_DURATION)}

    def multimatch():
        if multimatch_padding:
            padded = [mm.pad_like_original(g, p) for g, p in zip(gt, pred)]
            mg, mp = [x[0] for x in padded], [x[1] for x in padded]
        else:
            mg, mp = list(gt), list(pred)
        res = mm.multimatch_batch(mg, mp, multimatch_alignment)
        return {f"multimatch_{name}": res[:, k] for k, name in enumerate(mm.NAMES)}

    def sed():
        return {"sed": sed_mod.sed_batch(gt, pred, sed_code).astype(np.float64)}

    jobs = [job for name, job in (("scanmatch", scanmatch), ("multimatch", multimatch), ("sed", sed))
            if name in families]
    # The families are independent: on a multi-core host they run side by side (the kernels
    # release the GIL), which fills the cores while one family's last pairs finish.
    if len(jobs) > 1 and sm.default_threads() > 1:
        with ThreadPoolExecutor(len(jobs)) as pool:
            parts = list(pool.map(lambda job: job(), jobs))
    else:
        parts = [job() for job in jobs]
    out: dict[str, np.ndarray] = {}
    for part in parts:
        out.update(part)
    return out


def summary_stats(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": int(values.size)}


def aggregate(scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean, population std and count per metric, the original's way (see module docstring)."""
    out: dict[str, dict[str, float]] = {}
    names = [f"multimatch_{n}" for n in mm.NAMES]
    if all(n in scores for n in names):
        rows = np.stack([scores[n] for n in names], axis=1)
        rows = rows[~np.isnan(rows.sum(axis=1))]
        for k, n in enumerate(names):
            out[n] = summary_stats(rows[:, k])
        out["multimatch_mean"] = {"mean": float(np.mean([out[n]["mean"] for n in names])),
                                  "std": math.nan, "n": int(rows.shape[0])}
    for n, v in scores.items():
        if n not in out:
            out[n] = summary_stats(v)
    return {n: out[n] for n in METRICS if n in out}


def to_original_layout(agg: dict[str, dict[str, float]]) -> tuple[dict, dict]:
    """(cur_metrics, cur_metrics_std) nested like the original's return value."""
    cur: dict = {}
    std: dict = {}
    if "multimatch_vector" in agg:
        cur["MultiMatch"] = {n: agg[f"multimatch_{n}"]["mean"] for n in mm.NAMES}
        cur["MultiMatch"]["mean"] = agg["multimatch_mean"]["mean"]
        std["MultiMatch"] = {n: agg[f"multimatch_{n}"]["std"] for n in mm.NAMES}
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
    """Scored pairs, their per-pair values and the aggregate."""

    pairs: list[Pair]
    scores: dict[str, np.ndarray]
    summary: dict[str, dict[str, float]]


def run_pairs(pairs: list[Pair], gt_cts: Sequence[Sequence[np.ndarray]],
         pred_cts: Sequence[Sequence[np.ndarray]], families: Sequence[str], *,
         gt_is_pred: bool = False, **kwargs) -> ProtocolResult:
    """Score explicit pairs (validating every scanpath used) and aggregate them."""
    for c, readers in enumerate(gt_cts):
        for r, g in enumerate(readers):
            check_scanpath(g, f"ground truth: CT {c}, reader {r}")
    if not gt_is_pred:
        for c, preds in enumerate(pred_cts):
            for r, p in enumerate(preds):
                check_scanpath(p, f"prediction: CT {c}, scanpath {r}")
    pair_families = [f for f in families if f != "saliency"]
    gt = [np.asarray(gt_cts[p.ct][p.gt_index], np.float64) for p in pairs]
    pred = [np.asarray(pred_cts[p.ct][p.pred_index], np.float64) for p in pairs]
    scores = score_pairs(gt, pred, pair_families, **kwargs) if pairs else {}
    summary = aggregate(scores)
    if "saliency" in families:
        s = saliency_by_ct(gt_cts, pred_cts)
        for n, v in s.items():
            scores[n] = v
            summary[n] = summary_stats(v)
        summary = {n: summary[n] for n in METRICS if n in summary}
    return ProtocolResult(pairs, scores, summary)


def original_protocol(gt_cts: Sequence[Sequence[np.ndarray]], pred_cts: Sequence[Sequence[np.ndarray]],
                      families: Sequence[str] = DEFAULT_FAMILIES, repeats: int = 1,
                      **kwargs) -> ProtocolResult:
    """Prediction i vs reader i per CT (R blocks of predictions with `repeats` R), aggregated.

    gt_cts[c]: the readers' scanpaths of CT c; pred_cts[c]: its predictions. kwargs go to
    `score_pairs` (multimatch_alignment, sed_code).
    """
    if len(gt_cts) != len(pred_cts):
        raise DataError(f"{len(pred_cts)} CTs with predictions but {len(gt_cts)} with ground truth")
    pairs = []
    for c, (readers, preds) in enumerate(zip(gt_cts, pred_cts)):
        g = len(readers)
        for r in range(repeats):
            block = list(range(r * g, min((r + 1) * g, len(preds))))
            pairs.extend(Pair(c, i - r * g, i) for i in block if i - r * g < g)
    return run_pairs(pairs, gt_cts, pred_cts, families, **kwargs)


def all_pairs_protocol(gt_cts: Sequence[Sequence[np.ndarray]], pred_cts: Sequence[Sequence[np.ndarray]],
                       families: Sequence[str] = DEFAULT_FAMILIES, **kwargs) -> ProtocolResult:
    """Every prediction of a CT against every reader of the same CT."""
    if len(gt_cts) != len(pred_cts):
        raise DataError(f"{len(pred_cts)} CTs with predictions but {len(gt_cts)} with ground truth")
    pairs = [Pair(c, gi, pi) for c, (readers, preds) in enumerate(zip(gt_cts, pred_cts))
             for pi in range(len(preds)) for gi in range(len(readers))]
    return run_pairs(pairs, gt_cts, pred_cts, families, **kwargs)


def human_consistency(gt_cts: Sequence[Sequence[np.ndarray]],
                      families: Sequence[str] = DEFAULT_FAMILIES, **kwargs) -> ProtocolResult:
    """Each reader (as prediction) against every other reader of the same CT, never itself.

    CTs with a single reader contribute nothing. Saliency (if asked) compares each reader's
    fixations with the pooled fixations of the other readers.
    """
    pairs = [Pair(c, gi, pi) for c, readers in enumerate(gt_cts)
             for pi in range(len(readers)) for gi in range(len(readers)) if gi != pi]
    pair_families = [f for f in families if f != "saliency"]
    result = run_pairs(pairs, gt_cts, gt_cts, pair_families, gt_is_pred=True, **kwargs)
    if "saliency" in families:
        preds, gts = [], []
        for readers in gt_cts:
            for k in range(len(readers)):
                others = [r for m, r in enumerate(readers) if m != k]
                if others:
                    preds.append([readers[k]])
                    gts.append(others)
        s = saliency_by_ct(gts, preds)
        for n, v in s.items():
            result.scores[n] = v
            result.summary[n] = summary_stats(v)
        result.summary = {n: result.summary[n] for n in METRICS if n in result.summary}
    return result


def saliency_by_ct(gt_cts: Sequence[Sequence[np.ndarray]], pred_cts: Sequence[Sequence[np.ndarray]],
                   **kwargs) -> dict[str, np.ndarray]:
    """3D saliency metrics per CT: pooled predictions vs pooled readers (see `saliency`)."""
    items = [(np.concatenate(list(g)), np.concatenate(list(p)))
             for g, p in zip(gt_cts, pred_cts) if len(g) and len(p)]
    if not items:
        return {n: np.zeros(0) for n in metrics_of(["saliency"])}
    return sal.saliency_scores([p for _, p in items], [g for g, _ in items], **kwargs)
