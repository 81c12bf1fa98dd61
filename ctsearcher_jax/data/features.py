"""Feature grids: read a Swin UNETR feature file, resize it to the model grid, flatten to tokens.

A feature file `<name>.npy` holds a channels-first float array `(C, gi, gj, gk)` whose axes (i, j, k)
map to gaze (Y, X, Z). The model sees `N = Gy*Gx*Gz` tokens of C channels; token
`iy*Gx*Gz + ix*Gz + iz` is grid cell (iy, ix, iz), the order of the original's
`rearrange('b d h w c -> b (h w c) d')`.

Resizing copies PyTorch's legacy `F.interpolate(mode="nearest")` exactly, including its float32
arithmetic (source index `min(floor(float32(dst) * float32(in / out)), in - 1)`), so any grid shape
gives the original's tokens. `jax.image.resize` rounds differently and must not be used here.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from ctsearcher_jax.errors import DataError
from ctsearcher_jax.paths import child_path

# numpy parses every .npy header with `ast.literal_eval`, and CPython 3.11's AST builder keeps its
# recursion depth in per-interpreter state: two threads parsing at once can fail with
# "SystemError: AST constructor recursion depth mismatch" (python/cpython gh-106905). The data
# pipeline's read threads load feature files concurrently, so loads take turns (a feature file
# is a few MB; the pipeline's prefetch keeps the step fed).
_NPY_LOAD_LOCK = threading.Lock()


def load_feature_grid(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one feature file.

    Returns: (C, gi, gj, gk) float32. Raises DataError for a missing, pickled, non-4D or
    non-finite array.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"feature file {path} does not exist; run `ctsearcher extract` for this CT "
                        "or point data.feature_dir at the folder holding <name>.npy")
    try:
        with _NPY_LOAD_LOCK:
            array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"feature file {path} is not a plain .npy array "
                        f"({str(exc).splitlines()[0][:200]}); run `ctsearcher extract` again, which "
                        "re-extracts damaged files (pickled files are refused)") from None
    if not isinstance(array, np.ndarray) or array.ndim != 4:
        shape = getattr(array, "shape", None)
        raise DataError(f"feature file {path} has shape {shape}; expected (C, gi, gj, gk) "
                        "channels-first, e.g. (768, 16, 16, 8)")
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"feature file {path} has dtype {array.dtype}; expected float32")
    array = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(array)):
        raise DataError(f"feature file {path} contains NaN or inf values; re-extract it "
                        "(`ctsearcher extract --recompute`)")
    return array


def legacy_nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """Source indices of PyTorch's legacy `nearest` along one axis.

    Returns (size_out,) int64: `min(floor(float32(dst) * (float32(in) / out)), in - 1)`, with torch's
    special cases out == in (identity) and out == 2*in (dst >> 1).
    """
    dst = np.arange(size_out, dtype=np.int64)
    if size_out == size_in:
        return dst
    if size_out == 2 * size_in:
        return dst >> 1
    # float32 on purpose: torch computes the scale and the product in single precision.
    scale = np.float32(size_in) / np.float32(size_out)
    src = np.floor(dst.astype(np.float32) * scale).astype(np.int64)
    return np.minimum(src, size_in - 1)


def resize_nearest_legacy(grid: np.ndarray, out: Sequence[int]) -> np.ndarray:
    """Resize a channels-first grid with PyTorch's legacy nearest.

    grid: (C, gi, gj, gk); out: (Gy, Gx, Gz). Returns (C, Gy, Gx, Gz), same dtype.
    """
    if grid.ndim != 4 or len(out) != 3:
        raise ValueError(f"expected a (C, gi, gj, gk) grid and a 3-tuple size, got {grid.shape}, {out}")
    ii, jj, kk = (legacy_nearest_indices(n_in, int(n_out)) for n_in, n_out in zip(grid.shape[1:], out))
    return grid[:, ii[:, None, None], jj[None, :, None], kk[None, None, :]]


def grid_to_tokens(grid: np.ndarray) -> np.ndarray:
    """Flatten a (C, Gy, Gx, Gz) grid to (N, C) tokens, token = iy*Gx*Gz + ix*Gz + iz."""
    c = grid.shape[0]
    return np.ascontiguousarray(grid.reshape(c, -1).T)


def load_tokens(feature_dir: str | os.PathLike[str], name: str, model_grid: Sequence[int]) -> np.ndarray:
    """Read `<feature_dir>/<name>.npy` and return its (N, C) float32 tokens on `model_grid`."""
    grid = load_feature_grid(child_path(feature_dir, name, ".npy"))
    return grid_to_tokens(resize_nearest_legacy(grid, tuple(model_grid)))
