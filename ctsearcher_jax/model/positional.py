"""Fixed 3D positional tables of the CT-Searcher token grid.

`sine_table(grid, d)` is the original's `PositionEmbeddingSine3d(normalize=True)` generalised to any
(Gy, Gx, Gz) grid: F = d // 3 features per axis, channels [0, F) encode y, [F, 2F) x, [2F, 3F) z
(the last d - 3F channels are zero when 3 does not divide d); within an axis, even channels are
sin and odd channels cos of `p * w_k` with `p = idx / (G - 1 + 1e-6) * 2pi` and
`w_k = exp(-2k ln(10000) / F)`. Row `iy*Gx*Gz + ix*Gz + iz` is cell (iy, ix, iz). The original
hard-codes 8x8x8 and needs 3 | d and an even F; for those shapes this is the same table.

`legacy_random_table` reproduces what the original model actually uses: its `_reset_parameters`
overwrites the sine table with a xavier-uniform draw (a fixed random table, never trained).

`sine_table` is host (NumPy) work; inside `shapes_only()` (what `model.serialization` wraps
around `nnx.eval_shape` of a build) `sine_table_array` gives an abstract table instead, so the
shapes of a config (even an absurd one: d_model 65536, grid 64^3) are known without allocating.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class PositionalTable(nnx.Variable):
    """A fixed table (N, d): saved with the model, never optimised, no weight decay."""


_SHAPES_ONLY = contextvars.ContextVar("ctsearcher_shapes_only", default=False)


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Builds in this block want shapes only (use it inside `jax.eval_shape` / `nnx.eval_shape`
    alone: `sine_table_array` then skips the host computation)."""
    token = _SHAPES_ONLY.set(True)
    try:
        yield
    finally:
        _SHAPES_ONLY.reset(token)


def sine_table_array(grid: Sequence[int], d_model: int) -> jax.Array:
    """`sine_table` as a jax array; under `shapes_only()` zeros of its shape (abstract inside
    `eval_shape`: nothing is computed or allocated)."""
    if _SHAPES_ONLY.get():
        gy, gx, gz = (int(g) for g in grid)
        return jnp.zeros((gy * gx * gz, d_model), jnp.float32)
    return jnp.asarray(sine_table(grid, d_model))


def _axis_table(size: int, num_feats: int) -> np.ndarray:
    """(size, num_feats) float32 sin/cos features of one axis."""
    # The position, the frequencies and their product follow the original's float32 arithmetic;
    # sin/cos/exp are evaluated in float64 and rounded once. torch's vectorised float32
    # transcendentals differ from correct rounding by at most 1 ulp (see tests/test_model_positional.py).
    pos = np.arange(size, dtype=np.float32) / np.float32(size - 1 + 1e-6) * np.float32(2 * math.pi)
    k = np.arange(0, num_feats, 2).astype(np.float32)
    freqs = np.exp((k * np.float32(-math.log(10000.0) / num_feats)).astype(np.float64)).astype(np.float32)
    arg = (pos[:, None] * freqs[None, :]).astype(np.float64)
    table = np.zeros((size, num_feats), np.float32)
    table[:, 0::2] = np.sin(arg)
    table[:, 1::2] = np.cos(arg)[:, : num_feats // 2]
    return table


def sine_table(grid: Sequence[int], d_model: int) -> np.ndarray:
    """The 3D sine table (Gy*Gx*Gz, d_model) float32 for `grid` = (Gy, Gx, Gz)."""
    gy, gx, gz = (int(g) for g in grid)
    f = d_model // 3
    table = np.zeros((gy, gx, gz, d_model), np.float32)
    if f > 0:
        table[..., 0:f] = _axis_table(gy, f)[:, None, None, :]
        table[..., f:2 * f] = _axis_table(gx, f)[None, :, None, :]
        table[..., 2 * f:3 * f] = _axis_table(gz, f)[None, None, :, :]
    return table.reshape(gy * gx * gz, d_model)


def legacy_random_table(key: jax.Array, num_tokens: int, d_model: int) -> jax.Array:
    """The original's table after xavier_uniform_ on its (N, 1, d) parameter: (N, d) float32.

    torch's fans for an (N, 1, d) tensor are fan_in = 1*d, fan_out = N*d, so the bound is
    sqrt(6 / (d + N*d)).
    """
    bound = math.sqrt(6.0 / (d_model + num_tokens * d_model))
    return jax.random.uniform(key, (num_tokens, d_model), jnp.float32, -bound, bound)
