"""NIfTI CT files: their names and the project's one reader of their voxels.

Every command that opens a CT volume (extraction, prediction, the figures, the viewer,
`validate-data`) reads it through `load_nifti_hu`, so a file is refused for the same reasons, with
the same message, everywhere. `feature_extraction` builds its preprocessing on top of it; this
module imports nothing of the project but its errors.

Shapes: a volume is `(I, J, K)` float32 Hounsfield units in the NIfTI's stored voxel order (axes
i, j, k map to gaze Y, X, Z); spacing is in millimetres per voxel along (i, j, k).
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from ctsearcher_jax.errors import DataError

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti_name(path: str | os.PathLike[str]) -> bool:
    """True when the file name ends with `.nii` or `.nii.gz` (case-insensitive)."""
    name = Path(path).name.lower()
    return any(name.endswith(s) for s in NIFTI_SUFFIXES)


def volume_name(path: str | os.PathLike[str]) -> str:
    """The output name of a CT: its file name without `.nii` / `.nii.gz` (`a.b.nii.gz` -> `a.b`).

    The original cut at the first dot, so `a.b.nii.gz` and `a.c.nii.gz` both became `a`.
    """
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    raise DataError(f"{path}: not a NIfTI file name (expected .nii or .nii.gz)")


def load_nifti_hu(path: str | os.PathLike[str], canonical: bool = False
                  ) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """Read a 3D NIfTI as stored: `(I, J, K)` float32 HU (slope/intercept applied), spacing, affine.

    Trailing singleton axes (`(I, J, K, 1)`) are dropped. With `canonical=True` the image is first
    reoriented to RAS with `nibabel.as_closest_canonical` (voxel flips/permutations, no resampling).

    Raises:
      DataError: the file is not NIfTI, is truncated or corrupt, is not 3D, or has no finite voxels.
    """
    path = Path(path)
    try:
        image = nib.load(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as exc:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, ...)
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc}); "
                        "check that it is a .nii/.nii.gz CT volume and re-export it") from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"{path}: {type(image).__name__} is not NIfTI; convert it to .nii.gz")
    shape = tuple(int(s) for s in image.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        fix = ("split the 4D series into one file per volume" if len(shape) > 3 else
               "a single slice or a projection is not a CT volume; export the whole series as "
               "one 3D NIfTI")
        raise DataError(f"{path}: volume has shape {tuple(image.shape)}, expected a 3D CT (I, J, K); "
                        f"{fix}")
    if min(shape) < 1:
        raise DataError(f"{path}: volume has an empty axis {shape}")
    if canonical:
        try:
            image = nib.as_closest_canonical(image)
        except Exception as exc:
            raise DataError(f"{path}: cannot reorient to RAS ({exc}); run without canonical") from None
    try:
        # dataobj applies scl_slope / scl_inter; reading it decompresses the whole file, which is
        # where a truncated or corrupt .nii.gz fails.
        data = np.asarray(image.dataobj)
    except Exception as exc:
        raise DataError(f"{path}: voxel data cannot be read ({type(exc).__name__}: {exc}); "
                        "the file is truncated or corrupt, re-copy or re-export it") from None
    data = data.reshape(data.shape[:3]).astype(np.float32, copy=False)
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        what = "has no finite voxels (all NaN/inf)" if bad == data.size else \
            f"has {bad} NaN/inf voxels of {data.size}"
        raise DataError(f"{path}: volume {what}; fix or exclude this CT")
    zooms = image.header.get_zooms()[:3]
    spacing = tuple(float(z) for z in zooms)
    return np.ascontiguousarray(data), spacing, np.asarray(image.affine, dtype=np.float64)
