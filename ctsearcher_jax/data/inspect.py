"""Dataset-wide checks and a summary for `ctsearcher validate-data`.

Record-level rules live in `schema.py`; this module adds what needs the whole folder: volumes
present under `cts/` (and their slice counts as the Z bound), every volume's header and voxels
against the voxel policy of `data.nifti` (read streamed: memory stays one piece of a volume),
readers per CT, and a summary.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from ctsearcher_jax.config import GAZE_FRAME
from ctsearcher_jax.data import schema
from ctsearcher_jax.data.nifti import DEFAULT_MAX_VOXELS, is_nifti_name, open_nifti, scan_voxels, volume_name
from ctsearcher_jax.errors import DataError


def volume_stem(path: str | os.PathLike[str]) -> str | None:
    """CT name of a NIfTI file: the file name without `.nii` / `.nii.gz` (None if not NIfTI).

    The same rule as feature extraction's output names, so dataset names, volumes and feature
    files line up.
    """
    return volume_name(path) if is_nifti_name(path) and volume_name(path) else None


def find_volumes(cts_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Map CT name -> NIfTI path for every `.nii` / `.nii.gz` file in `cts_dir` (sorted)."""
    out: dict[str, Path] = {}
    for path in sorted(Path(cts_dir).iterdir()):
        stem = volume_stem(path)
        if stem is not None and path.is_file():
            out[stem] = path
    return out


def slice_counts(volumes: dict[str, Path], *, max_voxels: int = DEFAULT_MAX_VOXELS,
                 read_voxels: bool = False) -> tuple[dict[str, int], list[str]]:
    """Number of slices (third voxel axis) per CT from its header (`data.nifti.open_nifti`), and
    one problem line per volume the voxel policy refuses (those get no count).

    read_voxels: also read every voxel (streamed, one piece in memory at a time) and report the
    volumes that are truncated, larger than their header says, or not finite.
    """
    counts, problems = {}, []
    for name, path in volumes.items():
        try:
            info = open_nifti(path, max_voxels=max_voxels)
            problem = scan_voxels(info).problem if read_voxels else None
        except DataError as exc:
            problems.append(str(exc))
            continue
        if problem is not None:
            problems.append(problem)
            continue
        counts[name] = info.shape[2]
    return counts, problems


@dataclasses.dataclass
class DatasetReport:
    """What `validate-data` prints: a summary of the good records and every problem found."""

    json_path: Path
    items: list[schema.CTItem]
    problems: list[str]
    # Worth a look but not wrong: coordinates at 0 (a 0-based export; `evaluate` scores them).
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problems (warnings do not count)."""
        return not self.problems

    def summary_lines(self) -> list[str]:
        scanpaths = [r for it in self.items for r in it.readers]
        lines = [f"dataset: {self.json_path}",
                 f"CTs: {len(self.items)}   scanpaths: {len(scanpaths)}"]
        if not scanpaths:
            return lines
        readers = np.array([it.num_readers for it in self.items])
        lengths = np.array([sp.length for sp in scanpaths])
        durations = np.concatenate([sp.t for sp in scanpaths])
        lines.append(f"readers per CT: min {readers.min()}  median {np.median(readers):g}  "
                     f"max {readers.max()}")
        lines.append(f"fixations per scanpath: min {lengths.min()}  median {np.median(lengths):g}  "
                     f"max {lengths.max()}  (total {lengths.sum()})")
        lines.append(f"durations (s): min {durations.min():.3f}  median {np.median(durations):.3f}  "
                     f"max {durations.max():.3f}")
        for axis in ("x", "y", "z"):
            values = np.concatenate([getattr(sp, axis) for sp in scanpaths])
            lines.append(f"{axis.upper()} range: {values.min():g} .. {values.max():g}")
        splits: dict[str, list[int]] = {}
        for it in self.items:
            s = splits.setdefault(str(it.split), [0, 0])
            s[0] += 1
            s[1] += it.num_readers
        lines.append("splits: " + ", ".join(f"{k} {v[0]} CTs / {v[1]} scanpaths"
                                            for k, v in sorted(splits.items())))
        return lines


def validate_dataset(path: str | os.PathLike[str], *, frame: int = GAZE_FRAME,
                     check_volumes: bool = True, max_voxels: int = DEFAULT_MAX_VOXELS,
                     read_voxels: bool = True) -> DatasetReport:
    """Validate a dataset folder (or JSON), collecting every problem instead of stopping.

    When the folder has `cts/`, every CT must have a volume there, every volume must pass the
    voxel policy of `data.nifti` (header, size <= `max_voxels`, and with `read_voxels` every
    voxel, streamed), and Z is bounded by the volume's slice count; otherwise Z is bounded by the
    512 frame. Raises `DataError` only when the file itself cannot be read as a JSON list.
    """
    json_path = schema.find_dataset_json(path)
    records = schema.read_json_records(json_path)
    problems: list[str] = []
    z_limits = None
    cts_dir = json_path.parent / "cts"
    volumes: dict[str, Path] = {}
    if check_volumes and cts_dir.is_dir():
        volumes = find_volumes(cts_dir)
        z_limits, volume_problems = slice_counts(volumes, max_voxels=max_voxels,
                                                 read_voxels=read_voxels)
        problems.extend(volume_problems)
    # [0, frame] is accepted (0-based exports exist and the metrics score them); below 1 is a
    # warning, since the dataset convention is 1-based
    scanpaths, record_problems = schema.parse_records(
        records, str(json_path), frame=frame, z_limits=z_limits, collect=True, lowest=0)
    problems.extend(record_problems)
    warnings = [w for sp in scanpaths if (w := _below_one(sp, json_path)) is not None]
    if not records:
        problems.append(f"{json_path}: contains no records")
    items: list[schema.CTItem] = []
    try:
        items = schema.group_by_ct(scanpaths, json_path)
    except DataError as exc:
        problems.append(str(exc))
    if check_volumes and cts_dir.is_dir():
        for it in items:
            if it.name not in volumes:
                problems.append(f"{json_path}: CT {it.name!r} (records "
                                f"{[r.index for r in it.readers]}) has no volume "
                                f"{cts_dir / (it.name + '.nii.gz')}")
    return DatasetReport(json_path=json_path, items=items, problems=problems, warnings=warnings)


def _below_one(sp: schema.Scanpath, json_path: Path) -> str | None:
    """A warning naming the record when any X, Y or Z lies in [0, 1) (the convention is 1-based)."""
    low = {axis.upper(): int((getattr(sp, axis) < 1).sum()) for axis in ("x", "y", "z")}
    low = {k: v for k, v in low.items() if v}
    if not low:
        return None
    counts = ", ".join(f"{k} {v}" for k, v in low.items())
    return (f"{json_path}: record {sp.index}, CT {sp.name!r}: coordinates below 1 ({counts} "
            f"fixation(s)); the dataset convention is 1-based: a 0-based export? `evaluate` "
            f"scores it as it is")
