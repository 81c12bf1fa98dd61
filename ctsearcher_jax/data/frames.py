"""The Z extent each CT's slices are binned over (`data.z_extent`).

The original bins Z over a fixed 512 slices (`z_extent: 512`, the default). With
`z_extent: volume` a CT's extent is its real slice count: the third axis of the volume shape that
feature extraction recorded in `<feature_dir>/manifest.json`.
"""

from __future__ import annotations

import os
from typing import Iterable

from ctsearcher_jax.config import DataConfig
from ctsearcher_jax.data.manifest import read_manifest
from ctsearcher_jax.errors import DataError


def slice_counts(feature_dir: str | os.PathLike[str]) -> dict[str, int]:
    """CT name -> number of slices (K of the stored (I, J, K) volume), from the feature manifest."""
    return {name: int(entry["volume_shape"][2]) for name, entry in read_manifest(feature_dir).items()
            if isinstance(entry, dict) and len(entry.get("volume_shape", ())) == 3}


def z_extents(data: DataConfig, names: Iterable[str],
              feature_dir: str | os.PathLike[str] | None = None) -> dict[str, int]:
    """CT name -> Z extent in slices for every name (the same 512 for all under the default).

    Raises DataError naming the CT and the manifest when `z_extent: volume` and a CT is missing.
    """
    names = list(names)
    if data.z_extent != "volume":
        return {name: int(data.z_extent) for name in names}
    feature_dir = feature_dir if feature_dir is not None else data.feature_dir
    counts = slice_counts(feature_dir)
    missing = [n for n in names if n not in counts]
    if missing:
        raise DataError(f"{os.path.join(feature_dir, 'manifest.json')}: no volume shape for CT(s) "
                        f"{missing[:5]}{'...' if len(missing) > 5 else ''}; data.z_extent=volume needs "
                        f"features made by `ctsearcher extract` (or set data.z_extent=512)")
    return {n: counts[n] for n in names}
