"""Abstract inputs of the programs: `jax.ShapeDtypeStruct`s carrying the shardings a run uses.

Nothing here allocates: shapes come from the config (the shapes `data/pipeline.py` produces for
one CT, and the train state `train/step.py` builds shape-first), and each struct carries the
`NamedSharding` the command puts that array under, so lowering sees the run's layout.

One CT example (R = readers per CT, L = model.max_length, N = prod(model.grid) tokens,
C = model.feature_dim, K = 1 + N classes), as `data.pipeline.CTExampleSource` yields it:

    tokens (N, C) f32, spatial (R, L, K) f32, duration / action_mask / duration_mask (R, L) f32,
    reader_mask (R,) f32, reader_ids (R,) i32, gaze (R, L, 4) f32, gaze_length (R,) i32,
    z_extent () f32, ct_mask () f32
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from ctsearcher_jax.config import Config

F32, I32 = np.dtype(np.float32), np.dtype(np.int32)


def example_shapes(config: Config, readers: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of every field of one CT example with `readers` reader slots."""
    m = config.model
    r, length, n = readers, m.max_length, m.num_tokens
    return {
        "tokens": ((n, m.feature_dim), F32),
        "spatial": ((r, length, m.num_classes), F32),
        "duration": ((r, length), F32),
        "action_mask": ((r, length), F32),
        "duration_mask": ((r, length), F32),
        "reader_mask": ((r,), F32),
        "reader_ids": ((r,), I32),
        "gaze": ((r, length, 4), F32),
        "gaze_length": ((r,), I32),
        "cells": ((r, length), I32),
        "offsets": ((r, length, 3), F32),
        "z_extent": ((), F32),
        "ct_mask": ((), F32),
    }


def batch_structs(config: Config, batch: int, readers: int, sharding) -> dict[str, Any]:
    """A global batch of `batch` CTs: each field (batch, ...) under `sharding` (the run's
    `train.sharding.batch_sharding(mesh)`: rows split over every device)."""
    return {k: jax.ShapeDtypeStruct((batch, *shape), dtype, sharding=sharding)
            for k, (shape, dtype) in example_shapes(config, readers).items()}


def with_shardings(abstract: Any, shardings: Any) -> Any:
    """A pytree of ShapeDtypeStructs (or arrays) -> ShapeDtypeStructs carrying `shardings`
    (a pytree of the same structure, or one sharding for every leaf)."""
    if isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=shardings),
                            abstract)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)

