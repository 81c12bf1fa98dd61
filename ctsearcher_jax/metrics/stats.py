"""The summary of one metric's per-pair (or per-CT) scores: mean, population std, count.

Shared by the protocols' default aggregation and by the families that aggregate their own
scores (MultiMatch), so both summarise a column the same way.
"""

from __future__ import annotations

import math

import numpy as np


def summary_stats(values: np.ndarray) -> dict[str, float]:
    """`{"mean", "std", "n"}` of `values` (std with ddof 0, as the original; NaN for no values)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": int(values.size)}
