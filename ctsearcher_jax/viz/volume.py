"""CT volumes for display: loading, intensity windows, projections, and gaze -> voxel coordinates.

Axes. A volume is kept as stored in the NIfTI (no reorientation), array axes (i, j, k) =
(row, column, slice), which map to gaze (Y, X, Z) as everywhere in the project.

Gaze -> voxel: `gaze_to_voxel` (from `ctsearcher_jax.data.coordinates`, the project's one
mapping): 0-based continuous voxel coordinates with voxel centres at integers (matplotlib's
`imshow` convention), `j = (X - 0.5) * J / 512 - 0.5`, `i = (Y - 0.5) * I / 512 - 0.5`,
`k = Z - 1`.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np

from ctsearcher_jax.data.coordinates import gaze_to_voxel  # noqa: F401 (re-exported for viz)
from ctsearcher_jax.data.nifti import DEFAULT_MAX_VOXELS, load_nifti_hu
from ctsearcher_jax.errors import DataError

# Named CT windows as (width, level) in Hounsfield units.
WINDOWS: dict[str, tuple[float, float]] = {
    "soft": (400.0, 40.0),    # soft tissue / abdomen
    "lung": (1500.0, -600.0),
    "bone": (1800.0, 400.0),
}


@dataclasses.dataclass(frozen=True)
class Window:
    """An intensity window: values in [level - width/2, level + width/2] map to [0, 1].

    label: what the figures print (e.g. "soft W400/L40", or "auto (percentiles)").
    """

    width: float
    level: float
    label: str

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Map intensities to [0, 1] float32 (clipped), same shape."""
        lo = self.level - self.width / 2.0
        return np.clip((np.asarray(values, np.float32) - lo) / np.float32(self.width), 0.0, 1.0)


def parse_window(spec: str) -> tuple[float, float] | None:
    """`soft` | `lung` | `bone` | `W,L` (e.g. `400,40`) -> (width, level); `auto` -> None.

    Raises ValueError with the accepted forms for anything else.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        return None
    if spec in WINDOWS:
        return WINDOWS[spec]
    parts = spec.split(",")
    if len(parts) == 2:
        try:
            width, level = float(parts[0]), float(parts[1])
        except ValueError:
            pass
        else:
            if width > 0 and np.isfinite(width) and np.isfinite(level):
                return width, level
    raise ValueError(f"window {spec!r}: use soft, lung, bone, auto, or WIDTH,LEVEL in HU "
                     f"(e.g. 400,40) with WIDTH > 0")


def resolve_window(spec: str, volume: np.ndarray) -> Window:
    """The window to draw `volume` with.

    A named or numeric window is in Hounsfield units. When the volume is evidently not in HU, the
    window maps almost every voxel to one grey (the 1st..99th percentile of the windowed values
    spans less than 5 % of the grey range: e.g. a volume scaled to [0, 1], all inside the soft
    window at 40 % grey), so this falls back to `auto` (0.5-99.5 percentiles) with a warning and
    says so in the label.
    """
    # order="K": a view in memory order, whatever the array's layout (no 300 MB copy).
    sample = volume.ravel(order="K")[:: max(1, volume.size // 200_000)]
    wl = parse_window(spec)
    if wl is not None:
        width, level = wl
        name = spec.strip().lower() if spec.strip().lower() in WINDOWS else "custom"
        window = Window(width, level, f"{name} W{width:g}/L{level:g}")
        p1, p99 = np.percentile(window.apply(sample), [1, 99])
        if p99 - p1 >= 0.05:
            return window
        warnings.warn(f"window {spec!r} (W{width:g}/L{level:g} HU) shows this volume as one grey "
                      f"(values {float(sample.min()):g}..{float(sample.max()):g}): it does not look "
                      f"like HU; using percentiles instead", stacklevel=2)
    lo, hi = np.percentile(sample, [0.5, 99.5])
    if not hi > lo:
        hi = lo + 1.0
    return Window(float(hi - lo), float((hi + lo) / 2), "auto (0.5-99.5 percentiles)")


@dataclasses.dataclass(frozen=True)
class CTVolume:
    """A CT as displayed: data (I, J, K) float32 as stored, voxel spacing (mm), source path."""

    data: np.ndarray
    spacing: tuple[float, float, float]
    path: Path

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]


def load_volume(path: str | os.PathLike[str], *, max_voxels: int = DEFAULT_MAX_VOXELS) -> CTVolume:
    """Read a 3D NIfTI volume (no reorientation) through `data.nifti.load_nifti_hu`, the
    project's one reader (its voxel policy: DataError naming the file for a volume too large,
    2D/4D, complex, RGB, non-finite, truncated, ...). A spacing that is not positive and finite
    is shown as 1 mm."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such CT volume")
    data, zooms, _ = load_nifti_hu(path, max_voxels=max_voxels)
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        zooms = (1.0, 1.0, 1.0)
    return CTVolume(data=data, spacing=zooms, path=path)


def project(windowed: np.ndarray, axis: int, mode: str = "mean") -> np.ndarray:
    """Project a windowed volume (I, J, K) in [0, 1] along `axis` with `mode` "mean" or "max".

    Returned images are oriented for display with row = first remaining axis:
    axis 2 (axial) -> (I, J) rows Y, columns X; axis 0 (coronal) -> (K, J) rows Z, columns X;
    axis 1 (sagittal) -> (K, I) rows Z, columns Y.
    """
    if mode == "mean":
        img = windowed.mean(axis=axis)
    elif mode == "max":
        img = windowed.max(axis=axis)
    else:
        raise ValueError(f"projection mode {mode!r}: use 'mean' or 'max'")
    # (J, K) and (I, K) -> slices on rows.
    return img if axis == 2 else img.T
