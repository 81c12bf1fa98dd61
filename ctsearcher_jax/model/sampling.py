"""Drawing scanpaths from CT-Searcher: one jit-compiled function for a batch of CTs.

The model is not autoregressive (learned decoder queries), so one forward pass gives every step's
class distribution and duration parameters; each step is drawn independently:

* class ~ Categorical(softmax(logits)) over K = 1 + N classes, class 0 = STOP (also for a
  `legacy_stop_last` model: the original pairs logits and classes index by index, so do we);
  STOP is forbidden at steps < min_length; the first STOP ends the scanpath (length = its step);
* duration = exp(mu + sqrt(sigma2) * eps), eps ~ N(0, 1) (log-normal; `legacy_duration_sampling`
  uses the original's exp(mu + sigma2 * eps));
* class a >= 1 is token a - 1 = iy*Gx*Gz + ix*Gz + iz, decoded to the bin centre
  (ix + 1/2) * frame/Gx, (iy + 1/2) * frame/Gy, (iz + 1/2) * z_extent/Gz; for 8x8x8 and 512 that is
  the original's `bin*64 + 32`.

Outputs are padded arrays (zeros after each length) and convert to dataset records.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ctsearcher_jax.config import GAZE_FRAME


class SampledScanpaths(NamedTuple):
    """S sampled scanpaths for each of B CTs, padded to L = max_length.

    coords: (B, S, L, 3) float32 [x, y, z] bin centres in the gaze frame (0 after the length).
    durations: (B, S, L) float32 seconds (0 after the length).
    lengths: (B, S) int32 fixations before the first STOP.
    classes: (B, S, L) int32 sampled classes (0 = STOP), unmasked.
    """

    coords: jax.Array
    durations: jax.Array
    lengths: jax.Array
    classes: jax.Array


def class_to_coords(classes: jax.Array, grid: Sequence[int], frame: jax.Array | float,
                    z_extent: jax.Array | float) -> jax.Array:
    """Bin centres (..., 3) [x, y, z] float32 of classes >= 1 (class 0 gives cell 0's centre)."""
    gy, gx, gz = (int(g) for g in grid)
    token = jnp.maximum(classes - 1, 0)
    iz = token % gz
    ix = (token // gz) % gx
    iy = token // (gx * gz)
    frame = jnp.asarray(frame, jnp.float32)
    z_extent = jnp.asarray(z_extent, jnp.float32)

    def centre(index, extent, bins):
        step = extent / bins
        return index.astype(jnp.float32) * step + step / 2

    return jnp.stack([centre(ix, frame, gx), centre(iy, frame, gy), centre(iz, z_extent, gz)], axis=-1)


def decode_classes(classes: jax.Array, durations: jax.Array, *, grid: Sequence[int],
                   frame: jax.Array | float = GAZE_FRAME, z_extent: jax.Array | float = GAZE_FRAME
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sampled classes (..., L) and durations (..., L) -> (coords (..., L, 3), durations, lengths (...)).

    The length is the step of the first STOP (L if none); coords and durations are 0 from there on.
    z_extent: scalar or an array broadcasting against classes (e.g. (B, 1, 1)).
    """
    length = classes.shape[-1]
    is_stop = classes == 0
    lengths = jnp.where(is_stop.any(-1), jnp.argmax(is_stop, axis=-1), length).astype(jnp.int32)
    valid = jnp.arange(length) < lengths[..., None]
    coords = class_to_coords(classes, grid, frame, z_extent)
    coords = jnp.where(valid[..., None], coords, 0.0)
    durations = jnp.where(valid, durations.astype(jnp.float32), 0.0)
    return coords, durations, lengths


def draw_from_outputs(logits: jax.Array, mu: jax.Array, log_sigma2: jax.Array, key: jax.Array, *,
                      grid: Sequence[int], num_samples: int, min_length: int,
                      legacy_duration_sampling: bool = False, frame: jax.Array | float = GAZE_FRAME,
                      z_extent: jax.Array | float = GAZE_FRAME) -> SampledScanpaths:
    """Sample from model outputs: logits (B, L, K), mu and log_sigma2 (B, L).

    z_extent: a scalar or (B,) per CT (z_extent = "volume"). Returns SampledScanpaths with S = num_samples.
    """
    b, length, _ = logits.shape
    key_class, key_duration = jax.random.split(key)
    logits = logits.astype(jnp.float32)
    # STOP (class 0) is impossible before min_length, as the original's probs[:, :min_length, 0] = 0.
    early = jnp.arange(length) < min_length
    logits = logits.at[:, :, 0].set(jnp.where(early, -jnp.inf, logits[:, :, 0]))
    logits = jnp.broadcast_to(logits[:, None], (b, num_samples, *logits.shape[1:]))
    classes = jax.random.categorical(key_class, logits, axis=-1).astype(jnp.int32)  # (B, S, L)

    eps = jax.random.normal(key_duration, (b, num_samples, length), jnp.float32)
    mu = mu.astype(jnp.float32)[:, None]
    log_sigma2 = log_sigma2.astype(jnp.float32)[:, None]
    scale = jnp.exp(log_sigma2) if legacy_duration_sampling else jnp.exp(0.5 * log_sigma2)
    durations = jnp.exp(mu + scale * eps)
    z_extent = jnp.broadcast_to(jnp.asarray(z_extent, jnp.float32), (b,))[:, None, None]
    coords, durations, lengths = decode_classes(classes, durations, grid=grid, frame=frame,
                                                z_extent=z_extent)
    return SampledScanpaths(coords, durations, lengths, classes)


@functools.partial(nnx.jit, static_argnames=("num_samples", "min_length", "legacy_duration_sampling"))
def _sample_jit(model: Any, tokens: jax.Array, key: jax.Array, frame: jax.Array, z_extent: jax.Array,
                readers: jax.Array | None, *, num_samples: int, min_length: int,
                legacy_duration_sampling: bool) -> SampledScanpaths:
    out = model(tokens, readers, deterministic=True)
    return draw_from_outputs(out.spatial_logits, out.duration_mu, out.duration_log_sigma2, key,
                             grid=model.config.grid, num_samples=num_samples, min_length=min_length,
                             legacy_duration_sampling=legacy_duration_sampling, frame=frame,
                             z_extent=z_extent)


def sample_scanpaths(model: Any, tokens: jax.Array, key: jax.Array, *, num_samples: int, min_length: int,
                     legacy_duration_sampling: bool = False, frame: float = GAZE_FRAME,
                     z_extent: float | Sequence[float] | np.ndarray = GAZE_FRAME,
                     readers: Sequence[int] | np.ndarray | None = None) -> SampledScanpaths:
    """Draw `num_samples` scanpaths for each CT of `tokens` (B, N, C) with one jitted call.

    Deterministic for a given `key`. z_extent: the Z extent binned into Gz cells, scalar or (B,).
    readers: (B,) embedding rows of a reader-conditioned model (row b conditions CT b); None for
    an unconditioned model.
    """
    b = tokens.shape[0]
    z = jnp.broadcast_to(jnp.asarray(z_extent, jnp.float32), (b,))
    if readers is not None:
        readers = jnp.asarray(readers, jnp.int32).reshape(b)
    return _sample_jit(model, jnp.asarray(tokens), key, jnp.asarray(frame, jnp.float32), z, readers,
                       num_samples=int(num_samples), min_length=int(min_length),
                       legacy_duration_sampling=bool(legacy_duration_sampling))


@functools.partial(nnx.jit, static_argnames=("num_samples", "min_length", "legacy_duration_sampling"))
def _sample_per_ct_jit(model: Any, tokens: jax.Array, keys: jax.Array, frame: jax.Array,
                       z_extent: jax.Array, *, num_samples: int, min_length: int,
                       legacy_duration_sampling: bool) -> SampledScanpaths:
    out = model(tokens, deterministic=True)

    def one(logits, mu, log_sigma2, key, z):
        drawn = draw_from_outputs(logits[None], mu[None], log_sigma2[None], key,
                                  grid=model.config.grid, num_samples=num_samples,
                                  min_length=min_length,
                                  legacy_duration_sampling=legacy_duration_sampling, frame=frame,
                                  z_extent=z[None])
        return jax.tree.map(lambda a: a[0], drawn)

    return jax.vmap(one)(out.spatial_logits, out.duration_mu, out.duration_log_sigma2, keys,
                         z_extent)


def sample_scanpaths_per_ct(model: Any, tokens: jax.Array, keys: jax.Array, *, num_samples: int,
                            min_length: int, legacy_duration_sampling: bool = False,
                            frame: float = GAZE_FRAME, z_extent: jax.Array | np.ndarray | float = GAZE_FRAME
                            ) -> SampledScanpaths:
    """Like `sample_scanpaths`, with one key per CT: `tokens` (B, N, C), `keys` (B,) typed keys.

    CT b's scanpaths depend only on its tokens and keys[b], not on the other CTs of the batch,
    so batching, padding, device sharding and the split over processes leave them unchanged.
    Arrays may be sharded along B (the model's state then replicated on the same devices).
    """
    b = tokens.shape[0]
    z = jnp.broadcast_to(jnp.asarray(z_extent, jnp.float32), (b,)) if np.ndim(z_extent) == 0 \
        else z_extent
    return _sample_per_ct_jit(model, tokens, keys, jnp.asarray(frame, jnp.float32), z,
                              num_samples=int(num_samples), min_length=int(min_length),
                              legacy_duration_sampling=bool(legacy_duration_sampling))


def sampled_to_records(sampled: SampledScanpaths, names: Sequence[str],
                       subjects: Sequence[Any]) -> list[dict[str, Any]]:
    """Dataset-format records {name, subject, X, Y, Z, T, length}, CT-major then sample.

    names: (B,) CT names. subjects: per CT either one subject for all its samples or a sequence of
    S subjects (e.g. the reader each sample stands for).
    """
    coords = np.asarray(sampled.coords, np.float64)
    durations = np.asarray(sampled.durations, np.float64)
    lengths = np.asarray(sampled.lengths)
    b, s = lengths.shape
    if len(names) != b or len(subjects) != b:
        raise ValueError(f"need {b} names and subjects, got {len(names)} and {len(subjects)}")
    records = []
    for i in range(b):
        per_sample = subjects[i] if isinstance(subjects[i], (list, tuple, np.ndarray)) else [subjects[i]] * s
        if len(per_sample) != s:
            raise ValueError(f"CT {names[i]}: {len(per_sample)} subjects for {s} samples")
        for j in range(s):
            n = int(lengths[i, j])
            records.append({
                "name": names[i], "subject": per_sample[j],
                "X": coords[i, j, :n, 0].tolist(), "Y": coords[i, j, :n, 1].tolist(),
                "Z": coords[i, j, :n, 2].tolist(), "T": durations[i, j, :n].tolist(), "length": n,
            })
    return records
