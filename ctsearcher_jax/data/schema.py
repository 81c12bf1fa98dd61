"""The CT-ScanGaze record format: load, validate and group by CT, in one place.

A dataset is `data_simplified_split_matched_pt.json`: a JSON list of records, one per (CT, reader)::

    {"name": "ct_0001", "subject": 1, "task": "...", "X": [...], "Y": [...], "Z": [...],
     "T": [...], "length": 7, "split": "train", "report": "..."}

X, Y are 1-based pixels of a 512 x 512 slice, Z a 1-based slice number, T fixation durations in
seconds. Predictions use the same format without `split`, `task` and `report`.

Every problem raises `DataError` naming the file, the record index, the CT name and the field.
`validate_file` collects all problems instead of stopping at the first (for `validate-data`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ctsearcher_jax.config import GAZE_FRAME
from ctsearcher_jax.errors import DataError
from ctsearcher_jax.io import read_json
from ctsearcher_jax.paths import name_problem

DATASET_JSON = "data_simplified_split_matched_pt.json"
KNOWN_SPLITS = ("train", "valid", "validation", "val", "test")
COORD_FIELDS = ("X", "Y", "Z", "T")


@dataclasses.dataclass(frozen=True, eq=False)
class Scanpath:
    """One reader's scanpath over one CT.

    x, y, z: (n,) float64 gaze coordinates (pixels, pixels, slice number; 1-based).
    t: (n,) float64 fixation durations in seconds.
    """

    name: str
    subject: Any
    split: str | None
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    t: np.ndarray
    index: int = -1  # position of the record in its file (-1 when built in memory)
    task: str | None = None
    report: str | None = None

    @property
    def length(self) -> int:
        """Number of fixations."""
        return int(self.x.shape[0])

    def as_array(self) -> np.ndarray:
        """(n, 4) float64 array of [x, y, z, t_seconds] rows."""
        return np.stack([self.x, self.y, self.z, self.t], axis=1)

    def to_record(self) -> dict[str, Any]:
        """The dataset record form (JSON-serialisable)."""
        rec: dict[str, Any] = {"name": self.name, "subject": self.subject}
        if self.task is not None:
            rec["task"] = self.task
        for key, arr in zip(COORD_FIELDS, (self.x, self.y, self.z, self.t)):
            rec[key] = [float(v) for v in arr]
        rec["length"] = self.length
        if self.split is not None:
            rec["split"] = self.split
        if self.report is not None:
            rec["report"] = self.report
        return rec


@dataclasses.dataclass(frozen=True, eq=False)
class CTItem:
    """One CT with every reader's scanpath (the unit of a dataset item)."""

    name: str
    split: str | None
    readers: tuple[Scanpath, ...]

    @property
    def num_readers(self) -> int:
        return len(self.readers)


def find_dataset_json(path: str | os.PathLike[str]) -> Path:
    """Accept a dataset folder or a JSON file; return the JSON path."""
    path = Path(path)
    if path.is_dir():
        candidate = path / DATASET_JSON
        if not candidate.is_file():
            raise DataError(f"{path}: no {DATASET_JSON} in this folder; pass the dataset folder "
                            f"(made by `ctsearcher synth` or the CT-ScanGaze release) or the JSON file")
        return candidate
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")
    return path


def read_json_records(path: str | os.PathLike[str]) -> list[Any]:
    """Read a JSON list of records (no validation of the records themselves).

    Invalid or hostile JSON (deep nesting, huge integers: see `ctsearcher_jax.io.read_json`) is a
    one-line DataError naming the file.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def _where(source: str, index: int, record: Any) -> str:
    name = record.get("name") if isinstance(record, Mapping) else None
    if not isinstance(name, str):
        return f"{source}: record {index}"
    return f"{source}: record {index}, CT {name if len(name) <= 80 else name[:77] + '...'!r}"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_record(record: Any, index: int, source: str = "<records>", *,
                 require_split: bool = True, frame: int = GAZE_FRAME,
                 z_limit: float | None = GAZE_FRAME, lowest: float = 1) -> list[str]:
    """All problems of one record, each a message naming source, record, CT and field.

    frame: X and Y must lie in [lowest, frame]. z_limit: Z must lie in [lowest, z_limit] (None:
    no upper bound, e.g. when the CT's slice count is unknown and `z_extent: volume` is used).
    lowest: 1 for the dataset convention (1-based); 0 where 0-based exports are accepted
    (`evaluate` scores [0, frame], as the original's metrics do).
    """
    where = _where(source, index, record)
    if not isinstance(record, Mapping):
        return [f"{where}: expected a JSON object, got {type(record).__name__}"]
    problems: list[str] = []
    name = record.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"{where}: field 'name' must be a non-empty string")
    elif (why := name_problem(name)) is not None:
        # the name becomes <feature_dir>/<name>.npy, cts/<name>.nii.gz, figure names: it must
        # not point outside those folders
        problems.append(f"{where}: field 'name' {why}; CT names are plain file names")
    subject = record.get("subject")
    if "subject" not in record or isinstance(subject, (list, dict, bool)) or subject is None \
            or (isinstance(subject, float) and not math.isfinite(subject)):
        problems.append(f"{where}: field 'subject' must be a reader id (integer or string)")
    if require_split:
        split = record.get("split")
        if split not in KNOWN_SPLITS:
            problems.append(f"{where}: field 'split' is {split!r}; expected one of {list(KNOWN_SPLITS)}")
    elif "split" in record and record["split"] not in KNOWN_SPLITS:
        problems.append(f"{where}: field 'split' is {record['split']!r}; "
                        f"expected one of {list(KNOWN_SPLITS)}")
    for key in ("task", "report"):
        if key in record and record[key] is not None and not isinstance(record[key], str):
            problems.append(f"{where}: field '{key}' must be a string")
    lengths = {}
    for key in COORD_FIELDS:
        values = record.get(key)
        if not isinstance(values, list):
            problems.append(f"{where}: field '{key}' must be a list of numbers")
            continue
        if len(values) == 0:
            problems.append(f"{where}: field '{key}' is empty; a scanpath needs >= 1 fixation")
            continue
        bad = [i for i, v in enumerate(values) if not _is_number(v) or not math.isfinite(v)]
        if bad:
            problems.append(f"{where}: field '{key}' has non-finite or non-numeric values at "
                            f"fixations {bad[:5]}{'...' if len(bad) > 5 else ''}")
            continue
        lengths[key] = len(values)
        arr = np.asarray(values, dtype=np.float64)
        if key == "T":
            low = np.nonzero(arr <= 0)[0]
            if low.size:
                problems.append(f"{where}: field 'T' must be > 0 seconds; fixations "
                                f"{low[:5].tolist()} are not")
        else:
            hi = frame if key in ("X", "Y") else z_limit
            out = np.nonzero((arr < lowest) | ((arr > hi) if hi is not None else False))[0]
            if out.size:
                rng = f"[{lowest:g}, {hi:g}]" if hi is not None else f"[{lowest:g}, inf)"
                problems.append(f"{where}: field '{key}' outside the frame {rng} at fixations "
                                f"{out[:5].tolist()} (e.g. {arr[out[0]]:g})")
    if len(set(lengths.values())) > 1:
        problems.append(f"{where}: fields X, Y, Z, T have different lengths {lengths}")
    if "length" in record:
        length = record["length"]
        if not isinstance(length, int) or isinstance(length, bool):
            problems.append(f"{where}: field 'length' must be an integer")
        elif lengths and length != max(lengths.values()):
            problems.append(f"{where}: field 'length' is {length} but X has "
                            f"{lengths.get('X', max(lengths.values()))} fixations")
    elif require_split:
        problems.append(f"{where}: field 'length' is missing")
    return problems


def _to_scanpath(record: Mapping[str, Any], index: int) -> Scanpath:
    arrays = [np.asarray(record[k], dtype=np.float64) for k in COORD_FIELDS]
    return Scanpath(name=record["name"], subject=record["subject"], split=record.get("split"),
                    x=arrays[0], y=arrays[1], z=arrays[2], t=arrays[3], index=index,
                    task=record.get("task"), report=record.get("report"))


def parse_records(records: Iterable[Any], source: str = "<records>", *, require_split: bool = True,
                  frame: int = GAZE_FRAME, z_limits: Mapping[str, float | None] | None = None,
                  default_z_limit: float | None = GAZE_FRAME,
                  collect: bool = False, lowest: float = 1) -> tuple[list[Scanpath], list[str]]:
    """Validate records and convert the good ones to `Scanpath`s.

    z_limits: per-CT upper bound of Z (e.g. slice counts read from the volumes).
    lowest: smallest X, Y, Z accepted (see `check_record`).
    collect: return (scanpaths, problems) instead of raising on the first problem.
    """
    scanpaths: list[Scanpath] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for index, record in enumerate(records):
        z_limit = default_z_limit
        if z_limits is not None and isinstance(record, Mapping) \
                and isinstance(record.get("name"), str) and record["name"] in z_limits:
            z_limit = z_limits[record["name"]]
        rec_problems = check_record(record, index, source, require_split=require_split,
                                    frame=frame, z_limit=z_limit, lowest=lowest)
        if not rec_problems and require_split:
            key = (record["name"], repr(record["subject"]))
            if key in seen:
                rec_problems.append(f"{_where(source, index, record)}: field 'subject' "
                                    f"{record['subject']!r} repeats record {seen[key]} for the same CT")
            seen[key] = index
        if rec_problems:
            if not collect:
                raise DataError(rec_problems[0])
            problems.extend(rec_problems)
            continue
        scanpaths.append(_to_scanpath(record, index))
    return scanpaths, problems


def load_records(path: str | os.PathLike[str], *, require_split: bool = True,
                 frame: int = GAZE_FRAME, z_limits: Mapping[str, float | None] | None = None,
                 default_z_limit: float | None = GAZE_FRAME, lowest: float = 1) -> list[Scanpath]:
    """Load and validate a dataset (folder or JSON) or a predictions file; raise on the first problem.

    Use `require_split=False` for predictions (records without split, task, report), and
    `lowest=0` to accept 0-based coordinates (scoring).
    """
    json_path = find_dataset_json(path)
    records = read_json_records(json_path)
    scanpaths, _ = parse_records(records, str(json_path), require_split=require_split, frame=frame,
                                 z_limits=z_limits, default_z_limit=default_z_limit,
                                 lowest=lowest)
    if not scanpaths:
        raise DataError(f"{json_path}: contains no records")
    return scanpaths


def group_by_ct(scanpaths: Iterable[Scanpath], source: str | os.PathLike[str] | None = None
                ) -> list[CTItem]:
    """Group scanpaths by CT name, in order of first appearance; readers keep file order.

    A CT whose records disagree on the split raises `DataError` naming `source` (the file) and
    the records (a CT must not leak across splits).
    """
    groups: "OrderedDict[str, list[Scanpath]]" = OrderedDict()
    for sp in scanpaths:
        groups.setdefault(sp.name, []).append(sp)
    items = []
    for name, readers in groups.items():
        splits = {r.split for r in readers}
        if len(splits) > 1:
            idx = [r.index for r in readers]
            where = f"{source}: " if source is not None else ""
            raise DataError(f"{where}CT {name!r}: records {idx} have different splits {sorted(map(str, splits))}; "
                            f"all readers of a CT must be in one split")
        items.append(CTItem(name=name, split=readers[0].split, readers=tuple(readers)))
    return items


def load_dataset(path: str | os.PathLike[str], *, split: str | None = None,
                 frame: int = GAZE_FRAME, z_limits: Mapping[str, float | None] | None = None,
                 default_z_limit: float | None = GAZE_FRAME) -> list[CTItem]:
    """Load, validate and group a dataset; keep one split when `split` is given."""
    items = group_by_ct(load_records(path, frame=frame, z_limits=z_limits,
                                     default_z_limit=default_z_limit), find_dataset_json(path))
    if split is not None:
        items = [it for it in items if it.split == split]
        if not items:
            raise DataError(f"{find_dataset_json(path)}: no CT in split {split!r}")
    return items


def scanpaths_to_records(scanpaths: Iterable[Scanpath]) -> list[dict[str, Any]]:
    """Dataset-format records for writing predictions or synthetic data."""
    return [sp.to_record() for sp in scanpaths]
