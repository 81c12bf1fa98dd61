"""ScanMatch-reward fine-tuning: the paper-era self-critical policy-gradient stage, as a train step.

`ctsearcher finetune --model PATH --workdir W` derives a run config from the model's own
(`finetune_config`: `finetune.source` set, lr x `finetune.lr_scale`, no warm-up, linear decay over
`finetune.epochs`) and runs the ordinary training loop (`train/loop.py`): same data pipeline,
mesh and sharding, checkpoints, exact resume, evaluators, trackers and export. Only two things
differ, both chosen by `finetune.source`: the state starts from the source model's weights
(`start_from_source`, fresh optimizer) and each step is `make_finetune_step`:

    outputs      one forward (dropout as in training) per CT, decoder per reader when conditioned
    samples      S = finetune.samples scanpaths per (CT, reader) from those outputs (the jit
                 sampler's `draw_from_outputs`, eval.min_length and the duration law as evaluation)
    reward       hmean(ScanMatch with, without duration) of each sample against that reader's
                 recorded scanpath, computed in the step (`metrics/scanmatch/reward.py`, float32)
    baseline     the mean reward of the S samples of the same (CT, reader) (self-critical)
    log p        sum over steps of log softmax(logits)[sampled class] (STOP masked before
                 min_length, the stop step included) + log-normal log-density of each duration
    loss         -mean((reward - baseline) * log p) + finetune.supervised_weight * supervised loss

An autoregressive model (`model/ct_searcher_ar.py`) draws its S samples per (CT, reader) with its
own sampler before the gradient (dropout off, temperature 1, no top-k; `train/finetune_ar.py`),
and log p is the sum of its teacher-forced log-probabilities of each drawn class, offset and
duration, from one forward pass (dropout as in training) over every drawn scanpath.

The sampling key is `fold_in(fold_in(key, step), 1)`, so samples, like dropout, depend on
(seed, step) alone and a resumed run repeats them. Logged: loss, pg_loss, reward_mean,
reward_std, supervised (the supervised loss of the same forward), grad_norm, lr.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from ctsearcher_jax import config as config_lib
from ctsearcher_jax.config import Config
from ctsearcher_jax.errors import CheckpointError, ConfigError
from ctsearcher_jax.metrics.scanmatch import default_group_size, devices_of, hmean_reward
from ctsearcher_jax.model.factory import is_autoregressive
from ctsearcher_jax.model.losses import duration_log_pdf, scanpath_loss
from ctsearcher_jax.model.positional import PositionalTable
from ctsearcher_jax.model.sampling import draw_from_outputs
from ctsearcher_jax.model.serialization import load_model, resolve_model_dir
from ctsearcher_jax.train import finetune_ar
from ctsearcher_jax.train import step as step_lib
from ctsearcher_jax.train.step import (
    apply_update,
    batch_targets,
    jit_train_step,
    pack,
    reader_outputs,
    unpack,
)

SAMPLE_STREAM = 1  # fold_in constant separating the sampling key from the dropout key


def finetune_config(source: str | Path, overrides: list[str] | None = None) -> Config:
    """The fine-tuning config of the model in `source` (a model folder or a training workdir).

    Starts from the model's resolved config, applies `overrides` (`finetune.*`, `data.*`, ...),
    then sets finetune.source, train.lr = lr * finetune.lr_scale, warm-up 0 and
    train.epochs = finetune.epochs.
    """
    model_dir = resolve_model_dir(source)
    base = config_lib.load(model_dir / "config.yaml", overrides or [])
    if any(o.split("=", 1)[0].strip().startswith("model.") for o in overrides or []):
        raise ConfigError("model.* cannot change when fine-tuning: the source model fixes it")
    ft = dataclasses.replace(base.finetune, source=str(model_dir.resolve()))
    train = dataclasses.replace(base.train, lr=base.train.lr * ft.lr_scale, warmup_epochs=0,
                                epochs=ft.epochs)
    return dataclasses.replace(base, train=train, finetune=ft)


def start_from_source(config: Config, state, shardings):
    """`state` with the model weights of `config.finetune.source` (optimizer state untouched)."""
    model, source_config = load_model(config.finetune.source)
    if source_config.model != config.model:
        raise CheckpointError(f"{config.finetune.source}: its model config differs from the run's "
                              f"(model.* cannot change when fine-tuning)")
    weights = nnx.state(model, nnx.Any(nnx.Param, PositionalTable))
    flat = dict(nnx.to_flat_state(weights))
    current = dict(nnx.to_flat_state(state.model))
    missing = sorted(".".join(map(str, k)) for k in flat if k not in current)
    if missing:
        raise CheckpointError(f"{config.finetune.source}: tensors {missing[:3]} do not fit the run")
    for path, variable in flat.items():
        current[path].set_value(variable.get_value())
    model_state = nnx.from_flat_state(current)
    new = dataclasses.replace(state, model=model_state)
    return jax.device_put(new, shardings)


def make_step(graphdef, config: Config, schedule: Callable, state_shardings=None,
              metric_sharding=None, platform: str | None = None):
    """The run's train step: supervised (`step.make_train_step`) or fine-tuning (below).

    platform: what the step is compiled for when that is not its devices' platform (`ctsearcher
    plan` lowers for "cuda" over this host's CPU devices); only the fine-tuning reward's kernel
    depends on it (`reward_options`).
    """
    if not config.finetune.source:
        return step_lib.make_train_step(graphdef, config.train, schedule, state_shardings,
                                        metric_sharding)
    return make_finetune_step(graphdef, config, schedule, state_shardings, metric_sharding,
                              platform=platform)


def reward_options(devices=None, platform: str | None = None) -> dict:
    """`hmean_reward`'s kernel options for a step that runs on `devices` (None: the default
    backend's) and is compiled for `platform` (None: theirs). The kernel follows where the step
    runs (`metrics.scanmatch.choose_kernel`); a step compiled for an accelerator from a CPU host
    gets the jnp stripe kernel, never the native CPU custom call."""
    if platform is not None and platform != "cpu":
        return {"kernel": "stripe", "group_size": None, "devices": devices}
    return {"group_size": default_group_size(devices), "devices": devices}


def policy_gradient(outputs, shared: bool, batch, key, config: Config, reward=None):
    """(pg loss, stats) of one batch; see the module docstring. outputs: (B, ...) when `shared`
    else (B*R, ...). stats: reward_mean, reward_std over real (CT, reader) pairs and samples.
    reward: `reward_options` of the step (None: for the default backend's devices)."""
    ft, ev = config.finetune, config.eval
    logits, mu, log_sigma2 = outputs
    b, r = batch["reader_mask"].shape
    if shared:  # one output per CT serves each of its readers
        logits, mu, log_sigma2 = (jnp.repeat(x, r, axis=0) for x in (logits, mu, log_sigma2))
    z = jnp.repeat(batch["z_extent"], r)
    drawn = draw_from_outputs(jax.lax.stop_gradient(logits), jax.lax.stop_gradient(mu),
                              jax.lax.stop_gradient(log_sigma2), key, grid=config.model.grid,
                              num_samples=ft.samples, min_length=ev.min_length,
                              legacy_duration_sampling=ev.legacy_duration_sampling,
                              frame=config.data.frame, z_extent=z)
    length = logits.shape[1]
    steps = jnp.arange(length)
    early = steps < ev.min_length
    masked = logits.at[:, :, 0].set(jnp.where(early, -jnp.inf, logits[:, :, 0]))
    log_p_all = jax.nn.log_softmax(masked.astype(jnp.float32), axis=-1)  # (BR, L, K)
    log_p_class = jnp.take_along_axis(log_p_all[:, None], drawn.classes[..., None], axis=-1)[..., 0]
    lengths = drawn.lengths[..., None]
    class_mask = steps <= lengths  # fixations and the stop step
    duration_mask = steps < lengths
    # the sampler's law: sqrt(sigma2) scale, or sigma2 itself (variance sigma2^2) when legacy
    scale_log_var = 2 * log_sigma2 if ev.legacy_duration_sampling else log_sigma2
    t = jnp.where(duration_mask, drawn.durations, 1.0)
    log_p_dur = duration_log_pdf(t, mu[:, None], scale_log_var[:, None])
    log_p = jnp.sum(jnp.where(class_mask, log_p_class, 0.0) + jnp.where(duration_mask, log_p_dur, 0.0),
                    axis=-1)  # (BR, S)
    return self_critical_loss(log_p, drawn, batch, config, reward)


def self_critical_loss(log_p, drawn, batch, config: Config, reward=None):
    """(pg loss, stats) from the log-probabilities (B*R, S) of S drawn scanpaths per (CT, reader)
    (`drawn`: SampledScanpaths (B*R, S, L)): ScanMatch reward (`reward`: its `reward_options`, as
    `policy_gradient`), mean-of-samples baseline."""
    ft = config.finetune
    b, r = batch["reader_mask"].shape
    gaze = batch["gaze"].reshape(b * r, *batch["gaze"].shape[2:])
    gaze_length = batch["gaze_length"].reshape(-1)
    reward = hmean_reward(gaze[..., :3], gaze[..., 3], gaze_length, drawn.coords, drawn.durations,
                          drawn.lengths, duration_cap_s=ft.duration_cap_s,
                          **(reward_options() if reward is None else reward))  # (BR, S)
    reward = jax.lax.stop_gradient(reward)
    valid = ((batch["reader_mask"].reshape(-1) > 0) & (gaze_length > 0)).astype(jnp.float32)
    advantage = reward - jnp.mean(reward, axis=1, keepdims=True)
    count = jnp.maximum(jnp.sum(valid) * ft.samples, 1.0)
    pg = -jnp.sum(advantage * log_p * valid[:, None]) / count
    mean = jnp.sum(reward * valid[:, None]) / count
    std = jnp.sqrt(jnp.sum(jnp.square(reward - mean) * valid[:, None]) / count)
    return pg, {"reward_mean": mean, "reward_std": std}


def make_finetune_step(graphdef, config: Config, schedule: Callable, state_shardings=None,
                       metric_sharding=None, platform: str | None = None):
    """jit-compiled `step(state, rng_state, batch) -> (state, metrics)`; `state` is donated.
    platform: see `make_step`."""
    train, ft = config.train, config.finetune
    autoregressive = is_autoregressive(config.model.arch)
    if train.grad_accum_steps != 1:
        raise ConfigError("fine-tuning does not accumulate gradients: set train.grad_accum_steps=1 "
                          "(lower train.batch_size instead)")
    # The step runs on its shardings' devices (a mesh on accelerators or several CPU devices);
    # the reward picks its kernel from them, not from the default backend.
    options = reward_options(devices_of((state_shardings, metric_sharding)) or None, platform)

    def step(state, rng_state, batch):
        model, optimizer = unpack(graphdef, rng_state, state)
        key = jax.random.wrap_key_data(state.key)
        count = optimizer.step[...]
        step_key = jax.random.fold_in(key, count)
        nnx.reseed(model, dropout=step_key)
        sample_key = jax.random.fold_in(step_key, SAMPLE_STREAM)
        # autoregressive: sample before the gradient (dropout off), score in one teacher-forced pass
        drawn = finetune_ar.draw_batch(model, batch, sample_key, config) if autoregressive else None
        model_def, params, others = nnx.split(model, nnx.Param, ...)

        def loss_fn(params, others):
            others = jax.tree.map(lambda x: x, others)
            m = nnx.merge(model_def, params, others)
            if drawn is not None:
                supervised, log_p = finetune_ar.teacher_forced_terms(m, drawn, batch, config)
                pg, stats = self_critical_loss(log_p, drawn.sampled, batch, config, options)
                loss = pg + ft.supervised_weight * supervised
                return loss, (pg, supervised, stats, nnx.state(m, nnx.Not(nnx.Param)))
            outputs, shared = reader_outputs(m, batch, train=train, deterministic=False)
            supervised, _ = scanpath_loss(outputs, batch_targets(batch), batch["reader_mask"],
                                          duration_weight=train.duration_loss_weight,
                                          share_forward=shared,
                                          legacy_epsilon=train.legacy_loss_epsilon)
            pg, stats = policy_gradient(outputs, shared, batch, sample_key, config, options)
            loss = pg + ft.supervised_weight * supervised
            return loss, (pg, supervised, stats, nnx.state(m, nnx.Not(nnx.Param)))

        (loss, (pg, supervised, stats, others)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(params, others)
        grad_norm = apply_update(model, optimizer, grads, others)
        metrics = {"loss": loss, "pg_loss": pg, "supervised": supervised, **stats,
                   "grad_norm": grad_norm, "lr": jnp.asarray(schedule(count), jnp.float32)}
        return pack(model, optimizer, state.key), metrics

    return jit_train_step(step, state_shardings, metric_sharding)
