"""Learning-rate schedule and optimizer: optax AdamW with torch.optim.AdamW semantics.

Schedule (fraction of the peak `train.lr`, `s` = 0-based optimizer step, W = warm-up steps,
T = total steps, both from the real number of steps per epoch):

    ours (default):     f(s) = (s + 1) / W            for s + 1 <  W
                        f(s) = (T - s - 1) / (T - W)  for s + 1 >= W   (clipped at 0)
    legacy (original):  f(s) = s / W                  for s <  W       (first step lr 0)
                        f(s) = (T - s) / (T - W)      for s >= W

i.e. ours is the original LambdaLR advanced by one step, so the very first update already moves
the weights (lr / W) and the last one has lr 0. The original also hard-wired 100 steps per epoch;
we count them from the data.

AdamW: optax.adamw's update is `-lr * (m_hat / (sqrt(v_hat) + eps) + wd * p)`, the same algebra as
torch's `p *= 1 - lr*wd; p -= lr * m_hat / (sqrt(v_hat) + eps)` (decay multiplied by the learning
rate, eps outside the square root). Every trainable parameter is decayed, biases and norms included,
as the original passes `model.parameters()`; the frozen positional table is not an `nnx.Param`, so
it is neither updated nor decayed.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from ctsearcher_jax.config import TrainConfig
from ctsearcher_jax.errors import ConfigError


def schedule_steps(train: TrainConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(warm-up steps, total steps) from the epochs in `train` and the real steps per epoch."""
    if steps_per_epoch < 1:
        raise ConfigError(f"train.batch_size={train.batch_size} leaves no full batch per epoch; "
                          "lower train.batch_size or add training CTs")
    return train.warmup_epochs * steps_per_epoch, train.epochs * steps_per_epoch


def lr_schedule(train: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """Learning rate per 0-based optimizer step: linear warm-up, then linear decay to 0."""
    warmup, total = schedule_steps(train, steps_per_epoch)
    peak = train.lr
    # Shift the original's step counter by one unless the legacy first-step-zero is asked for.
    shift = 0 if train.legacy_first_step_lr_zero else 1

    def schedule(step):
        s = jnp.asarray(step, jnp.float32) + shift
        if warmup > 0:
            up = s / warmup
        else:
            up = jnp.ones_like(s)
        down = jnp.maximum(0.0, (total - s) / max(total - warmup, 1))
        return peak * jnp.where(s < warmup, up, down)

    return schedule


def make_optimizer(train: TrainConfig, steps_per_epoch: int, *,
                   constant_lr: float | None = None) -> optax.GradientTransformation:
    """AdamW (torch semantics) with the schedule, after optional global-norm clipping.

    `constant_lr` replaces the schedule (used by the parity test, as the reference step had no
    scheduler). Gradient accumulation is done inside the train step (exact, see step.py), so the
    optimizer sees one averaged gradient per step.
    """
    lr = constant_lr if constant_lr is not None else lr_schedule(train, steps_per_epoch)
    adamw = optax.adamw(learning_rate=lr, b1=train.beta1, b2=train.beta2, eps=train.eps,
                        eps_root=0.0, weight_decay=train.weight_decay)
    if train.clip_grad_norm is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(train.clip_grad_norm), adamw)
