"""NIfTI CT files: their names, and the project's one way to open and read their voxels.

Every command that opens a CT volume (`validate-data`, `extract`, `predict`, `visualize`, `view`,
`baselines`, `synth`'s check of what it wrote) calls `open_nifti`: it reads the header alone (at
most `_HEAD_BYTES` bytes, decompressed or not), sizes the volume from it and refuses, in one line
naming the file, what no command can use, before a voxel is read. `read_hu` then reads the voxels
with a bounded decompression (exactly the bytes the header claims, in pieces of at most
`PIECE_VOXELS` voxels); `scan_voxels` streams them without keeping the volume (`validate-data`).
nibabel decodes the header fields and applies the scaling (`apply_read_scaling`, as its
`get_fdata` does), so the numbers are nibabel's.

The voxel policy (the same refusal, a `DataError`, from every command):
- the file is a single-file NIfTI-1 or NIfTI-2 (`.nii` / `.nii.gz`) with a readable header;
- the volume has 3 axes, each of size >= 1 (trailing axes of size 1 beyond the third are
  dropped): 2D, 4D and zero- or negative-sized volumes are refused;
- the voxels are real numbers (integers or floats of at most 8 bytes): complex, RGB/RGBA and
  other structured types are refused (nothing is dropped silently);
- the header claims at most `max_voxels` voxels (`DEFAULT_MAX_VOXELS` = 2^30, sized for real CTs;
  `--max-voxels` / `extract.max_voxels` raise it);
- the file holds exactly the voxel bytes its header claims: fewer is "truncated", more is
  "larger than its header says" (found after reading one byte beyond, never more);
- every voxel is finite after `scl_slope` / `scl_inter` (NaN or inf is refused).

Shapes: a volume is `(I, J, K)` float32 Hounsfield units, C-contiguous, in the NIfTI's stored voxel
order (axes i, j, k map to gaze Y, X, Z); spacing is in millimetres per voxel along (i, j, k).
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import zlib
from pathlib import Path
from typing import IO, Any, Iterator

import nibabel as nib
import numpy as np
from nibabel.volumeutils import apply_read_scaling

from ctsearcher_jax.errors import ConfigError, DataError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
# Voxels a header may claim unless the user raises the limit: 1024 x 1024 x 1024, 4 GiB as
# float32 (a 512 x 512 x 1000 CT is half of it).
DEFAULT_MAX_VOXELS = 1 << 30
# Voxels decoded per read (a few tens of MB with the float64 scaling), so memory beyond the
# volume itself stays bounded whatever its size.
PIECE_VOXELS = 1 << 22
_HEAD_BYTES = 540 + 4          # the NIfTI-2 header and its extension flag (NIfTI-1: 348 + 4)
_MAX_EXTENSIONS = 1 << 24      # bytes of header extensions before the voxels, at most
_GZIP_MAGIC = b"\x1f\x8b"
_ERRORS = (OSError, EOFError, zlib.error, ValueError)  # what reading a bad file raises


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


def max_voxels_flag(value: int | None, default: int = DEFAULT_MAX_VOXELS) -> int:
    """A command's `--max-voxels`: `default` when not given; ConfigError unless >= 1."""
    if value is None:
        return default
    if value < 1:
        raise ConfigError(f"--max-voxels {value}: must be >= 1 (default {DEFAULT_MAX_VOXELS:,})")
    return int(value)


@dataclasses.dataclass(frozen=True)
class NiftiInfo:
    """What a NIfTI header claims, checked against the voxel policy (`open_nifti`).

    shape: (I, J, K). dtype: the stored voxel type (byte order included). offset: byte of the
    first voxel. compressed: gzip. slope, inter: the scaling nibabel applies (1, 0 when none).
    """

    path: Path
    header: Any
    shape: tuple[int, int, int]
    dtype: np.dtype
    offset: int
    compressed: bool
    slope: float
    inter: float

    @property
    def voxels(self) -> int:
        return math.prod(self.shape)

    @property
    def raw_bytes(self) -> int:
        """Bytes of voxel data the header claims."""
        return self.voxels * self.dtype.itemsize

    def decoded_bytes(self, canonical: bool = False) -> int:
        """Memory `read_hu` needs at most: the float32 volume (twice when reoriented) plus one
        piece being decoded (raw, float64 scaled, float32)."""
        piece = min(self.voxels, PIECE_VOXELS) * (self.dtype.itemsize + 8 + 4)
        return 4 * self.voxels * (2 if canonical else 1) + piece

    def describe(self) -> str:
        """`(I, J, K) int16` as the messages print it."""
        return f"{self.shape} {self.dtype.name}"

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along (i, j, k), as the header says (may be 0 or non-finite)."""
        return tuple(float(z) for z in self.header.get_zooms()[:3])  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) float64 voxel -> world (RAS mm), nibabel's best affine of the header."""
        return np.asarray(self.header.get_best_affine(), dtype=np.float64)


def _open(path: Path) -> tuple[IO[bytes], bool]:
    """The file's decompressed byte stream (gzip told by its magic bytes, not the name)."""
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    return (gzip.open(path, "rb") if compressed else open(path, "rb")), compressed


def _refuse(path: Path, what: str, fix: str) -> DataError:
    return DataError(f"{path}: {what}; {fix}")


def open_nifti(path: str | os.PathLike[str], *, max_voxels: int = DEFAULT_MAX_VOXELS) -> NiftiInfo:
    """Read and check the header of a NIfTI file (no voxels): the project's one way in.

    Raises:
      DataError naming the file: missing or unreadable, not a single-file NIfTI-1/2, or any rule
      of the voxel policy (module docstring) that the header alone can tell.
    """
    path = Path(path)
    try:
        stream, compressed = _open(path)
        with stream:
            head = stream.read(_HEAD_BYTES)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except _ERRORS as exc:
        raise _refuse(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})",
                      "check that it is a .nii/.nii.gz CT volume and re-export it") from None
    header = _parse_header(path, head)
    shape = _check_shape(path, header)
    dtype = _check_dtype(path, header)
    voxels = math.prod(shape)
    if voxels > max_voxels:
        raise _refuse(path, f"its header claims {shape} {dtype.name} = {voxels:,} voxels "
                      f"({voxels * dtype.itemsize / 1e9:.1f} GB), more than the limit of "
                      f"{max_voxels:,} voxels", "if it is a real CT, raise the limit "
                      "(--max-voxels, or extract.max_voxels in the config)")
    try:
        slope, inter = header.get_slope_inter()
        header.get_best_affine()
        header.get_zooms()
    except Exception as exc:  # nibabel's HeaderDataError and friends for hostile fields
        raise _refuse(path, f"its header cannot be used ({exc})", "re-export the CT") from None
    info = NiftiInfo(path, header, shape, dtype, _data_offset(path, header, len(head)), compressed,
                     1.0 if slope is None else slope, 0.0 if inter is None else inter)
    size = path.stat().st_size
    if not compressed:  # the file's size tells truncation or extra data before any read
        _check_length(info, size - info.offset)
    elif size > _gzip_bound(info.offset + info.raw_bytes):
        # more compressed bytes than any gzip of what the header claims: a bomb that inflates
        # beyond its header, told before any command builds a model or reads a voxel
        raise _refuse(path, f"larger than its header says: {size:,} compressed bytes, more than "
                      f"any gzip of the {info.offset + info.raw_bytes:,} bytes it claims "
                      f"({info.describe()})", "the header or the file is corrupt, re-export it")
    return info


def _gzip_bound(n: int) -> int:
    """The most bytes a gzip (one or many members) of `n` bytes takes: deflate's stored blocks
    add 5 bytes per 64 KiB, each member 18; 0.1 % + 1 KiB covers both with room."""
    return n + n // 1000 + 1024


def _parse_header(path: Path, head: bytes) -> Any:
    """The nibabel header object of the first bytes of a single-file NIfTI-1 or NIfTI-2."""
    for klass, size, magic in ((nib.Nifti1Header, 348, b"n+1"), (nib.Nifti2Header, 540, b"n+2")):
        if len(head) >= size and size in (int.from_bytes(head[:4], "little"),
                                          int.from_bytes(head[:4], "big")):
            try:
                header = klass(head[:size], check=False)
            except Exception as exc:  # noqa: BLE001 - any failure of a hostile header
                raise _refuse(path, f"not a readable NIfTI file (header: {exc})",
                              "re-export the CT") from None
            if bytes(header["magic"])[:3] != magic:
                raise _refuse(path, f"not a single-file NIfTI (magic {bytes(header['magic'])!r})",
                              "a .hdr/.img pair or another format: convert it to .nii.gz")
            return header
    raise _refuse(path, f"not a readable NIfTI file (not a NIfTI-1/2 header: {len(head)} bytes, "
                  "no valid sizeof_hdr)", "convert it to .nii.gz")


def _check_shape(path: Path, header: Any) -> tuple[int, int, int]:
    dim = [int(d) for d in header["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise _refuse(path, f"its header has {ndim} dimensions (dim[0])", "re-export the CT")
    shape = dim[1:ndim + 1]
    if min(shape) < 1:
        raise _refuse(path, f"volume has shape {tuple(shape)}: an empty or negative axis",
                      "re-export the whole CT series")
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        fix = ("split the 4D series into one file per volume" if len(shape) > 3 else
               "a single slice or a projection is not a CT volume; export the whole series as "
               "one 3D NIfTI")
        raise _refuse(path, f"volume has shape {tuple(shape)}, expected a 3D CT (I, J, K)", fix)
    return tuple(shape)  # type: ignore[return-value]


def _check_dtype(path: Path, header: Any) -> np.dtype:
    code = int(header["datatype"])
    try:
        dtype = np.dtype(header.get_data_dtype())
    except Exception:  # noqa: BLE001 - an unknown datatype code
        raise _refuse(path, f"voxel datatype code {code} is not a NIfTI type",
                      "re-export the CT") from None
    if dtype.fields is not None:
        kind = "RGB/RGBA colour" if set(dtype.names or ()) & {"R", "G", "B"} else "structured"
        raise _refuse(path, f"{kind} voxels ({dtype}) are not CT intensities",
                      "convert the volume to one grey value per voxel (int16 or float32 HU)")
    if dtype.kind == "c":
        raise _refuse(path, f"complex voxels ({dtype.name}) are not CT intensities (the "
                      "imaginary part would be lost)", "convert the volume to real HU values")
    if dtype.kind not in "iuf" or dtype.itemsize > 8:
        raise _refuse(path, f"voxel type {dtype.name} is not a CT intensity type",
                      "convert the volume to int16 or float32 HU")
    return dtype


def _data_offset(path: Path, header: Any, head_len: int) -> int:
    """The byte of the first voxel: after the header (and its extensions, at most
    `_MAX_EXTENSIONS` bytes of them)."""
    minimum = int(header["sizeof_hdr"]) + 4
    value = float(header["vox_offset"])
    if value == 0:  # nibabel accepts 0 (old writers); the voxels then follow the header
        return minimum
    if not (value.is_integer() and minimum <= value <= minimum + _MAX_EXTENSIONS):
        raise _refuse(path, f"its header puts the voxels at byte {value:g}, outside "
                      f"[{minimum}, {minimum + _MAX_EXTENSIONS}]", "re-export the CT")
    return int(value)


def _check_length(info: NiftiInfo, available: int) -> None:
    """Truncated (fewer bytes than the header claims) or larger than the header says."""
    if available < info.raw_bytes:
        raise _refuse(info.path, f"truncated: its header claims {info.raw_bytes:,} bytes of "
                      f"voxels ({info.describe()}), the file holds {max(available, 0):,}",
                      "the file is truncated or corrupt, re-copy or re-export it")
    if available > info.raw_bytes:
        raise _refuse(info.path, f"larger than its header says: more data follows the "
                      f"{info.raw_bytes:,} bytes of voxels it claims ({info.describe()})",
                      "the header or the file is corrupt, re-export it")


def _pieces(shape: tuple[int, int, int], cap: int) -> Iterator[tuple[tuple, tuple[int, ...]]]:
    """(index into the (I, J, K) volume, shape in file order) of consecutive pieces of the file.

    The file stores i fastest, then j, then k; a piece of `n` voxels read from it, reshaped to the
    given shape and transposed (`.T`), is `volume[index]`. Pieces are whole slices when a slice
    fits `cap`, else runs of whole rows, else parts of one row.
    """
    n_i, n_j, n_k = shape
    if n_i * n_j <= cap:
        step = max(1, cap // (n_i * n_j))
        for k0 in range(0, n_k, step):
            k1 = min(n_k, k0 + step)
            yield (slice(None), slice(None), slice(k0, k1)), (k1 - k0, n_j, n_i)
    elif n_i <= cap:
        step = max(1, cap // n_i)
        for k in range(n_k):
            for j0 in range(0, n_j, step):
                j1 = min(n_j, j0 + step)
                yield (slice(None), slice(j0, j1), k), (j1 - j0, n_i)
    else:
        for k in range(n_k):
            for j in range(n_j):
                for i0 in range(0, n_i, cap):
                    i1 = min(n_i, i0 + cap)
                    yield (slice(i0, i1), j, k), (i1 - i0,)


def _read_exactly(stream: IO[bytes], buffer: memoryview) -> int:
    """Fill `buffer` from `stream`; the number of bytes read (less only at the end of the data)."""
    done = 0
    while done < len(buffer):
        n = stream.readinto(buffer[done:])
        if not n:
            break
        done += n
    return done


def _hu_pieces(info: NiftiInfo) -> Iterator[tuple[tuple, np.ndarray]]:
    """(index, float32 HU of volume[index]) for every piece of the file, in file order; the
    bounded read: the header's bytes exactly, then one byte to tell a longer file."""
    slope = np.asanyarray(info.slope).astype(np.float64)  # as nibabel's ArrayProxy scales
    inter = np.asanyarray(info.inter).astype(np.float64)
    buffer = bytearray(min(info.voxels, PIECE_VOXELS) * info.dtype.itemsize)
    stream, _ = _open(info.path)
    with stream:
        if _read_exactly(stream, memoryview(bytearray(info.offset))) < info.offset:
            _check_length(info, -1)
        done = 0
        for index, file_shape in _pieces(info.shape, PIECE_VOXELS):
            nbytes = math.prod(file_shape) * info.dtype.itemsize
            got = _read_exactly(stream, memoryview(buffer)[:nbytes])
            if got < nbytes:
                _check_length(info, done + got)
            done += got
            raw = np.frombuffer(buffer, info.dtype, count=nbytes // info.dtype.itemsize)
            with np.errstate(over="ignore", invalid="ignore"):
                hu = np.asarray(apply_read_scaling(raw, slope, inter)).astype(np.float32)
            yield index, hu.reshape(file_shape).T
        if stream.read(1):
            _check_length(info, done + 1)


def _values_problem(info: NiftiInfo, nonfinite: int) -> str | None:
    if not nonfinite:
        return None
    scaled = " after scl_slope/scl_inter" if (info.slope, info.inter) != (1.0, 0.0) else ""
    what = ("has no finite voxels (all NaN/inf)" if nonfinite == info.voxels
            else f"has {nonfinite:,} NaN/inf voxels of {info.voxels:,}")
    return f"{info.path}: volume {what}{scaled}; fix or exclude this CT"


def _reading(info: NiftiInfo, pieces: Iterator[tuple[tuple, np.ndarray]]
             ) -> Iterator[tuple[tuple, np.ndarray]]:
    """`pieces` with the read errors of a corrupt file turned into the one-line DataError."""
    try:
        yield from pieces
    except DataError:
        raise
    except _ERRORS as exc:
        raise _refuse(info.path, f"voxel data cannot be read ({type(exc).__name__}: {exc})",
                      "the file is truncated or corrupt, re-copy or re-export it") from None


def read_hu(info: NiftiInfo, canonical: bool = False
            ) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """The voxels of an opened file: `(I, J, K)` float32 HU (C order), spacing (mm), affine.

    With `canonical=True` the volume is reoriented to RAS with `nibabel.as_closest_canonical`
    (voxel flips/permutations, no resampling); spacing and affine follow. Memory: the volume
    plus one piece (`NiftiInfo.decoded_bytes`).

    Raises:
      DataError naming the file: truncated, larger than its header says, corrupt, non-finite.
    """
    out = np.empty(info.shape, np.float32)
    nonfinite = 0
    for index, hu in _reading(info, _hu_pieces(info)):
        nonfinite += hu.size - int(np.count_nonzero(np.isfinite(hu)))
        out[index] = hu
    problem = _values_problem(info, nonfinite)
    if problem:
        raise DataError(problem)
    spacing, affine = info.spacing, info.affine
    if canonical:
        # (Nifti2Header is a subclass of Nifti1Header)
        image_class = nib.Nifti2Image if isinstance(info.header, nib.Nifti2Header) else \
            nib.Nifti1Image
        try:
            image = nib.as_closest_canonical(image_class(out, affine, info.header.copy()))
        except Exception as exc:  # noqa: BLE001 - a degenerate affine
            raise _refuse(info.path, f"cannot reorient to RAS ({exc})",
                          "run without canonical") from None
        out = np.ascontiguousarray(image.dataobj, dtype=np.float32)
        spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
        affine = np.asarray(image.affine, dtype=np.float64)
    return out, spacing, affine  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class VoxelScan:
    """What `scan_voxels` found: the first value problem (None when the voxels are usable) and
    the finite HU range."""

    problem: str | None
    minimum: float
    maximum: float


def scan_voxels(info: NiftiInfo) -> VoxelScan:
    """Read every voxel once, keeping none (memory: one piece), and check the value policy.

    Raises DataError naming the file when the data cannot be read (truncated, larger than its
    header says, corrupt); non-finite values are returned as `problem`.
    """
    nonfinite, lo, hi = 0, math.inf, -math.inf
    for _, hu in _reading(info, _hu_pieces(info)):
        finite = hu[np.isfinite(hu)]
        nonfinite += hu.size - finite.size
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return VoxelScan(_values_problem(info, nonfinite), lo, hi)


def load_nifti_hu(path: str | os.PathLike[str], canonical: bool = False, *,
                  max_voxels: int = DEFAULT_MAX_VOXELS
                  ) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray]:
    """`open_nifti` then `read_hu`: `(I, J, K)` float32 HU, spacing (mm), affine (4, 4).

    Raises:
      DataError naming the file for anything the voxel policy (module docstring) refuses.
    """
    return read_hu(open_nifti(path, max_voxels=max_voxels), canonical=canonical)
