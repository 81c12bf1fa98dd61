"""Drawing scanpaths from CT-Searcher AR: a jit-compiled `lax.scan` over steps with a KV cache.

Per chunk of B CTs (or (CT, reader) jobs of a conditioned model) and S samples each:

* once per CT: the encoder (E, M), the plan layers (`CTSearcherAR.plan`, once per job), the
  products of M and E with the heads' weights (`CTSearcherAR.context`) and, for every ar layer,
  the cross-attention keys and values of M (B, H, 1+N, hd);
* per step t (the scan, B x S rows at once): the decoder input (plan_t + the embedded previous
  fixation), each ar layer on that one position, its self-attention reading the keys and values
  of steps 0..t from the cache (written at t, never recomputed), the class logits, then the
  class (`class_log_probs`: STOP impossible before `min_length`, else with the model's
  probability; the slice layer with the model's probability, the cell inside the layer by
  softmax(log p / temperature), optionally among its `top_k` most likely), then, given the
  class, the within-cell
  offset ~ the logit-normal mixture and the seconds ~ log-normal(mu, sqrt(sigma2))
  (`legacy_duration_sampling`: exp(mu + sigma2 * eps), as the CT-Searcher sampler);
* the first STOP ends a scanpath (length = its step); the scan still runs L steps, the steps
  after a STOP are dropped.

The step replays `DecoderLayer` (`model/layers.py`, post-norm, eval mode) on one position with
the layer's own parameters; tests/model/test_sampling_ar.py checks it against the teacher-forced
pass (`CTSearcherAR.__call__`) on the drawn fixations.

Randomness: CT (job) b draws with `keys[b]` alone (folded with the step), so a CT's scanpaths do
not depend on the other CTs of the chunk, on padding, on the devices the chunk is sharded over
(up to float rounding) or on the process. Coordinates decode to `1 + (cell + offset) * extent /
bins` per axis (Z then to its whole slice), clipped to [1, frame] (X, Y) and [1, z_extent] (Z).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ctsearcher_jax.config import GAZE_FRAME
from ctsearcher_jax.model.ct_searcher_ar import Fixations, class_cells_xyz, sample_offsets
from ctsearcher_jax.model.sampling import SampledScanpaths, decode_classes


class ARDraw(NamedTuple):
    """What one draw gives: the scanpaths (records), and the fixations as the model reads them.

    sampled: SampledScanpaths (B, S, L) with continuous coordinates.
    fixations: Fixations with rows (B, S): classes (B, S, L) (0 from the length on), offsets
    (B, S, L, 3), durations (B, S, L) (0 from the length on).
    """

    sampled: SampledScanpaths
    fixations: Fixations


def decode_positions(classes: jax.Array, offsets: jax.Array, grid: Sequence[int],
                     frame: jax.Array | float, z_extent: jax.Array | float) -> jax.Array:
    """Gaze coordinates (..., 3) [x, y, z] float32 of classes (...) >= 1 and offsets (..., 3):
    X, Y = `1 + (cell + offset) * extent / bins` pixels, Z = `1 + floor((cell + offset) *
    z_extent / Gz)`, a whole slice number like the data's (the exact inverse of the targets for
    whole slices), each clipped into [1, extent]. z_extent broadcasts against classes."""
    gy, gx, gz = (int(g) for g in grid)
    frame = jnp.asarray(frame, jnp.float32)
    z_extent = jnp.asarray(z_extent, jnp.float32)
    u = class_cells_xyz(classes, grid) + offsets
    x = 1.0 + u[..., 0] * (frame / gx)
    y = 1.0 + u[..., 1] * (frame / gy)
    # a whole slice number as the data's (1e-3: a whole slice read back through float32 offsets)
    z = 1.0 + jnp.floor(u[..., 2] * (z_extent / gz) + 1e-3)
    return jnp.stack([jnp.clip(x, 1.0, frame), jnp.clip(y, 1.0, frame),
                      jnp.clip(z, 1.0, z_extent)], axis=-1)


def _heads(x: jax.Array, heads: int) -> jax.Array:
    return x.reshape(*x.shape[:-1], heads, x.shape[-1] // heads)


def _project(attn: Any, x: jax.Array, part: slice) -> jax.Array:
    """x @ W[:, part] + b[part] of a MultiHeadAttention's fused input projection."""
    kernel = attn.in_proj.kernel[...].astype(attn.dtype)[:, part]
    bias = attn.in_proj.bias[...].astype(attn.dtype)[part]
    return x.astype(attn.dtype) @ kernel + bias


def _self_attention_step(attn: Any, x: jax.Array, cache: tuple[jax.Array, jax.Array],
                         t: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """One position of causal self-attention: x (B, S, d); cache keys and values (B, S, H, L, hd)
    hold steps < t; this step's are written at t. Returns ((B, S, d), cache)."""
    d = attn.num_heads * attn.head_dim
    qkv = _project(attn, x, slice(None))
    q, k, v = (_heads(qkv[..., i * d:(i + 1) * d], attn.num_heads) for i in range(3))
    keys = jax.lax.dynamic_update_slice_in_dim(cache[0], k[:, :, :, None], t, axis=3)
    values = jax.lax.dynamic_update_slice_in_dim(cache[1], v[:, :, :, None], t, axis=3)
    q = q * jnp.asarray(1.0 / math.sqrt(attn.head_dim), attn.dtype)
    scores = jnp.einsum("bshd,bshld->bshl", q, keys, preferred_element_type=jnp.float32)
    scores = jnp.where(jnp.arange(keys.shape[3]) <= t, scores, -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1).astype(values.dtype)
    out = jnp.einsum("bshl,bshld->bshd", weights, values)
    return attn.out_proj(out.reshape(*out.shape[:-2], d)), (keys, values)


def _cross_attention_step(attn: Any, x: jax.Array, memory_kv: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Cross-attention of x (B, S, d) to one CT's memory keys and values (B, H, 1+N, hd)."""
    d = attn.num_heads * attn.head_dim
    q = _heads(_project(attn, x, slice(0, d)), attn.num_heads)
    q = q * jnp.asarray(1.0 / math.sqrt(attn.head_dim), attn.dtype)
    scores = jnp.einsum("bshd,bhnd->bshn", q, memory_kv[0], preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(scores, axis=-1).astype(memory_kv[1].dtype)
    out = jnp.einsum("bshn,bhnd->bshd", weights, memory_kv[1])
    return attn.out_proj(out.reshape(*out.shape[:-2], d))


def memory_keys_values(layer: Any, memory: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A decoder layer's cross-attention keys and values of memory (B, 1+N, d): (B, H, 1+N, hd)
    each, heads first so that no step transposes them."""
    attn = layer.cross_attn
    d = attn.num_heads * attn.head_dim
    kv = _project(attn, memory, slice(d, 3 * d))
    heads_first = lambda a: jnp.swapaxes(_heads(a, attn.num_heads), 1, 2)  # noqa: E731
    return heads_first(kv[..., :d]), heads_first(kv[..., d:])


def _layer_step(layer: Any, x: jax.Array, cache, t, memory_kv):
    """`DecoderLayer.__call__` (eval mode) on one position per row, with the KV cache."""
    sa, cache = _self_attention_step(layer.self_attn, x, cache, t)
    x = layer.norm1(x + sa.astype(jnp.float32))
    ca = _cross_attention_step(layer.cross_attn, x, memory_kv)
    x = layer.norm2(x + ca.astype(jnp.float32))
    ff = layer.feed_forward(x, deterministic=True)
    return layer.norm3(x + ff.astype(jnp.float32)), cache


def class_log_probs(logits: jax.Array, t: jax.Array, *, grid: Sequence[int], min_length: int,
                    temperature: float = 1.0, top_k: int = 0) -> jax.Array:
    """The sampler's law over classes: logits (..., K) at step t -> log-probabilities (..., K).

    STOP (class 0) is impossible before `min_length`, else it keeps the model's probability.
    A cell (iy, ix, iz) factorises as p(iz) p(iy, ix | iz): the slice layer iz keeps the model's
    probability too (how fast the reader scrolls), and only where in the layer it looks is
    sharpened, softmax(log p(iy, ix | iz) / temperature), among the `top_k` most likely in-plane
    cells of the layer (0 = all). Temperature 1 without top-k is log_softmax(logits).
    """
    gy, gx, gz = (int(g) for g in grid)
    logits = logits.astype(jnp.float32)
    logits = logits.at[..., 0].set(jnp.where(t < min_length, -jnp.inf, logits[..., 0]))
    log_p = jax.nn.log_softmax(logits, axis=-1)
    if temperature == 1.0 and not top_k:
        return log_p
    cells = log_p[..., 1:].reshape(*log_p.shape[:-1], gy * gx, gz)  # (..., in-plane, layer)
    log_layer = jax.nn.logsumexp(cells, axis=-2, keepdims=True)  # log p(continue, iz)
    plane = (cells - log_layer) / jnp.float32(temperature)
    if top_k:
        kth = jax.lax.top_k(jnp.moveaxis(plane, -1, -2), min(top_k, gy * gx))[0][..., -1]
        plane = jnp.where(plane < kth[..., None, :], -jnp.inf, plane)
    cells = log_layer + jax.nn.log_softmax(plane, axis=-2)
    return jnp.concatenate([log_p[..., :1], cells.reshape(*log_p.shape[:-1], gy * gx * gz)], axis=-1)


def _draw_classes(keys: jax.Array, logits: jax.Array, t: jax.Array, *, grid: Sequence[int],
                  min_length: int, temperature: float, top_k: int) -> jax.Array:
    """Classes (B, S) int32 from logits (B, S, K) with one key per row b (`class_log_probs`)."""
    log_p = class_log_probs(logits, t, grid=grid, min_length=min_length, temperature=temperature,
                            top_k=top_k)
    return jax.vmap(lambda k, x: jax.random.categorical(k, x, axis=-1))(keys, log_p).astype(jnp.int32)


def draw(model: Any, tokens: jax.Array, keys: jax.Array, frame: jax.Array, z_extent: jax.Array,
         readers: jax.Array | None, *, num_samples: int, min_length: int,
         legacy_duration_sampling: bool = False, temperature: float = 1.0,
         top_k: int = 0) -> ARDraw:
    """Traceable core: S = num_samples scanpaths for each of B rows (CTs, or (CT, reader) jobs).

    tokens (B, N, C); keys (B,) typed keys; frame scalar; z_extent (B,); readers (B,) embedding
    rows of a conditioned model or None. Dropout off. Returns ARDraw (module docstring).
    """
    b, s, length = tokens.shape[0], num_samples, model.config.max_length
    enc, memory = model.encode(tokens, deterministic=True)
    plan = model.plan(memory, readers, deterministic=True)
    layers = model.ar_decoder_layers()
    memory_kv = [memory_keys_values(layer, memory) for layer in layers]
    ctx = model.context(enc, memory)
    attn = layers[0].self_attn
    empty = jnp.zeros((b, s, attn.num_heads, length, attn.head_dim), model.dtype)
    caches = [(empty, empty) for _ in layers]

    def step(carry, t):
        prev_classes, prev_offsets, prev_durations, caches = carry
        x = jnp.take(plan, t, axis=1)[:, None, :] + model.input_embedding(
            ctx, prev_classes, prev_offsets, prev_durations)
        new_caches = []
        for layer, cache, kv in zip(layers, caches, memory_kv):
            x, cache = _layer_step(layer, x, cache, t, kv)
            new_caches.append(cache)
        step_keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, t), 3))(keys)
        logits = model.class_logits(ctx, x, prev_classes)
        classes = _draw_classes(step_keys[:, 0], logits, t, grid=model.config.grid,
                                min_length=min_length,
                                temperature=temperature, top_k=top_k)
        off_logits, mean, log_scale, mu, log_sigma2 = model.choice(ctx, x, classes, prev_classes,
                                                                   prev_offsets)
        offsets = jax.vmap(sample_offsets)(step_keys[:, 1], off_logits, mean, log_scale)
        eps = jax.vmap(lambda k: jax.random.normal(k, (s,), jnp.float32))(step_keys[:, 2])
        scale = jnp.exp(log_sigma2) if legacy_duration_sampling else jnp.exp(0.5 * log_sigma2)
        durations = jnp.exp(mu + scale * eps)
        return (classes, offsets, durations, new_caches), (classes, offsets, durations)

    start = (jnp.zeros((b, s), jnp.int32), jnp.zeros((b, s, 3), jnp.float32),
             jnp.zeros((b, s), jnp.float32), caches)
    _, (classes, offsets, durations) = jax.lax.scan(step, start, jnp.arange(length))
    classes, durations = jnp.moveaxis(classes, 0, -1), jnp.moveaxis(durations, 0, -1)
    offsets = jnp.moveaxis(offsets, 0, -2)
    z = jnp.broadcast_to(jnp.asarray(z_extent, jnp.float32), (b,))[:, None, None]
    _, durations, lengths = decode_classes(classes, durations, grid=model.config.grid, frame=frame,
                                           z_extent=z)
    valid = jnp.arange(length) < lengths[..., None]
    coords = jnp.where(valid[..., None], decode_positions(classes, offsets, model.config.grid,
                                                          frame, z), 0.0)
    fixations = Fixations(jnp.where(valid, classes, 0), jnp.where(valid[..., None], offsets, 0.0),
                          durations)
    return ARDraw(SampledScanpaths(coords, durations, lengths, classes), fixations)


@functools.partial(nnx.jit, static_argnames=("num_samples", "min_length", "legacy_duration_sampling",
                                             "temperature", "top_k"))
def _draw_jit(model: Any, tokens: jax.Array, keys: jax.Array, frame: jax.Array, z_extent: jax.Array,
              readers: jax.Array | None, *, num_samples: int, min_length: int,
              legacy_duration_sampling: bool, temperature: float, top_k: int) -> SampledScanpaths:
    return draw(model, tokens, keys, frame, z_extent, readers, num_samples=num_samples,
                min_length=min_length, legacy_duration_sampling=legacy_duration_sampling,
                temperature=temperature, top_k=top_k).sampled


def sample_scanpaths_per_ct(model: Any, tokens: jax.Array, keys: jax.Array, *, num_samples: int,
                            min_length: int, legacy_duration_sampling: bool = False,
                            frame: float = GAZE_FRAME,
                            z_extent: jax.Array | np.ndarray | float = GAZE_FRAME,
                            readers: jax.Array | np.ndarray | None = None,
                            temperature: float = 1.0, top_k: int = 0) -> SampledScanpaths:
    """`num_samples` scanpaths for each CT of `tokens` (B, N, C), CT b drawn with `keys[b]` alone.

    Same contract as `model.sampling.sample_scanpaths_per_ct` (arrays may be sharded along B,
    the model then replicated on the same devices); readers: (B,) embedding rows of a
    reader-conditioned model (row b conditions CT b), None otherwise.
    """
    b = tokens.shape[0]
    z = jnp.broadcast_to(jnp.asarray(z_extent, jnp.float32), (b,)) if np.ndim(z_extent) == 0 \
        else z_extent
    if readers is not None:
        readers = jnp.asarray(readers, jnp.int32).reshape(b)
    return _draw_jit(model, tokens, keys, jnp.asarray(frame, jnp.float32), z, readers,
                     num_samples=int(num_samples), min_length=int(min_length),
                     legacy_duration_sampling=bool(legacy_duration_sampling),
                     temperature=float(temperature), top_k=int(top_k))


def sample_scanpaths(model: Any, tokens: jax.Array, key: jax.Array, *, num_samples: int,
                     min_length: int, legacy_duration_sampling: bool = False,
                     frame: float = GAZE_FRAME,
                     z_extent: float | Sequence[float] | np.ndarray = GAZE_FRAME,
                     readers: Sequence[int] | np.ndarray | None = None,
                     temperature: float = 1.0, top_k: int = 0) -> SampledScanpaths:
    """Like `model.sampling.sample_scanpaths`: one key for the chunk (row b draws with
    `fold_in(key, b)`); readers (B,) rows of a conditioned model or None."""
    b = tokens.shape[0]
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(b, dtype=jnp.uint32))
    return sample_scanpaths_per_ct(model, jnp.asarray(tokens), keys, num_samples=num_samples,
                                   min_length=min_length,
                                   legacy_duration_sampling=legacy_duration_sampling, frame=frame,
                                   z_extent=np.broadcast_to(np.asarray(z_extent, np.float32), (b,)),
                                   readers=readers, temperature=temperature, top_k=top_k)
