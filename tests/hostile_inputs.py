"""Hostile inputs of issue 24, built in a test's temporary folder in milliseconds.

- NIfTI files the voxel policy (`ctsearcher_jax.data.nifti`) refuses: the two memory bombs (a
  ~60-byte `.nii.gz` whose header claims 1500^3 int16; a few hundred KB that inflate to far more
  than their header claims), NaN/inf voxels (a few, all, a slope that overflows), complex, RGB,
  2D, 4D, zero- and negative-sized volumes (`BAD_VOLUMES`, with the words each refusal says);
- a dataset whose CT names and subjects are text that looks like code (`hostile_dataset`);
- `run_cli`: the command line in a subprocess, with its wall time and peak RSS (`os.wait4`).

Imported by tests as a plain module (`sys.path` gets this folder).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np

# NIfTI-1 datatype codes and bits per voxel
INT16, FLOAT32, COMPLEX64, RGB24 = (4, 16), (16, 32), (32, 64), (128, 24)


def nifti_bytes(dim: tuple[int, ...], datatype: tuple[int, int] = INT16, data: bytes = b"",
                slope: float = 1.0, inter: float = 0.0) -> bytes:
    """A single-file NIfTI-1 (uncompressed bytes): header with exactly these fields, then `data`.

    dim: the axis sizes as written (may be 0 or negative: the header is built field by field).
    """
    hdr = nib.Nifti1Header()
    dims = [len(dim), *dim] + [1] * (7 - len(dim))
    hdr["dim"] = dims
    hdr["datatype"], hdr["bitpix"] = datatype
    hdr["pixdim"] = [1.0, 0.8, 0.8, 2.5, 1.0, 1.0, 1.0, 1.0]
    hdr["vox_offset"] = 352
    hdr["scl_slope"], hdr["scl_inter"] = slope, inter
    hdr["qform_code"], hdr["sform_code"] = 1, 1
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = [0.8, 0, 0, 0], [0, 0.8, 0, 0], [0, 0, 2.5, 0]
    hdr["magic"] = b"n+1"
    return hdr.binaryblock + b"\0\0\0\0" + data


def write_gz(path: Path, payload: bytes | Callable[[io.RawIOBase], None]) -> Path:
    """`payload` (bytes, or a writer of the uncompressed stream) gzipped into `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=6) as f:
        if callable(payload):
            payload(f)
        else:
            f.write(payload)
    return path


def header_bomb(path: Path, shape: tuple[int, int, int] = (1500, 1500, 1500)) -> Path:
    """A `.nii.gz` of a header alone (~60 bytes) that claims `shape` int16 (1500^3: 6.75 GB)."""
    return write_gz(path, nifti_bytes(shape))


def inflate_bomb(path: Path, shape: tuple[int, int, int] = (16, 16, 16), extra_mb: int = 256) -> Path:
    """A `.nii.gz` of ~`extra_mb` KB: a small int16 volume, then `extra_mb` MB of zeros its
    header does not claim (what a gzip bomb of GBs does, at a size a test can build)."""
    voxels = bytes(int(np.prod(shape)) * 2)

    def write(f):
        f.write(nifti_bytes(shape, data=voxels))
        chunk = bytes(1 << 20)
        for _ in range(extra_mb):
            f.write(chunk)

    return write_gz(path, write)


def _volume(values: np.ndarray, **kw) -> bytes:
    arr = np.asarray(values)
    code = {np.dtype(np.int16): INT16, np.dtype(np.float32): FLOAT32,
            np.dtype(np.complex64): COMPLEX64}[arr.dtype]
    return nifti_bytes(arr.shape, code, arr.tobytes(order="F"), **kw)


def _ramp(shape=(16, 16, 8), dtype=np.float32) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape).astype(dtype) - 500


def _with_nan(count: int | None) -> np.ndarray:
    arr = _ramp()
    flat = arr.reshape(-1, order="F")
    flat[: flat.size if count is None else count] = np.nan
    return flat.reshape(arr.shape, order="F")


def _inf() -> np.ndarray:
    arr = _ramp()
    arr[3, 4, 5] = np.inf
    return arr


# file name -> (writer, words the refusal says). Every one of them is refused by every command.
BAD_VOLUMES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "header_bomb": (header_bomb, "more than the limit"),
    "inflate_bomb": (inflate_bomb, "larger than its header says"),
    "nan_two": (lambda p: write_gz(p, _volume(_with_nan(2))), "2 NaN/inf voxels"),
    "nan_all": (lambda p: write_gz(p, _volume(_with_nan(None))), "no finite voxels"),
    "inf_one": (lambda p: write_gz(p, _volume(_inf())), "1 NaN/inf voxels"),
    "slope_overflow": (lambda p: write_gz(p, _volume(_ramp(dtype=np.int16), slope=3e38)),
                       "after scl_slope/scl_inter"),
    "complex": (lambda p: write_gz(p, _volume(_ramp().astype(np.complex64))), "complex voxels"),
    "rgb": (lambda p: write_gz(p, nifti_bytes((16, 16, 8), RGB24, bytes(16 * 16 * 8 * 3))),
            "RGB/RGBA colour voxels"),
    "flat_2d": (lambda p: write_gz(p, _volume(_ramp((16, 16)))), "expected a 3D CT"),
    "series_4d": (lambda p: write_gz(p, _volume(_ramp((16, 16, 8, 3)))), "expected a 3D CT"),
    "zero_sized": (lambda p: write_gz(p, nifti_bytes((16, 0, 8))), "an empty or negative axis"),
    "negative_sized": (lambda p: write_gz(p, nifti_bytes((16, -4, 8))), "an empty or negative axis"),
}


def write_bad_volumes(folder: Path, names=None) -> dict[str, Path]:
    """`<folder>/<name>.nii.gz` for each of BAD_VOLUMES (or `names`); name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    return {n: BAD_VOLUMES[n][0](folder / f"{n}.nii.gz") for n in (names or BAD_VOLUMES)}


# ----------------------------------------------------------------------------- text as code

# CT names a file system and the dataset schema admit (no '/', '\', control characters, leading
# '.'), made of what mathtext, HTML and Markdown would read as code; subjects may hold anything.
HOSTILE_NAMES = ("m$^$<script>alert(1)<!--", "q\"'&amp;\u202eevil$_{x}$<img src=x onerror=alert(2)>")
HOSTILE_SUBJECTS = ("$\\x{$", "</script><b>r\n\"2'\u202e")


def hostile_dataset(root: Path, *, shape=(40, 40, 24), seed: int = 3) -> Path:
    """A synthetic dataset (2 CTs x 2 readers) renamed: CT names `HOSTILE_NAMES`, subjects
    `HOSTILE_SUBJECTS`, and the report text a script tag. Returns the dataset folder."""
    from ctsearcher_jax.data.synthetic import synthesize

    synthesize(root, num_cts=2, num_readers=2, seed=seed, shape=shape, min_fixations=8,
               max_fixations=16)
    json_path = root / "data_simplified_split_matched_pt.json"
    records = json.loads(json_path.read_text())
    names = sorted({r["name"] for r in records})
    subjects = sorted({r["subject"] for r in records}, key=str)
    for old, new in zip(names, HOSTILE_NAMES):
        (root / "cts" / f"{old}.nii.gz").rename(root / "cts" / f"{new}.nii.gz")
    for r in records:
        r["name"] = HOSTILE_NAMES[names.index(r["name"])]
        r["subject"] = HOSTILE_SUBJECTS[subjects.index(r["subject"])]
        r["report"] = "<script>alert('report')</script> $\\x{$"
        r["split"] = "test"  # every CT in one split: train/evaluate/predict see both names
    json_path.write_text(json.dumps(records))
    return root


# ----------------------------------------------------------------------------- the CLI

# Runs the CLI and, at exit, writes the process's peak RSS (VmHWM: the memory of this program,
# not what a fork copied from the test process before exec) to the file named by argv[1].
_LAUNCHER = """
import atexit, sys
def _peak():
    with open('/proc/self/status') as f:
        kb = [line.split()[1] for line in f if line.startswith('VmHWM:')][0]
    with open(sys.argv[1], 'w') as out:
        out.write(kb)
atexit.register(_peak)
from ctsearcher_jax.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_cli(*argv: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None
            ) -> tuple[int, str, str, float, float]:
    """`ctsearcher ARGV` in a subprocess: (exit code, stdout, stderr, seconds, peak RSS in MB).

    The peak RSS is the child program's own high-water mark (`VmHWM`, Linux).
    """
    import tempfile

    full_env = dict(os.environ, JAX_PLATFORMS="cpu", CTSEARCHER_COMPILE_CACHE="0", **(env or {}))
    with tempfile.TemporaryDirectory() as tmp:
        peak = Path(tmp) / "peak_kb"
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _LAUNCHER, str(peak), *argv], cwd=cwd,
                              capture_output=True, text=True, env=full_env, timeout=timeout)
        seconds = time.perf_counter() - t0
        rss_mb = int(peak.read_text()) / 1024 if peak.is_file() else float("nan")
    return done.returncode, done.stdout, done.stderr, seconds, rss_mb


def bad_volume_dataset(root: Path, names=None) -> Path:
    """A dataset folder whose CTs are one good synthetic CT (`synth_0000`, 16 x 16 x 8) and every
    volume of BAD_VOLUMES (or `names`), each with the good CT's two readers' scanpaths."""
    from ctsearcher_jax.data.synthetic import synthesize

    synthesize(root, num_cts=1, num_readers=2, seed=0, shape=(16, 16, 8), min_fixations=4,
               max_fixations=8)
    json_path = root / "data_simplified_split_matched_pt.json"
    records = json.loads(json_path.read_text())
    bad = write_bad_volumes(root / "cts", names)
    records += [dict(r, name=name) for name in bad for r in records[:2]]
    json_path.write_text(json.dumps(records))
    return root
