"""Evaluators run during training (big_vision style): `run(state)` yields `(name, value)` pairs.

Each evaluator declares the metric names it yields (`metric_names`), so a run checks at start-up
that `eval.best_metric` will exist. Every process runs every evaluator (they contain collectives);
only process 0 logs the values.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

import jax
import numpy as np


class Evaluator(Protocol):
    metric_names: tuple[str, ...]

    def run(self, state: Any) -> Iterable[tuple[str, float]]: ...


def scalar(x: jax.Array) -> float:
    """A replicated scalar as a Python float (works on every process of a multi-host run)."""
    return float(np.asarray(x.addressable_data(0)))


class LossEvaluator:
    """Training loss on the eval split (dropout off), exact over the split. Lower is better.

    Yields eval_loss, eval_spatial, eval_duration.
    """

    metric_names = ("eval_loss", "eval_spatial", "eval_duration")

    def __init__(self, *, eval_step, dataset, mesh, rng_state, duration_weight: float):
        self.eval_step = eval_step
        self.dataset = dataset
        self.mesh = mesh
        self.rng_state = rng_state
        self.duration_weight = duration_weight

    def run(self, state: Any) -> Iterable[tuple[str, float]]:
        from ctsearcher_jax.train.sharding import global_batch

        totals = {"spatial_sum": 0.0, "action_total": 0.0, "duration_sum": 0.0,
                  "duration_total": 0.0}
        for i in range(len(self.dataset)):
            sums = self.eval_step(state, self.rng_state, global_batch(self.mesh, self.dataset[i]))
            for k in totals:
                totals[k] += scalar(sums[k])
        spatial = totals["spatial_sum"] / max(totals["action_total"], 1e-12)
        duration = totals["duration_sum"] / max(totals["duration_total"], 1e-12)
        yield "eval_loss", spatial + self.duration_weight * duration
        yield "eval_spatial", spatial
        yield "eval_duration", duration
