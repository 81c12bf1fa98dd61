"""Evaluators run during training (big_vision style): `run(state, step)` yields `(name, value)`.

Each evaluator declares the metric names it yields (`metric_names`), so a run checks at start-up
that `eval.best_metric` will exist. Every process runs every evaluator (they contain collectives)
and gets the same values; only process 0 logs them.

* `LossEvaluator`: the training loss on the eval split (dropout off), exact over the split.
* `ScanpathMetricsEvaluator`: samples `eval.repeats` scanpaths per reader of every eval CT with the
  model's sampler and scores them with `evaluation.evaluate` (what `ctsearcher evaluate` runs),
  original protocol (each sample against its reader), on the `eval.metrics` families; logs a drilling figure (sampled vs ground truth) of the first CT.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from ctsearcher_jax.evaluation import evaluate
from ctsearcher_jax.metrics.registry import metrics_of
from ctsearcher_jax.model.factory import build
from ctsearcher_jax.model.generate import records_to_scanpaths, sample_records
from ctsearcher_jax.paths import child_path
from ctsearcher_jax.train.sharding import global_batch
from ctsearcher_jax.viz.scanpaths import plot_drilling


class Evaluator(Protocol):
    """What the training loop runs at each evaluation (every process, same values)."""

    # Names `run` yields, known before the run starts (checked against eval.best_metric).
    metric_names: tuple[str, ...]

    def run(self, state: Any, step: int) -> Iterable[tuple[str, float]]:
        """(name, value) pairs for the train state after optimizer step `step`."""
        ...


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

    def run(self, state: Any, step: int) -> Iterable[tuple[str, float]]:
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


def model_state_on_host(state: Any) -> Any:
    """The model part of a train state as numpy, on every process (a collective when multi-host)."""
    model_state = state.model
    if jax.process_count() > 1:
        model_state = multihost_utils.process_allgather(model_state, tiled=True)
    return jax.tree.map(np.asarray, model_state)


class ScanpathMetricsEvaluator:
    """Sampled scanpaths on the eval split scored with the metrics protocol (see module docstring).

    Sampling and scoring run on process 0 with a local copy of the model; the values are then
    broadcast, so every process selects checkpoints alike.
    """

    def __init__(self, config, eval_items, *, tracker=None, figure_dir=None):
        self.config = config
        self.items = list(eval_items)
        self.tracker = tracker
        self.figure_dir = figure_dir
        self.metric_names = tuple(metrics_of(list(config.eval.metrics)))
        self._model = None

    def _local_model(self):
        if self._model is None:
            self._model = build(self.config.model, nnx.Rngs(0))
        return self._model

    def _score(self, model_state, step: int) -> dict[str, float]:
        config = self.config
        model = self._local_model()
        nnx.update(model, model_state)
        names = [it.name for it in self.items]
        readers = {it.name: list(it.readers) for it in self.items}
        records = sample_records(model, config, names, config.data.feature_dir,
                                 samples=config.eval.repeats, seed=config.eval.seed,
                                 readers=readers)
        predicted = records_to_scanpaths(records)
        # sample_records gives every sample its reader's subject: the original protocol pairs
        # each with that reader (as `ctsearcher evaluate` does with a predictions file).
        report = evaluate([p for n in names for p in predicted[n]], self.items, split=None,
                          metrics=config.eval.metrics, protocol="original",
                          multimatch_alignment=config.eval.multimatch_alignment,
                          sed_code=config.eval.sed_code)
        if self.tracker is not None and self.figure_dir is not None:
            first = names[0]
            path = plot_drilling(readers[first], predicted[first],
                                 child_path(self.figure_dir, f"eval_step{step:07d}_{first}",
                                            ".png", where=f"CT {first!r}"),
                                 title=f"{first}, step {step}")
            self.tracker.log_image(step, "eval/scanpaths", path)
        return {n: report.mean(n) for n in self.metric_names if n in report.summary}

    def run(self, state: Any, step: int) -> Iterable[tuple[str, float]]:
        model_state = model_state_on_host(state)
        values = np.full(len(self.metric_names), np.nan)
        if jax.process_index() == 0:
            scored = self._score(model_state, step)
            values = np.array([scored.get(n, np.nan) for n in self.metric_names])
        if jax.process_count() > 1:
            values = np.asarray(multihost_utils.broadcast_one_to_all(values))
        yield from zip(self.metric_names, (float(v) for v in values))
