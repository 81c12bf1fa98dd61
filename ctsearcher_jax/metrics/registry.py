"""Every metric family, its scoring function and its metrics with their directions.

A family is what `eval.metrics` / `evaluate --metrics` select; it is scored by one function
and reports one or more metrics. Checkpoint selection and any "best" comparison read the
direction from here (the original selected checkpoints with a fixed direction, which is wrong
for SED and KLD). Config validation, the `evaluate` CLI, the protocols and the report all read
this table, so a new metric is one module, one `Family` entry below and its tests (docs/metrics.md,
"Adding a metric").

Scoring functions are named as "module:function" and imported on first use, so importing this
table (config validation does) costs nothing. Their signatures, by `unit`:

  "pair": fn(gt, pred, **options) -> {metric: (K,) float64}, gt[k] vs pred[k], each an
          (n, 4) float64 `[x, y, z, duration_s]` scanpath in the gaze frame;
  "ct":   fn(gt_cts, pred_cts, **options) -> {metric: (C,) float64}, one value per CT that has
          both ground truth and predictions (their fixations pooled).

`options` are the keyword arguments the family declares in `options`; an optional `aggregate`
("module:function", `{metric: (K,)} -> {metric: {"mean", "std", "n"}}`) replaces the default
mean / population std / count per metric.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any, Callable, Literal


@dataclasses.dataclass(frozen=True)
class MetricInfo:
    """One reported number."""

    # Key used in reports, logs and `eval.best_metric`.
    name: str
    # True when a larger value means a better prediction.
    higher_is_better: bool
    # Family that computes it (`eval.metrics` / `--metrics` select families).
    family: str
    # One line for tables and docs.
    description: str


@dataclasses.dataclass(frozen=True)
class Family:
    """A group of metrics computed by one scoring function."""

    # Name used by `eval.metrics` and `evaluate --metrics`.
    name: str
    # "pair": scores (ground truth, prediction) scanpath pairs; "ct": scores pooled CTs.
    unit: Literal["pair", "ct"]
    # "module:function" computing every metric of the family (signature: module docstring).
    scorer: str
    # Its metrics in report order: (name, higher_is_better, description).
    metrics: tuple[tuple[str, bool, str], ...]
    # In the default set (the original evaluation's "all" = scanmatch, multimatch, sed).
    default: bool = False
    # Keyword options the scorer accepts (from `evaluate` flags / `eval.*` settings).
    options: tuple[str, ...] = ()
    # Optional "module:function" aggregating the family's per-pair scores (default: per metric).
    aggregate: str | None = None

    def infos(self) -> list[MetricInfo]:
        return [MetricInfo(n, hib, self.name, d) for n, hib, d in self.metrics]


# The families, in report order.
REGISTRY: tuple[Family, ...] = (
    Family("scanmatch", "pair", "ctsearcher_jax.metrics.scanmatch:score_pairs", (
        ("scanmatch_with_duration", True, "ScanMatch 3D, durations binned at 25 ms"),
        ("scanmatch_without_duration", True, "ScanMatch 3D, one symbol per fixation"),
    ), default=True),
    Family("multimatch", "pair", "ctsearcher_jax.metrics.multimatch:score_pairs", (
        ("multimatch_vector", True, "MultiMatch 3D vector (shape) similarity"),
        ("multimatch_direction", True, "MultiMatch 3D direction similarity"),
        ("multimatch_length", True, "MultiMatch 3D saccade-length similarity"),
        ("multimatch_position", True, "MultiMatch 3D position similarity"),
        ("multimatch_duration", True, "MultiMatch 3D duration similarity"),
        ("multimatch_mean", True, "mean of the five MultiMatch means"),
    ), default=True, options=("multimatch_alignment", "multimatch_padding"),
        aggregate="ctsearcher_jax.metrics.multimatch:aggregate_like_original"),
    Family("sed", "pair", "ctsearcher_jax.metrics.sed:score_pairs", (
        ("sed", False, "string edit distance (Levenshtein), raw count"),
    ), default=True, options=("sed_code",)),
    Family("saliency", "ct", "ctsearcher_jax.metrics.saliency:score_cts", (
        ("saliency_cc", True, "3D saliency: Pearson correlation with the GT saliency volume"),
        ("saliency_nss", True, "3D saliency: normalised scanpath saliency at GT fixations"),
        ("saliency_kld", False, "3D saliency: KL divergence GT || prediction (MIT epsilon)"),
        ("saliency_auc_judd", True, "3D saliency: AUC-Judd at GT fixations"),
    )),
    Family("dtw", "pair", "ctsearcher_jax.metrics.dtw:score_pairs", (
        ("dtw", False, "dynamic time warping distance of fixation positions, pixels (Z in slices)"),
    )),
)

# Evaluation protocols (`metrics/protocol.py`, `evaluation.evaluate`): which pairs are scored.
PROTOCOLS: tuple[str, ...] = ("original", "all-pairs", "human")

FAMILY: dict[str, Family] = {f.name: f for f in REGISTRY}
FAMILIES: tuple[str, ...] = tuple(FAMILY)
# The original evaluation's "all".
DEFAULT_FAMILIES: tuple[str, ...] = tuple(f.name for f in REGISTRY if f.default)
METRICS: dict[str, MetricInfo] = {m.name: m for f in REGISTRY for m in f.infos()}


def metric_info(name: str) -> MetricInfo:
    """Look a metric up; an unknown name raises KeyError listing the known ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)}") from None


def check_families(families: tuple[str, ...] | list[str]) -> None:
    """KeyError naming the unknown families and the known ones."""
    unknown = [f for f in families if f not in FAMILY]
    if unknown:
        raise KeyError(f"unknown metric families {unknown}; choose from {list(FAMILIES)}")


def metrics_of(families: tuple[str, ...] | list[str]) -> list[str]:
    """Metric names computed by the given families, in registry order."""
    check_families(families)
    return [n for n, m in METRICS.items() if m.family in families]


def resolve(target: str) -> Callable[..., Any]:
    """The function named by "module:function"."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def is_better(name: str, candidate: float, incumbent: float | None) -> bool:
    """Whether `candidate` beats `incumbent` for metric `name` (NaN never wins; None always loses)."""
    if candidate is None or math.isnan(candidate):
        return False
    if incumbent is None or math.isnan(incumbent):
        return True
    if metric_info(name).higher_is_better:
        return candidate > incumbent
    return candidate < incumbent
