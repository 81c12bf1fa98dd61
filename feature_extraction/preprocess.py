"""NIfTI loading and HU windowing for feature extraction.

The original (`swin_unet_extract_feature.py` of CTScanGaze) loads a CT with MONAI's `LoadImaged`
(nibabel reader: no reorientation, no resampling, slope/intercept applied, float32) and scales
Hounsfield units with `ScaleIntensityRanged(a_min=-175, a_max=250, b_min=0, b_max=1, clip=True)`.
This module does the same with numpy on top of `ctsearcher_jax.data.nifti.load_nifti_hu` (the
project's one NIfTI reader, which turns every way a file can be unusable into a `DataError` that
names the file and the fix).

Shapes: a volume is `(I, J, K)` float32 in the NIfTI's stored voxel order (axes i, j, k map to gaze
Y, X, Z); `spacing` is in millimetres per voxel along (i, j, k).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ctsearcher_jax.data.nifti import DEFAULT_MAX_VOXELS, NiftiInfo, open_nifti, read_hu


@dataclasses.dataclass(frozen=True)
class Volume:
    """A CT volume ready for the encoder.

    Attributes:
      array: `(I, J, K)` float32 intensities scaled to [0, 1] (HU window clipped).
      spacing: voxel size in mm along (i, j, k), from the NIfTI header (after reorientation if canonical).
      affine: `(4, 4)` float64 voxel-to-world (RAS mm) matrix of `array`.
      canonical: whether the voxels were reoriented to RAS.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    canonical: bool


def scale_hu(hu: np.ndarray, hu_min: float = -175.0, hu_max: float = 250.0) -> np.ndarray:
    """Map HU linearly from [hu_min, hu_max] to [0, 1] and clip, in float32 (MONAI's ScaleIntensityRange).

    Args:
      hu: any-shape array of Hounsfield units.
    Returns:
      float32 array of the same shape in [0, 1].
    """
    x = np.asarray(hu, dtype=np.float32)
    # Same order of operations as MONAI: (x - a_min) / (a_max - a_min), then clip.
    out = (x - np.float32(hu_min)) / np.float32(hu_max - hu_min)
    return np.clip(out, np.float32(0.0), np.float32(1.0))


def load_volume(path: str | os.PathLike[str] | NiftiInfo, *, hu_min: float = -175.0,
                hu_max: float = 250.0, canonical: bool = False,
                max_voxels: int = DEFAULT_MAX_VOXELS) -> Volume:
    """Load a NIfTI CT (a path, or a file `open_nifti` already checked) and scale it for the
    encoder (`read_hu`, then `scale_hu`'s arithmetic in place: memory stays one float32 volume)."""
    info = path if isinstance(path, NiftiInfo) else open_nifti(path, max_voxels=max_voxels)
    hu, spacing, affine = read_hu(info, canonical=canonical)
    # scale_hu's operations, in place on the float32 volume: the same numbers, no second copy
    np.subtract(hu, np.float32(hu_min), out=hu)
    np.divide(hu, np.float32(hu_max - hu_min), out=hu)
    np.clip(hu, np.float32(0.0), np.float32(1.0), out=hu)
    return Volume(array=hu, spacing=spacing, affine=affine, canonical=canonical)
