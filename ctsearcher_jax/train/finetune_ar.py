"""ScanMatch-reward fine-tuning of an autoregressive model: its samples and their log-probabilities.

`train/finetune.py` runs the step; for an autoregressive architecture it calls these two:

* `draw_batch`: S = finetune.samples scanpaths per (CT, reader) of the batch with the model's own
  sampler (`model/sampling_ar.draw`: dropout off, temperature 1, no top-k, eval.min_length and
  the duration law of evaluation), outside the gradient. An unconditioned model draws the R x S
  scanpaths of a CT from one encoder pass (reader r takes samples r*S .. r*S + S - 1); a
  conditioned one draws each (CT, reader) from that reader's plan.
* `teacher_forced_terms`: the supervised loss of the batch (as training) and, from one
  teacher-forced pass over every drawn scanpath (dropout as in training), log p of each:
  sum over its steps of log softmax(logits)[drawn class] (STOP masked before min_length, the
  stop step included) + log density of each drawn offset and duration.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ctsearcher_jax.config import Config
from ctsearcher_jax.model.ct_searcher_ar import Fixations, offset_log_density
from ctsearcher_jax.model.losses import duration_log_pdf
from ctsearcher_jax.model.sampling_ar import ARDraw, class_log_probs, draw


def draw_batch(model: Any, batch: dict[str, jax.Array], key: jax.Array, config: Config) -> ARDraw:
    """S scanpaths per (CT, reader) slot of the batch: ARDraw with rows (B*R, S), CT-major."""
    b, r = batch["reader_mask"].shape
    s = config.finetune.samples
    options = dict(min_length=config.eval.min_length,
                   legacy_duration_sampling=config.eval.legacy_duration_sampling)
    frame = jnp.asarray(config.data.frame, jnp.float32)
    if config.model.reader_conditioned:
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(b * r, dtype=jnp.uint32))
        drawn = draw(model, jnp.repeat(batch["tokens"], r, axis=0), keys, frame,
                     jnp.repeat(batch["z_extent"], r), batch["reader_ids"].reshape(-1),
                     num_samples=s, **options)
    else:
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(b, dtype=jnp.uint32))
        drawn = draw(model, batch["tokens"], keys, frame, batch["z_extent"], None,
                     num_samples=r * s, **options)
        drawn = jax.tree.map(lambda a: a.reshape(b * r, s, *a.shape[2:]), drawn)
    return jax.tree.map(jax.lax.stop_gradient, drawn)


def teacher_forced_terms(model: Any, drawn: ARDraw, batch: dict[str, jax.Array],
                         config: Config) -> tuple[jax.Array, jax.Array]:
    """(supervised loss (), log p (B*R, S)) with dropout on; see the module docstring."""
    train, ev = config.train, config.eval
    spatial, duration = model.loss_terms(batch, legacy_epsilon=train.legacy_loss_epsilon,
                                         deterministic=False)
    supervised = spatial + train.duration_loss_weight * duration
    b, r = batch["reader_mask"].shape
    rows, s, length = drawn.fixations.classes.shape
    flat = Fixations(*(a.reshape(rows * s, *a.shape[2:]) for a in drawn.fixations))
    readers = batch["reader_ids"] if config.model.reader_conditioned else None
    out = model(batch["tokens"], readers, fixations=flat, deterministic=False)
    steps = jnp.arange(length)
    log_p_all = class_log_probs(out.spatial_logits, steps, grid=config.model.grid,
                                min_length=ev.min_length)
    log_p_class = jnp.take_along_axis(log_p_all, flat.classes[..., None], axis=-1)[..., 0]
    lengths = drawn.sampled.lengths.reshape(-1)[:, None]
    class_mask, fixation_mask = steps <= lengths, steps < lengths
    # the sampler's law: sqrt(sigma2) scale, or sigma2 itself (variance sigma2^2) when legacy
    scale_log_var = 2 * out.duration_log_sigma2 if ev.legacy_duration_sampling \
        else out.duration_log_sigma2
    t = jnp.where(fixation_mask, flat.durations, 1.0)
    log_p_fixation = (duration_log_pdf(t, out.duration_mu, scale_log_var)
                      + offset_log_density(flat.offsets, out.offset_logits, out.offset_mean,
                                           out.offset_log_scale))
    log_p = jnp.sum(jnp.where(class_mask, log_p_class, 0.0)
                    + jnp.where(fixation_mask, log_p_fixation, 0.0), axis=-1)
    return supervised, log_p.reshape(rows, s)

