"""Checks on weight tensors read from user files (MONAI / original checkpoints, safetensors).

A parameter must be a finite floating-point array: an integer tensor where a weight belongs, or a
NaN/inf anywhere, makes every output of the model NaN or constant (predict then emits every
fixation at the same bin centre), so such files are refused when converted and when loaded.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ctsearcher_jax.errors import WeightsError


def check_weight_tensors(tensors: Mapping[str, np.ndarray], source: str,
                         error: type[Exception] = WeightsError,
                         int_keys: tuple[str, ...] = ()) -> None:
    """Raise `error` naming `source` and the first key that is not a finite float array.

    int_keys: key suffixes that are integer buffers by design (e.g. Swin's
    `relative_position_index`), exempt from both checks.
    """
    for key in sorted(tensors):
        if key.endswith(int_keys) and int_keys:
            continue
        value = np.asarray(tensors[key])
        if value.dtype.kind != "f":
            raise error(f"{source}: tensor {key!r} has dtype {value.dtype}; a weight must be a "
                        "floating-point tensor (the file is damaged or not a model checkpoint)")
        if not np.isfinite(value).all():
            bad = int(value.size - np.isfinite(value).sum())
            raise error(f"{source}: tensor {key!r} has {bad} NaN/inf values; the weights are "
                        "unusable (a diverged or damaged checkpoint)")
