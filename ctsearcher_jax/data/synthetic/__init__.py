"""Synthetic CT-ScanGaze: CT-like phantoms and radiologist-like scanpaths, reproducible to the byte.

`synthesize(out_dir, num_cts=..., num_readers=..., seed=...)` writes a dataset in exactly the
format of the CT-ScanGaze release (`writing`): NIfTI phantoms from `anatomy`, one scanpath per
(CT, reader) from `readers`, each drawn from its own random stream (`seeds`).

Gaze coordinates follow the project's convention (README, "Data format and conventions"):
volume axes (i, j, k) map to gaze (Y, X, Z); X, Y are 1-based pixels of the 512 frame, Z the
1-based slice number. `ctsearcher_jax.data.coordinates` holds the mapping; `voxel_to_gaze` and
`gaze_to_voxel` here are its stacked (..., 3) forms.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ctsearcher_jax.data import coordinates
from ctsearcher_jax.data.synthetic.anatomy import (
    AIR_HU,
    DEFAULT_SHAPE,
    MIN_SHAPE,
    Lesion,
    check_shape,
    make_phantom,
    make_report,
)
from ctsearcher_jax.data.synthetic.readers import GazeSequence, ReaderStyle, make_scanpath, reader_style
from ctsearcher_jax.data.synthetic.writing import (
    CT_DIR,
    DATASET_JSON,
    GENERATOR_VERSION,
    HU_INTERCEPT,
    META_JSON,
    TASK,
    TEST_FRACTION,
    SynthSummary,
    ct_name,
    nifti_gz_bytes,
    phantom_affine,
    split_of_cts,
    synthesize,
)


def voxel_to_gaze(ijk: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Voxel indices (..., 3) as (i, j, k), 0-based -> gaze (..., 3) as (X, Y, Z)."""
    ijk = np.asarray(ijk, dtype=np.float64)
    return np.stack(coordinates.voxel_to_gaze(ijk[..., 0], ijk[..., 1], ijk[..., 2], shape), axis=-1)


def gaze_to_voxel(xyz: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Gaze (..., 3) as (X, Y, Z) -> voxel indices (..., 3) as (i, j, k)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    return np.stack(coordinates.gaze_to_voxel(xyz[..., 0], xyz[..., 1], xyz[..., 2], shape), axis=-1)


__all__ = ["AIR_HU", "CT_DIR", "DATASET_JSON", "DEFAULT_SHAPE", "GENERATOR_VERSION", "GazeSequence",
           "HU_INTERCEPT", "Lesion", "META_JSON", "MIN_SHAPE", "ReaderStyle", "SynthSummary", "TASK",
           "TEST_FRACTION", "check_shape", "ct_name", "gaze_to_voxel", "make_phantom",
           "make_report", "make_scanpath", "nifti_gz_bytes", "phantom_affine", "reader_style",
           "split_of_cts", "synthesize", "voxel_to_gaze"]
