"""Scanpath and saliency metrics (jax.numpy, batched), equal to the original's numbers.

Modules: `scanmatch` (ScanMatch 3D), `multimatch` (MultiMatch 3D/2D, exact or dp alignment),
`sed` (string edit distance), `saliency` (3D CC, NSS, KLD, AUC-Judd), `dtw` (dynamic time
warping distance), `protocol` (which pairs are scored and how they are aggregated), `registry`
(every family with its scoring function and its metrics' directions). This package imports no
model code. Only the registry is imported here, so `import ctsearcher_jax.metrics` stays cheap.
"""

from ctsearcher_jax.metrics.registry import METRICS, MetricInfo, is_better, metric_info, metrics_of

__all__ = ["METRICS", "MetricInfo", "is_better", "metric_info", "metrics_of"]
