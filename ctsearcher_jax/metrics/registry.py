"""Every metric the project reports, with its direction.

Checkpoint selection and any "best" comparison must read the direction from here (the original
selected checkpoints with a fixed direction, which is wrong for SED and KLD).
"""

from __future__ import annotations

import dataclasses
import math


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


def _m(name: str, higher: bool, family: str, description: str) -> tuple[str, MetricInfo]:
    return name, MetricInfo(name, higher, family, description)


METRICS: dict[str, MetricInfo] = dict([
    _m("scanmatch_with_duration", True, "scanmatch", "ScanMatch 3D, durations binned at 25 ms"),
    _m("scanmatch_without_duration", True, "scanmatch", "ScanMatch 3D, one symbol per fixation"),
    _m("multimatch_vector", True, "multimatch", "MultiMatch 3D vector (shape) similarity"),
    _m("multimatch_direction", True, "multimatch", "MultiMatch 3D direction similarity"),
    _m("multimatch_length", True, "multimatch", "MultiMatch 3D saccade-length similarity"),
    _m("multimatch_position", True, "multimatch", "MultiMatch 3D position similarity"),
    _m("multimatch_duration", True, "multimatch", "MultiMatch 3D duration similarity"),
    _m("multimatch_mean", True, "multimatch", "mean of the five MultiMatch means"),
    _m("sed", False, "sed", "string edit distance (Levenshtein), raw count"),
    _m("saliency_cc", True, "saliency", "3D saliency: Pearson correlation with the GT saliency volume"),
    _m("saliency_nss", True, "saliency", "3D saliency: normalised scanpath saliency at GT fixations"),
    _m("saliency_kld", False, "saliency", "3D saliency: KL divergence GT || prediction (MIT epsilon)"),
    _m("saliency_auc_judd", True, "saliency", "3D saliency: AUC-Judd at GT fixations"),
])

FAMILIES: tuple[str, ...] = ("scanmatch", "multimatch", "sed", "saliency")
# The original evaluation's "all".
DEFAULT_FAMILIES: tuple[str, ...] = ("scanmatch", "multimatch", "sed")


def metric_info(name: str) -> MetricInfo:
    """Look a metric up; an unknown name raises KeyError listing the known ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)}") from None


def metrics_of(families: tuple[str, ...] | list[str]) -> list[str]:
    """Metric names computed by the given families, in registry order."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise KeyError(f"unknown metric families {unknown}; choose from {list(FAMILIES)}")
    return [n for n, m in METRICS.items() if m.family in families]


def is_better(name: str, candidate: float, incumbent: float | None) -> bool:
    """Whether `candidate` beats `incumbent` for metric `name` (NaN never wins; None always loses)."""
    if candidate is None or math.isnan(candidate):
        return False
    if incumbent is None or math.isnan(incumbent):
        return True
    if metric_info(name).higher_is_better:
        return candidate > incumbent
    return candidate < incumbent
