"""Train state, the jit-compiled train step (donated state) and the eval-loss step.

The train state is a `TrainState` (model variables, optimizer variables, the run's PRNG key).
Dropout streams are not part of it: every step reseeds them from `fold_in(key, optimizer step)`,
so the dropout masks are a function of (seed, step) alone and a resumed run draws the same masks
as an uninterrupted one.

Gradient accumulation splits the global batch into `A = train.grad_accum_steps` micro-batches and
scans over them. It is exact: the original normalises each loss by mask sums over the whole batch,
so micro-batch k's gradient is weighted by its share of those sums,

    grad = sum_k  (Ma_k / Ma) * grad spatial_k + w * (Md_k / Md) * grad duration_k

(Ma: summed action masks, Md: summed duration masks, over real readers), which equals the
gradient of the full-batch loss.

Per-reader mode (`share_forward_across_readers=False`) repeats each CT's tokens R times and runs
one forward per (CT, reader slot), as the original does; with dropout off it gives the same
numbers as the shared forward.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ctsearcher_jax.config import Config, TrainConfig
from ctsearcher_jax.data.targets import ScanpathTargets
from ctsearcher_jax.model.factory import build as build_model
from ctsearcher_jax.model.factory import is_autoregressive
from ctsearcher_jax.model.losses import repeat_for_readers, scanpath_loss
from ctsearcher_jax.train.sharding import replicated

Batch = dict[str, jax.Array]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a step changes, as one pytree of (sharded) arrays.

    model: the model's variables without RNG streams (parameters float32, dropout counters).
    optimizer: the optimizer's variables (AdamW moments, `step` = optimizer steps done).
    key: uint32 (2,) raw PRNG key of the run (`train.seed`); never advanced, folded with the step.
    """

    model: nnx.State
    optimizer: nnx.State
    key: jax.Array

    def checkpoint_tree(self) -> dict[str, Any]:
        """The layout checkpoints store: `{"nn": {0: model, 1: optimizer}, "key": key}`.

        It is the layout of the (model, optimizer) pair split together, which checkpoints were
        written in before this class existed; keeping it lets those checkpoints restore.
        """
        return {"nn": nnx.State({0: self.model, 1: self.optimizer}), "key": self.key}

    @classmethod
    def from_checkpoint_tree(cls, tree: dict[str, Any]) -> TrainState:
        return cls(model=tree["nn"][0], optimizer=tree["nn"][1], key=tree["key"])


def build(config: Config, tx: optax.GradientTransformation) -> tuple[nnx.Module, nnx.Optimizer]:
    """A freshly initialised model and its optimizer (parameters from `train.seed`)."""
    seed = config.train.seed
    model = build_model(config.model, nnx.Rngs(params=seed, dropout=seed))
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)


def split(model: nnx.Module, optimizer: nnx.Optimizer):
    """(graphdef, rng streams, everything else) of the (model, optimizer) pair."""
    return nnx.split((model, optimizer), nnx.RngState, ...)


def pack(model: nnx.Module, optimizer: nnx.Optimizer, key: jax.Array) -> TrainState:
    """The TrainState of a live (model, optimizer) pair (RNG streams left out)."""
    _, _, variables = split(model, optimizer)
    return TrainState(model=variables[0], optimizer=variables[1], key=key)


def unpack(graphdef, rng_state, state: TrainState) -> tuple[nnx.Module, nnx.Optimizer]:
    """Live (model, optimizer) from a TrainState; `graphdef`, `rng_state` from `split`."""
    return nnx.merge(graphdef, rng_state, nnx.State({0: state.model, 1: state.optimizer}))


def init_train_state(config: Config, tx: optax.GradientTransformation, *, mesh=None,
                     shardings=None):
    """Build the train state shape-first, then materialise it directly with `shardings`.

    Returns (graphdef, rng_state, state). Without `mesh` the state is abstract
    (ShapeDtypeStructs, rng_state None): used to compute shardings and checkpoint restore targets.
    """
    def init():
        model, optimizer = build(config, tx)
        key = jax.random.key_data(jax.random.key(config.train.seed))
        return pack(model, optimizer, key), split(model, optimizer)[1]

    graphdef, _, _ = nnx.eval_shape(lambda: split(*build(config, tx)))
    abstract, abstract_rng = jax.eval_shape(init)
    if mesh is None:
        return graphdef, None, abstract

    rep = replicated(mesh)
    # The rng streams are reseeded every step, so only their structure matters; they are built
    # as replicated global arrays so that jit accepts them on every process.
    state, rng_state = jax.jit(init, out_shardings=(shardings, jax.tree.map(lambda _: rep,
                                                                              abstract_rng)))()
    return graphdef, rng_state, state


def batch_targets(batch: Batch) -> ScanpathTargets:
    return ScanpathTargets(batch["spatial"], batch["duration"], batch["action_mask"],
                           batch["duration_mask"])


def mask_totals(batch: Batch) -> tuple[jax.Array, jax.Array]:
    """(Ma, Md): summed action and duration masks over the real readers of the batch."""
    readers = batch["reader_mask"][..., None]
    return (jnp.sum(batch["action_mask"] * readers), jnp.sum(batch["duration_mask"] * readers))


def loss_terms(model: nnx.Module, batch: Batch, *, train: TrainConfig,
               deterministic: bool) -> tuple[jax.Array, jax.Array]:
    """(spatial, duration) losses of one (micro-)batch, each normalised by its own mask sums."""
    if is_autoregressive(model.config.arch):  # teacher forcing on each reader's own fixations
        return model.loss_terms(batch, legacy_epsilon=train.legacy_loss_epsilon,
                                deterministic=deterministic)
    outputs, shared = reader_outputs(model, batch, train=train, deterministic=deterministic)
    _, parts = scanpath_loss(outputs, batch_targets(batch), batch["reader_mask"],
                             duration_weight=train.duration_loss_weight,
                             share_forward=shared, legacy_epsilon=train.legacy_loss_epsilon)
    return parts["spatial"], parts["duration"]


def reader_outputs(model: nnx.Module, batch: Batch, *, train: TrainConfig,
                   deterministic: bool) -> tuple[Any, bool]:
    """The model's outputs for every reader slot of the batch, and whether they are shared.

    Unconditioned model: (B, ...) shared by the readers of a CT, or (B*R, ...) from one forward
    per reader slot when `share_forward_across_readers` is off (as the original). Conditioned
    model: always (B*R, ...), each reader's own; with sharing on the encoder still runs once per
    CT (only the decoder runs per reader). Returns (outputs, True when (B, ...)).
    """
    tokens = batch["tokens"]
    readers = batch["reader_mask"].shape[1]
    if model.config.reader_conditioned:
        ids = batch["reader_ids"]
        if train.share_forward_across_readers:
            return model(tokens, ids, deterministic=deterministic), False
        return model(repeat_for_readers(tokens, readers), ids.reshape(-1),
                     deterministic=deterministic), False
    if train.share_forward_across_readers:
        return model(tokens, deterministic=deterministic), True
    # One forward per reader slot, as the original: (B, N, C) -> (B*R, N, C).
    return model(repeat_for_readers(tokens, readers), deterministic=deterministic), False


def _microbatches(batch: Batch, count: int) -> Batch:
    """(B, ...) -> (A, B/A, ...); micro-batch k takes rows k, k+A, ... so each keeps every device."""
    def split_one(x):
        b = x.shape[0]
        return jnp.swapaxes(x.reshape(b // count, count, *x.shape[1:]), 0, 1)
    return jax.tree.map(split_one, batch)


def make_train_step(graphdef, train: TrainConfig, schedule: Callable,
                    state_shardings=None, metric_sharding=None):
    """jit-compiled `step(state, rng_state, batch) -> (state, metrics)`; `state` is donated.

    metrics: loss, spatial, duration (full-batch values), grad_norm (before clipping), lr.
    """
    accum = train.grad_accum_steps
    w = train.duration_loss_weight

    def step(state: TrainState, rng_state, batch: Batch):
        model, optimizer = unpack(graphdef, rng_state, state)
        key = jax.random.wrap_key_data(state.key)
        count = optimizer.step[...]
        nnx.reseed(model, dropout=jax.random.fold_in(key, count))
        model_def, params, others = nnx.split(model, nnx.Param, ...)
        ma, md = mask_totals(batch)

        def micro_loss(params, others, micro):
            # Fresh Variable objects at this trace level (the dropout counters are mutated here).
            others = jax.tree.map(lambda x: x, others)
            m = nnx.merge(model_def, params, others)
            spatial, duration = loss_terms(m, micro, train=train, deterministic=False)
            ma_k, md_k = mask_totals(micro)
            # exact share of the full-batch normalisation (see the module docstring)
            wa = jnp.where(ma > 0, ma_k / jnp.maximum(ma, 1e-12), 0.0)
            wd = jnp.where(md > 0, md_k / jnp.maximum(md, 1e-12), 0.0)
            spatial, duration = spatial * wa, duration * wd  # the loss gives 0 for empty masks
            new_others = nnx.state(m, nnx.Not(nnx.Param))
            return spatial + w * duration, (spatial, duration, new_others)

        grad_fn = jax.value_and_grad(micro_loss, has_aux=True)
        if accum == 1:
            (_, (spatial, duration, others)), grads = grad_fn(params, others, batch)
        else:
            def body(carry, micro):
                g_acc, s_acc, d_acc, oth = carry
                (_, (s, d, oth)), g = grad_fn(params, oth, micro)
                return (jax.tree.map(jnp.add, g_acc, g), s_acc + s, d_acc + d, oth), None

            zeros = jax.tree.map(jnp.zeros_like, params)
            (grads, spatial, duration, others), _ = jax.lax.scan(
                body, (zeros, 0.0, 0.0, others), _microbatches(batch, accum))
        grad_norm = apply_update(model, optimizer, grads, others)
        metrics = {"loss": spatial + w * duration, "spatial": spatial, "duration": duration,
                   "grad_norm": grad_norm, "lr": jnp.asarray(schedule(count), jnp.float32)}
        return pack(model, optimizer, state.key), metrics

    return jit_train_step(step, state_shardings, metric_sharding)


def apply_update(model, optimizer, grads, others) -> jax.Array:
    """Write back the step's non-parameter state (dropout counters), then take the optimizer step
    on `grads`; returns the global gradient norm (logged)."""
    nnx.update(model, others)
    grad_norm = optax.tree.norm(grads)
    optimizer.update(model, grads)
    return grad_norm


def jit_train_step(step, state_shardings, metric_sharding):
    """`step(state, ...) -> (state, metrics)` under jit with the state donated and, when given,
    the state and metrics placed by the mesh's shardings."""
    out_shardings = None
    if state_shardings is not None:
        out_shardings = (state_shardings, metric_sharding)
    return jax.jit(step, donate_argnums=(0,), out_shardings=out_shardings)


def make_eval_step(graphdef, train: TrainConfig):
    """jit-compiled `eval_step(state, rng_state, batch) -> sums` for the loss on an eval split.

    Returns masked sums (spatial * Ma, Ma, duration * Md, Md) so batches of any padding combine
    exactly: loss = S/Ma + w * D/Md over the whole split (padding CTs have zero masks).
    """
    def eval_step(state: TrainState, rng_state, batch: Batch):
        model, _ = unpack(graphdef, rng_state, state)
        spatial, duration = loss_terms(model, batch, train=train, deterministic=True)
        ma, md = mask_totals(batch)
        return {"spatial_sum": spatial * ma, "action_total": ma,
                "duration_sum": duration * md, "duration_total": md}

    return jax.jit(eval_step)
