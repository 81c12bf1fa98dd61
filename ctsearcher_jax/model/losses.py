"""Training losses: masked soft cross-entropy over spatial classes + log-normal duration NLL.

Normalisation is the original's: every (CT, reader, step) term is summed and divided by the summed
masks of the whole batch (action mask for the spatial loss, duration mask for the duration loss);
padded readers (reader_mask 0) contribute nothing.

    spatial  = -sum target * log_softmax(logits) * action_mask / sum action_mask
    duration = -sum logpdf(t) * duration_mask / sum duration_mask,
    logpdf(t) = -log(t + 1e-7) - 0.5 log(2 pi sigma2) - (log(t + 1e-7) - mu)^2 / (2 sigma2)

The original takes log(softmax + 1e-7) instead of log_softmax; `legacy_epsilon=True` reproduces that
form (its gradients are tiny where softmax underflows, so the default is the stable log_softmax).
Both agree with the original's reference values to 1e-5 (tests/test_model_losses.py).

Readers: the model has no reader input, so its outputs for a CT serve every reader
(`share_forward=True`, outputs (B, L, K)). With `share_forward=False` the caller ran the forward once
per reader on `repeat_for_readers(tokens, R)` and passes outputs with leading axis B*R (reader-major
inside each CT), exactly as the original's per-reader batches.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ctsearcher_jax.data.targets import ScanpathTargets
from ctsearcher_jax.model.ct_searcher import ScanpathOutputs

EPSILON = 1e-7  # the original's regulariser inside log(t + eps) (and log(softmax + eps) when legacy)


def repeat_for_readers(tokens: jax.Array, num_readers: int) -> jax.Array:
    """(B, N, C) -> (B*R, N, C): each CT's tokens repeated for each of its R reader slots."""
    return jnp.repeat(tokens, num_readers, axis=0)


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def spatial_log_probs(logits: jax.Array, *, legacy_epsilon: bool = False) -> jax.Array:
    """(..., K) logits -> (..., K) log-probabilities (float32)."""
    logits = logits.astype(jnp.float32)
    if legacy_epsilon:
        return jnp.log(jax.nn.softmax(logits, axis=-1) + EPSILON)
    return jax.nn.log_softmax(logits, axis=-1)


def duration_log_pdf(duration: jax.Array, mu: jax.Array, log_sigma2: jax.Array) -> jax.Array:
    """Log-normal log-density of durations (seconds), elementwise; float32."""
    log_t = jnp.log(duration.astype(jnp.float32) + EPSILON)
    log_sigma2 = log_sigma2.astype(jnp.float32)
    # (log t - mu)^2 / (2 sigma2) written with exp(-log sigma2): no division by an underflowed sigma2.
    return (-log_t - 0.5 * (math.log(2 * math.pi) + log_sigma2)
            - 0.5 * jnp.square(log_t - mu.astype(jnp.float32)) * jnp.exp(-log_sigma2))


def scanpath_loss(outputs: ScanpathOutputs, targets: ScanpathTargets, reader_mask: jax.Array, *,
                  duration_weight: float, share_forward: bool = True,
                  legacy_epsilon: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss of B CTs with R reader slots each.

    outputs: spatial_logits (B, L, K) when share_forward, else (B*R, L, K) (same for mu, log_sigma2).
    targets: ScanpathTargets with leading (B, R): spatial (B, R, L, K), the rest (B, R, L).
    reader_mask: (B, R) 1 for real readers.
    Returns (spatial + duration_weight * duration, dict(loss, spatial, duration)) scalars float32.
    """
    b, r = reader_mask.shape
    logits, mu, log_sigma2 = outputs
    if share_forward:
        logits, mu, log_sigma2 = logits[:, None], mu[:, None], log_sigma2[:, None]
    else:
        logits = logits.reshape(b, r, *logits.shape[1:])
        mu = mu.reshape(b, r, -1)
        log_sigma2 = log_sigma2.reshape(b, r, -1)
    reader_mask = reader_mask.astype(jnp.float32)[:, :, None]

    action_mask = targets.action_mask.astype(jnp.float32) * reader_mask
    log_p = spatial_log_probs(logits, legacy_epsilon=legacy_epsilon)
    cross_entropy = -jnp.sum(targets.spatial.astype(jnp.float32) * log_p, axis=-1)  # (B, R, L)
    spatial = _safe_div(jnp.sum(cross_entropy * action_mask), jnp.sum(action_mask))

    duration_mask = targets.duration_mask.astype(jnp.float32) * reader_mask
    valid = duration_mask > 0
    # Padded steps have t = 0: give them a harmless duration so no NaN reaches the gradients.
    t = jnp.where(valid, targets.duration.astype(jnp.float32), 1.0)
    log_pdf = duration_log_pdf(t, mu, log_sigma2)
    duration = -_safe_div(jnp.sum(jnp.where(valid, log_pdf * duration_mask, 0.0)), jnp.sum(duration_mask))

    loss = spatial + duration_weight * duration
    return loss, {"loss": loss, "spatial": spatial, "duration": duration}
