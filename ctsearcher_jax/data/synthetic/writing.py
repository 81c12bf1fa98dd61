"""Writing a synthetic dataset: NIfTI volumes, the dataset JSON and the lesion sidecar.

    out_dir/cts/<name>.nii.gz                      int16 NIfTI-1, stored value = HU + 1024,
                                                   scl_slope 1, scl_inter -1024
    out_dir/data_simplified_split_matched_pt.json  one record per (CT, reader)
    out_dir/synthetic_meta.json                    sidecar: lesions, spacing, reader styles

The affine says the phantom's axes exactly (P, L, I) with the spacing on its diagonal; qform and
sform are set (code 1), units mm and s. gzip is written with mtime 0 and no file name, JSON with
fixed key order and rounded numbers (X, Y: 2 decimals, Z: integer, T: 3 decimals, T >= 0.05 s),
so the same seed gives the same bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import nibabel as nib
import numpy as np

from ctsearcher_jax.config import GAZE_FRAME
from ctsearcher_jax.data.nifti import open_nifti
from ctsearcher_jax.data.synthetic.anatomy import DEFAULT_SHAPE, check_shape, make_phantom, make_report
from ctsearcher_jax.data.synthetic.readers import make_scanpath, reader_style
from ctsearcher_jax.data.synthetic.seeds import STREAM_CT, STREAM_SCANPATH, STREAM_SPLIT, stream_rng
from ctsearcher_jax.errors import ConfigError, DataError
from ctsearcher_jax.io import atomic_write, atomic_write_text

DATASET_JSON = "data_simplified_split_matched_pt.json"
META_JSON = "synthetic_meta.json"
CT_DIR = "cts"
# Stored int16 value = HU - HU_INTERCEPT; the NIfTI header carries scl_slope 1, scl_inter -1024.
HU_INTERCEPT = -1024.0
TASK = "free reading of a chest-abdomen-pelvis CT"
TEST_FRACTION = 0.25
GENERATOR_VERSION = 1


def phantom_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """(4, 4) voxel -> RAS+ mm affine: i -> posterior, j -> patient left, k -> inferior.

    The volume centre sits on the world z axis; slice k = 0 is at z = 0 (the top of the scan).
    """
    si, sj, sk = (float(s) for s in spacing)
    aff = np.zeros((4, 4))
    aff[0, 1] = -sj          # j+ -> x- (toward patient left)
    aff[1, 0] = -si          # i+ -> y- (toward posterior)
    aff[2, 2] = -sk          # k+ -> z- (toward inferior)
    aff[0, 3] = (shape[1] - 1) / 2.0 * sj
    aff[1, 3] = (shape[0] - 1) / 2.0 * si
    aff[3, 3] = 1.0
    return aff


def nifti_gz_bytes(hu: np.ndarray, spacing: Sequence[float]) -> bytes:
    """A gzipped NIfTI-1 file of an int16 HU volume, byte-identical for identical inputs.

    Stored value = HU + 1024 with scl_slope 1, scl_inter -1024 (readers must apply the scaling,
    as nibabel's `get_fdata` does). The gzip header carries mtime 0 and no file name.
    """
    hu = np.asarray(hu)
    stored = (hu.astype(np.int32) - int(HU_INTERCEPT)).astype(np.int16)
    affine = phantom_affine(hu.shape, spacing)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    img = nib.Nifti1Image(stored, affine, hdr)
    img.header.set_zooms(tuple(float(s) for s in spacing))
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_slope_inter(1.0, HU_INTERCEPT)
    img.header["descrip"] = b"ctsearcher-jax synthetic CT phantom"
    img.header["cal_min"] = -1024
    img.header["cal_max"] = 3071
    raw = img.to_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(raw)
    return buf.getvalue()


@dataclasses.dataclass(frozen=True)
class SynthSummary:
    """What `synthesize` wrote."""

    out_dir: Path
    dataset_json: Path
    meta_json: Path
    ct_paths: tuple[Path, ...]
    shape: tuple[int, int, int]
    num_cts: int
    num_readers: int
    num_scanpaths: int
    num_fixations: int
    num_lesions: int
    splits: dict[str, int]        # CTs per split

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        split = ", ".join(f"{k} {v}" for k, v in self.splits.items())
        return [f"{self.num_cts} CTs of shape {self.shape} ({split}), {self.num_readers} readers, "
                f"{self.num_scanpaths} scanpaths, {self.num_fixations} fixations, "
                f"{self.num_lesions} lesions",
                f"dataset: {self.dataset_json}",
                f"volumes: {self.out_dir / CT_DIR}",
                f"lesions: {self.meta_json}"]


def split_of_cts(num_cts: int, seed: int) -> list[str]:
    """Deterministic split per CT: about 25 % test, at least one train and one test when >= 2 CTs."""
    n_test = 0 if num_cts < 2 else min(num_cts - 1, max(1, round(TEST_FRACTION * num_cts)))
    perm = stream_rng(seed, STREAM_SPLIT).permutation(num_cts)
    splits = ["train"] * num_cts
    for idx in perm[:n_test]:
        splits[int(idx)] = "test"
    return splits


def ct_name(index: int) -> str:
    """File stem and record name of CT `index` (0-based)."""
    return f"synth_{index:04d}"


def synthesize(out_dir: str | os.PathLike[str], *, num_cts: int, num_readers: int, seed: int,
               shape: Sequence[int] = DEFAULT_SHAPE, min_fixations: int = 50,
               max_fixations: int = 400, force: bool = False) -> SynthSummary:
    """Write a synthetic CT-ScanGaze dataset into `out_dir` (see the module docstring).

    Refuses a non-empty `out_dir` unless `force`; with `force`, files of the same names are
    replaced and nothing else is touched. Each file is written atomically, the dataset JSON last;
    every argument is checked before anything is written, and a call that fails (or is
    interrupted) removes the files and folders it created. Each volume is read back through
    `data.nifti.open_nifti` (the header every command checks).
    """
    shape = tuple(int(v) for v in shape)
    check_shape(shape)
    if int(seed) < 0:  # numpy's SeedSequence takes non-negative integers only
        raise ConfigError(f"--seed {seed}: must be an integer >= 0")
    if num_cts < 1 or num_readers < 1:
        raise ConfigError(f"num_cts={num_cts}, num_readers={num_readers}: both must be >= 1")
    if not 1 <= min_fixations <= max_fixations:
        raise ConfigError(f"min_fixations={min_fixations}, max_fixations={max_fixations}: "
                          f"need 1 <= min_fixations <= max_fixations")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another out_dir")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DataError(f"{out}: folder exists and is not empty; choose another out_dir, or pass "
                        f"force=True to replace the synthetic files in it")
    with _removed_on_failure(out) as created:
        return _write_dataset(out, created, num_cts=num_cts, num_readers=num_readers, seed=seed,
                              shape=shape, min_fixations=min_fixations, max_fixations=max_fixations)


@contextlib.contextmanager
def _removed_on_failure(out: Path) -> Iterator[list[Path]]:
    """Yield the list the writer appends each new path to (folders before their files); when the
    body fails, remove them (newest first; files that existed before are kept)."""
    missing = [p for p in (out / CT_DIR, out, *out.parents) if not p.exists()]
    created: list[Path] = list(reversed(missing))  # the outermost folder first
    try:
        yield created
    except BaseException:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink()
        raise


def _write_dataset(out: Path, created: list[Path], *, num_cts: int, num_readers: int, seed: int,
                   shape: tuple[int, ...], min_fixations: int, max_fixations: int) -> SynthSummary:
    """The writing part of `synthesize` (arguments checked); new paths are added to `created`."""
    (out / CT_DIR).mkdir(parents=True, exist_ok=True)

    splits = split_of_cts(num_cts, seed)
    styles = [reader_style(seed, r) for r in range(1, num_readers + 1)]
    records: list[dict[str, Any]] = []
    ct_meta: list[dict[str, Any]] = []
    ct_paths: list[Path] = []
    num_lesions = 0
    for c in range(num_cts):
        name = ct_name(c)
        hu, spacing, lesions = make_phantom(shape, stream_rng(seed, STREAM_CT, c))
        path = out / CT_DIR / f"{name}.nii.gz"
        data = nifti_gz_bytes(hu, spacing)
        if not path.exists():
            created.append(path)
        atomic_write(path, lambda f, d=data: f.write(d))
        if open_nifti(path).shape != shape:  # what every command will check, on what it wrote
            raise DataError(f"{path}: written with shape {shape} but reads back as "
                            f"{open_nifti(path).shape}; please report it")
        ct_paths.append(path)
        report = make_report(lesions)
        num_lesions += len(lesions)
        for style in styles:
            rng = stream_rng(seed, STREAM_SCANPATH, c, style.subject)
            g = make_scanpath(hu, lesions, style, rng, min_fixations=min_fixations,
                              max_fixations=max_fixations)
            records.append({
                "name": name, "subject": style.subject, "task": TASK,
                "X": g.x.tolist(), "Y": g.y.tolist(), "Z": [int(v) for v in g.z], "T": g.t.tolist(),
                "length": int(g.x.shape[0]), "split": splits[c], "report": report})
        ct_meta.append({"name": name, "split": splits[c], "file": f"{CT_DIR}/{name}.nii.gz",
                        "shape": list(shape), "spacing_mm": [round(s, 6) for s in spacing],
                        "lesions": [les.to_json(shape) for les in lesions]})

    meta = {
        "generator": "ctsearcher_jax.data.synthetic", "version": GENERATOR_VERSION, "seed": int(seed),
        "shape": list(shape), "gaze_frame": GAZE_FRAME,
        "gaze_mapping": "X = (j + 0.5) * 512 / J + 0.5, Y = (i + 0.5) * 512 / I + 0.5, Z = k + 1 "
                        "for voxel indices (i, j, k), 0-based",
        "hu_storage": "int16 stored = HU + 1024; scl_slope 1, scl_inter -1024",
        "readers": [{k: (round(v, 6) if isinstance(v, float) else v)
                     for k, v in dataclasses.asdict(s).items()} for s in styles],
        "cts": ct_meta,
    }
    meta_path, json_path = out / META_JSON, out / DATASET_JSON
    created.extend(p for p in (meta_path, json_path) if not p.exists())
    atomic_write_text(meta_path, json.dumps(meta, indent=1, allow_nan=False) + "\n")
    atomic_write_text(json_path, json.dumps(records, indent=None, allow_nan=False,
                                            separators=(",", ":")) + "\n")
    counts = {s: splits.count(s) for s in ("train", "test") if splits.count(s)}
    return SynthSummary(out_dir=out, dataset_json=json_path, meta_json=meta_path,
                        ct_paths=tuple(ct_paths), shape=shape, num_cts=num_cts,
                        num_readers=num_readers, num_scanpaths=len(records),
                        num_fixations=sum(r["length"] for r in records), num_lesions=num_lesions,
                        splits=counts)
