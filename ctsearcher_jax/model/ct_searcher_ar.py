"""CT-Searcher AR: CT-Searcher that reads its own scanpath, fixation by fixation, inside cells.

CT-Searcher (`model/ct_searcher.py`) gives every step's distribution from learned queries in one
pass, so consecutive fixations are drawn independently, each at a cell centre. This variant keeps
its encoder and decoder and makes the last `model.ar_layers` decoder layers autoregressive. For B
CTs (N = Gy*Gx*Gz tokens, K = 1 + N classes, L = max_length steps) and `rows` scanpaths:

    E, M   = encode(tokens)                      (B, 1+N, d)   as CT-Searcher: M = E + [0, PE]
    P      = plan layers(query_embed + reader)   (B or B*R, L, d) the first num_decoder_layers -
                                                 ar_layers decoder layers, once per CT (per
                                                 (CT, reader) when reader-conditioned)
    x_t    = P_t + embed(fixation t-1)           (rows, L, d)  step 0 and every step after a STOP:
                                                 the learned `start` vector instead
    embed  = Linear([M[class], fourier(position), log seconds])  position = (cell + offset) / grid
    h      = ar layers(x, M)                     (rows, L, d)  causal self-attention + cross-
                                                 attention to the grid (DecoderLayer)
    logits = FC(h) @ E^T + bias[cell - previous cell]  (rows, L, K) class 0 = STOP; the relative
                                                 bias (2Gy-1, 2Gx-1, 2Gz-1) is learned, 0 for
                                                 STOP and at the first step
    g      = ReLU(Linear([h, M[class], carry,    (rows, L, d)  the step's choice: the drawn class
                      move, same]))              (teacher forcing: the target); `carry` = the
                                                 previous fixation's position in the drawn cell's
                                                 coordinates clipped into (0, 1), `move` = the
                                                 cell step (cells), `same` = 1 if no cell step
    offset ~ mixture of `offset_components` diagonal logit-normals over (0, 1)^3 (logits, means,
             log scales from Linear(g)); component 0's mean is offset by logit(carry), so "near
             the previous fixation" is the easy thing to say
    seconds ~ log-normal(mu(g), sigma2(g))       CT-Searcher's duration heads, fed g

Coordinates decode as `1 + (cell + offset) * extent / bins` per axis (the inverse of the
targets' `int((c - 1) / (extent / bins))`), clipped to [1, frame] and [1, z_extent].

Teacher forcing (`__call__` with `fixations`) is one pass; sampling runs the ar layers step by
step with a KV cache (`model/sampling_ar.py`), and the plan layers once. With ar_layers < the
decoder depth the per-sample cost of sampling is ar_layers / num_decoder_layers of a decoder pass
per step, which keeps sampling within a small factor of CT-Searcher's one pass.

Loss (`loss_terms`, each term normalised as CT-Searcher's): "spatial" is the negative
log-likelihood of the continuous location, class cross-entropy on the action mask plus the
offset's negative log-density on the fixations, both divided by the summed action mask;
"duration" is the log-normal NLL, as CT-Searcher.

Reader conditioning as CT-Searcher (a vector per reader added to the queries); with
`model.reader_dropout` p, training hides a (CT, reader)'s vector with probability p (the
decoder then sees the shared, reader-free queries), so the embedding only has to carry what the
readers do differently.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ctsearcher_jax.config import ModelConfig
from ctsearcher_jax.model.ct_searcher import CTSearcher
from ctsearcher_jax.model.losses import duration_log_pdf, spatial_log_probs
from ctsearcher_jax.nn.layers import linear

OFFSET_EPS = 1e-4                 # offsets are clipped into [eps, 1 - eps] before the logit
MIN_LOG_SCALE = math.log(0.05)    # floor of each logit-normal scale (logit units)
# Initial offset mixture (the head's kernel starts near zero): component 0, centred on the previous
# fixation, weighted e^2 : 1 : ... against the others and scaled 0.3 (logit units, ~10 % of a
# cell); the others centred in the cell with scale 1. Training starts from "look near the last
# fixation", which it would otherwise spend its first epochs finding.
INITIAL_CARRY_LOGIT, INITIAL_CARRY_SCALE, INITIAL_SCALE = 2.0, 0.3, 1.0
FOURIER_FREQUENCIES = (1.0, 2.0, 4.0, 8.0)  # of the continuous position fed back to the decoder


class Fixations(NamedTuple):
    """Fixations the decoder reads (teacher forcing) or drew (sampling), per scanpath row.

    classes: (rows, L) int32, 1 + token of each fixation, 0 (STOP) from the length on.
    offsets: (rows, L, 3) float32 [x, y, z] position inside the cell, in [0, 1).
    durations: (rows, L) float32 seconds (anything after the length).
    """

    classes: jax.Array
    offsets: jax.Array
    durations: jax.Array


class StepContext(NamedTuple):
    """Per-CT products of the step heads (`CTSearcherAR.context`), in the compute dtype.

    logit_keys: (B, 1+N, d) E @ W_fc^T, the pointer keys of FC(h) @ E^T; logit_bias: (B, 1+N)
    float32 E @ b_fc. input_cells, choice_cells: (B, 1+N, d) the memory rows times the part of
    fixation_proj / choice_proj's kernel that multiplies a cell's memory.
    """

    logit_keys: jax.Array
    logit_bias: jax.Array
    input_cells: jax.Array
    choice_cells: jax.Array


class AROutputs(NamedTuple):
    """Teacher-forced outputs for `rows` scanpaths (float32).

    spatial_logits: (rows, L, K) class 0 = STOP. duration_mu, duration_log_sigma2: (rows, L)
    log-normal parameters of each fixation's seconds given its class. offset_logits (rows, L, C),
    offset_mean and offset_log_scale (rows, L, C, 3): the offset mixture given the class
    (logit space, [x, y, z]).
    """

    spatial_logits: jax.Array
    duration_mu: jax.Array
    duration_log_sigma2: jax.Array
    offset_logits: jax.Array
    offset_mean: jax.Array
    offset_log_scale: jax.Array


def class_cells_xyz(classes: jax.Array, grid) -> jax.Array:
    """Grid cell [ix, iy, iz] float32 (..., 3) of classes >= 1 (class 0 gives cell 0)."""
    gy, gx, gz = (int(g) for g in grid)
    token = jnp.maximum(classes - 1, 0)
    return jnp.stack([(token // gz) % gx, token // (gx * gz), token % gz], axis=-1).astype(jnp.float32)


def offset_log_density(offsets: jax.Array, logits: jax.Array, mean: jax.Array,
                       log_scale: jax.Array) -> jax.Array:
    """log p(offsets) under the logit-normal mixture: offsets (..., 3) in [0, 1), logits (..., C),
    mean and log_scale (..., C, 3) -> (...) float32 (a density over (0, 1)^3)."""
    o = jnp.clip(offsets.astype(jnp.float32), OFFSET_EPS, 1.0 - OFFSET_EPS)
    u = jnp.log(o) - jnp.log1p(-o)
    z = (u[..., None, :] - mean) * jnp.exp(-log_scale)
    per_component = jnp.sum(-0.5 * jnp.square(z) - log_scale - 0.5 * math.log(2 * math.pi), axis=-1)
    log_w = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    jacobian = -jnp.sum(jnp.log(o) + jnp.log1p(-o), axis=-1)  # du/do = 1 / (o (1 - o))
    return jax.nn.logsumexp(log_w + per_component, axis=-1) + jacobian


def sample_offsets(key: jax.Array, logits: jax.Array, mean: jax.Array,
                   log_scale: jax.Array) -> jax.Array:
    """One draw per leading index from the mixture: logits (..., C), mean/log_scale (..., C, 3)
    -> offsets (..., 3) float32 in [0, 1)."""
    key_component, key_normal = jax.random.split(key)
    component = jax.random.categorical(key_component, logits.astype(jnp.float32), axis=-1)
    pick = lambda a: jnp.take_along_axis(a, component[..., None, None], axis=-2)[..., 0, :]  # noqa: E731
    eps = jax.random.normal(key_normal, mean.shape[:-2] + (3,), jnp.float32)
    u = pick(mean) + jnp.exp(pick(log_scale)) * eps
    return jnp.minimum(jax.nn.sigmoid(u), 1.0 - OFFSET_EPS)


class CTSearcherAR(CTSearcher):
    """CT-Searcher with an autoregressive decoder tail and within-cell offsets (module docstring)."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        # The parts CT-Searcher lacks draw from their own key, taken first: they start the same
        # with and without reader conditioning (CT-Searcher draws its reader embedding last).
        own = nnx.Rngs(params=rngs.params())
        super().__init__(config, rngs=rngs)
        d = config.d_model
        dtype = self.dtype
        self.num_plan_layers = config.num_decoder_layers - config.ar_layers
        self.start = nnx.Param(0.02 * jax.random.normal(own.params(), (d,), jnp.float32))
        fourier = 2 * 3 * len(FOURIER_FREQUENCIES)
        self.fixation_proj = linear(d + fourier + 1, d, dtype=dtype, rngs=own)
        gy, gx, gz = config.grid
        self.relative_bias = nnx.Param(jnp.zeros((2 * gy - 1, 2 * gx - 1, 2 * gz - 1), jnp.float32))
        self.choice_proj = linear(2 * d + 7, d, dtype=dtype, rngs=own)
        self.offset_head = nnx.Linear(d, 7 * config.offset_components, dtype=dtype,
                                      param_dtype=jnp.float32,
                                      kernel_init=nnx.initializers.normal(0.01),
                                      bias_init=_offset_head_bias, rngs=own)
        self.reader_drop = nnx.Dropout(config.reader_dropout, rngs=rngs)

    # ---------------------------------------------------------------- pieces (shared by sampling)

    def plan(self, memory: jax.Array, readers: jax.Array | None, *,
             deterministic: bool = True) -> jax.Array:
        """The plan layers: memory (P, 1+N, d), readers (P,) or None -> (P, L, d) float32."""
        p = memory.shape[0]
        q = jnp.broadcast_to(self.query_embed[...], (p, *self.query_embed.shape))
        if self.config.reader_conditioned:
            if readers is None:
                raise ValueError("this model is reader-conditioned: pass reader indices")
            vec = self.reader_embed[...][readers]
            keep = self.reader_drop(jnp.ones((p, 1), jnp.float32), deterministic=deterministic) > 0
            q = q + jnp.where(keep, vec, 0.0)[:, None, :]
        elif readers is not None:
            raise ValueError("this model is not reader-conditioned: it takes no reader indices")
        for layer in list(self.decoder)[:self.num_plan_layers]:
            q = layer(q, memory, deterministic=deterministic)
        return q

    def ar_decoder_layers(self) -> list:
        """The decoder layers that read the previous fixations (run per step when sampling)."""
        return list(self.decoder)[self.num_plan_layers:]

    def context(self, enc: jax.Array, memory: jax.Array) -> StepContext:
        """The per-CT products the step heads read (once per CT, not per step): enc, memory
        (B, 1+N, d) -> StepContext. Only the rows of each projection's kernel that multiply a
        cell's memory are applied here; the step adds the rest (the same sums, regrouped)."""
        d = self.config.d_model
        mem = memory.astype(self.dtype)
        keys = enc.astype(self.dtype) @ self.spatial_fc.kernel[...].astype(self.dtype).T
        bias = enc.astype(self.dtype) @ self.spatial_fc.bias[...].astype(self.dtype)
        return StepContext(keys, bias.astype(jnp.float32),
                           mem @ self.fixation_proj.kernel[...][:d].astype(self.dtype),
                           mem @ self.choice_proj.kernel[...][d:2 * d].astype(self.dtype))

    def input_embedding(self, ctx: StepContext, prev_classes: jax.Array, prev_offsets: jax.Array,
                        prev_durations: jax.Array) -> jax.Array:
        """Decoder input of the previous fixation: prev_classes (B, T), prev_offsets (B, T, 3),
        prev_durations (B, T) -> (B, T, d) float32 (`start` where the previous class is 0: the
        first step and after a STOP). fixation_proj of [M[class], fourier(position), log t]."""
        d = self.config.d_model
        grid_xyz = jnp.asarray(self._grid_xyz(), jnp.float32)
        position = (class_cells_xyz(prev_classes, self.config.grid) + prev_offsets) / grid_xyz
        angles = 2 * math.pi * position[..., None, :] * jnp.asarray(FOURIER_FREQUENCIES)[:, None]
        angles = angles.reshape(*angles.shape[:-2], -1)
        log_t = jnp.log(jnp.maximum(prev_durations.astype(jnp.float32), 1e-3))[..., None]
        features = jnp.concatenate([jnp.sin(angles), jnp.cos(angles), log_t], axis=-1)
        kernel = self.fixation_proj.kernel[...][d:].astype(self.dtype)
        embedded = (_gather_rows(ctx.input_cells, prev_classes) + features.astype(self.dtype) @ kernel
                    + self.fixation_proj.bias[...].astype(self.dtype)).astype(jnp.float32)
        return jnp.where((prev_classes > 0)[..., None], embedded, self.start[...])

    def class_logits(self, ctx: StepContext, h: jax.Array, prev_classes: jax.Array) -> jax.Array:
        """h (B, T, d), prev_classes (B, T) -> logits (B, T, K) float32: FC(h) @ E^T (as
        h @ (E W^T)^T + E b) + the relative bias of the cell step."""
        logits = jnp.einsum("btd,bkd->btk", h.astype(self.dtype), ctx.logit_keys)
        logits = logits.astype(jnp.float32) + ctx.logit_bias[:, None, :]
        gy, gx, gz = self.config.grid
        cells = class_cells_xyz(jnp.arange(1, self.config.num_classes), self.config.grid)  # (N, 3)
        prev = class_cells_xyz(prev_classes, self.config.grid)
        delta = (cells - prev[..., None, :]).astype(jnp.int32)  # (B, T, N, 3) [dx, dy, dz]
        bias = self.relative_bias[...][delta[..., 1] + gy - 1, delta[..., 0] + gx - 1,
                                       delta[..., 2] + gz - 1]
        bias = jnp.where((prev_classes > 0)[..., None], bias, 0.0)
        return logits.at[..., 1:].add(bias)

    def choice(self, ctx: StepContext, h: jax.Array, classes: jax.Array, prev_classes: jax.Array,
               prev_offsets: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
        """The heads given the step's class: h (B, T, d), classes, prev_classes (B, T),
        prev_offsets (B, T, 3) -> (offset logits (B, T, C), offset mean and log scale
        (B, T, C, 3), duration mu, log sigma2 (B, T)). choice_proj of [h, M[class], carry, move,
        same]."""
        d = self.config.d_model
        cells = class_cells_xyz(classes, self.config.grid)
        prev = class_cells_xyz(prev_classes, self.config.grid) + prev_offsets
        started = (prev_classes > 0)[..., None]
        carry = jnp.clip(jnp.where(started, prev - cells, 0.5), OFFSET_EPS, 1.0 - OFFSET_EPS)
        move = jnp.where(started, cells - class_cells_xyz(prev_classes, self.config.grid), 0.0)
        same = (started & (classes == prev_classes)[..., None]).astype(jnp.float32)
        kernel = self.choice_proj.kernel[...].astype(self.dtype)
        rest = jnp.concatenate([carry, move, same], axis=-1).astype(self.dtype)
        g = (h.astype(self.dtype) @ kernel[:d] + _gather_rows(ctx.choice_cells, classes)
             + rest @ kernel[2 * d:] + self.choice_proj.bias[...].astype(self.dtype))
        g = jax.nn.relu(g)
        c = self.config.offset_components
        raw = self.offset_head(g).astype(jnp.float32)
        logits = raw[..., :c]
        mean = raw[..., c:4 * c].reshape(*raw.shape[:-1], c, 3)
        log_scale = raw[..., 4 * c:].reshape(*raw.shape[:-1], c, 3)
        mean = mean.at[..., 0, :].add(jnp.log(carry) - jnp.log1p(-carry))
        log_scale = MIN_LOG_SCALE + jax.nn.softplus(log_scale - MIN_LOG_SCALE)
        return logits, mean, log_scale, self.duration_mu(g), self.duration_logvar(g)

    def _grid_xyz(self) -> tuple[int, int, int]:
        gy, gx, gz = self.config.grid
        return (gx, gy, gz)

    # ---------------------------------------------------------------- teacher forcing

    def __call__(self, tokens: jax.Array, readers: jax.Array | None = None, *,
                 fixations: Fixations | None = None, deterministic: bool = True) -> AROutputs:
        """Teacher-forced outputs: tokens (B, N, C); fixations with rows = B * n scanpaths (the n
        of CT b consecutive); readers (conditioned models) (B,) or (B, R) reader indices, the plan
        then per (CT, reader) and R dividing n. Step t reads fixation t-1 and scores fixation t."""
        if fixations is None:
            raise ValueError("ct_searcher_ar is autoregressive: pass the previous fixations "
                             "(`fixations=`), or sample with model/sampling_ar.py")
        enc, memory = self.encode(tokens, deterministic=deterministic)
        b = tokens.shape[0]
        plan_memory = memory
        if readers is not None and readers.ndim == 2:
            plan_memory = jnp.repeat(memory, readers.shape[1], axis=0)
            readers = readers.reshape(-1)
        plan = self.plan(plan_memory, readers, deterministic=deterministic)
        rows = fixations.classes.shape[0]
        if rows % plan.shape[0]:
            raise ValueError(f"{rows} scanpath rows for {plan.shape[0]} plans")
        plan = jnp.repeat(plan, rows // plan.shape[0], axis=0)
        enc, memory = jnp.repeat(enc, rows // b, axis=0), jnp.repeat(memory, rows // b, axis=0)
        return self.decode_fixations(plan, enc, memory, fixations, deterministic=deterministic)

    def decode_fixations(self, plan: jax.Array, enc: jax.Array, memory: jax.Array,
                         fixations: Fixations, *, deterministic: bool = True) -> AROutputs:
        """The ar layers and heads on every step at once: plan (rows, L, d), enc and memory
        (rows, 1+N, d), fixations (rows, L) -> AROutputs."""
        shift = lambda a: jnp.concatenate([jnp.zeros_like(a[:, :1]), a[:, :-1]], axis=1)  # noqa: E731
        classes = fixations.classes.astype(jnp.int32)
        prev_classes, prev_offsets = shift(classes), shift(fixations.offsets.astype(jnp.float32))
        ctx = self.context(enc, memory)
        x = plan + self.input_embedding(ctx, prev_classes, prev_offsets, shift(fixations.durations))
        for layer in self.ar_decoder_layers():
            x = layer(x, memory, deterministic=deterministic)
        logits = self.class_logits(ctx, x, prev_classes)
        heads = self.choice(ctx, x, classes, prev_classes, prev_offsets)
        return AROutputs(logits, heads[3], heads[4], *heads[:3])

    def loss_terms(self, batch: dict[str, Any], *, legacy_epsilon: bool = False,
                   deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        """(spatial, duration) teacher-forced losses of a training batch (`data/pipeline.py`
        keys), each normalised by its summed masks over real readers (module docstring)."""
        b, r = batch["reader_mask"].shape
        readers = batch["reader_ids"] if self.config.reader_conditioned else None
        fixations = Fixations(batch["cells"].reshape(b * r, -1),
                              batch["offsets"].reshape(b * r, -1, 3),
                              batch["duration"].reshape(b * r, -1))
        out = self(batch["tokens"], readers, fixations=fixations, deterministic=deterministic)
        reader_mask = batch["reader_mask"].astype(jnp.float32).reshape(-1)[:, None]
        action = batch["action_mask"].reshape(b * r, -1).astype(jnp.float32) * reader_mask
        fixation = batch["duration_mask"].reshape(b * r, -1).astype(jnp.float32) * reader_mask
        targets = batch["spatial"].reshape(b * r, *batch["spatial"].shape[2:]).astype(jnp.float32)
        log_p = spatial_log_probs(out.spatial_logits, legacy_epsilon=legacy_epsilon)
        cross_entropy = -jnp.sum(targets * log_p, axis=-1)
        offset_nll = -offset_log_density(fixations.offsets, out.offset_logits, out.offset_mean,
                                         out.offset_log_scale)
        valid = fixation > 0
        spatial = _ratio(jnp.sum(cross_entropy * action)
                         + jnp.sum(jnp.where(valid, offset_nll * fixation, 0.0)), jnp.sum(action))
        t = jnp.where(valid, fixations.durations.astype(jnp.float32), 1.0)
        log_pdf = duration_log_pdf(t, out.duration_mu, out.duration_log_sigma2)
        duration = -_ratio(jnp.sum(jnp.where(valid, log_pdf * fixation, 0.0)), jnp.sum(fixation))
        return spatial, duration


def _gather_rows(table: jax.Array, index: jax.Array) -> jax.Array:
    """table (B, K, d), index (B, T) -> (B, T, d): row index[b, t] of table[b]."""
    return jnp.take_along_axis(table, index[..., None], axis=1)


def _offset_head_bias(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Bias of the offset head (7C,): [logits (C), means (C, 3), raw log scales (C, 3)]."""
    c = shape[0] // 7
    inverse = lambda s: MIN_LOG_SCALE + math.log(math.expm1(math.log(s) - MIN_LOG_SCALE))  # noqa: E731
    logits = jnp.zeros(c).at[0].set(INITIAL_CARRY_LOGIT)
    scales = jnp.full((c, 3), inverse(INITIAL_SCALE)).at[0].set(inverse(INITIAL_CARRY_SCALE))
    return jnp.concatenate([logits, jnp.zeros(3 * c), scales.reshape(-1)]).astype(dtype)


def _ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)
