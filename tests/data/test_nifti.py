"""`data.nifti`: the one way in for CT volumes. Headers are sized before a voxel is read, the
decompression is bounded, every refusal of the voxel policy is one line naming the file, and the
numbers are nibabel's."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hostile_inputs import (  # noqa: E402
    BAD_VOLUMES,
    header_bomb,
    inflate_bomb,
    nifti_bytes,
    write_bad_volumes,
    write_gz,
)

from ctsearcher_jax.data import nifti  # noqa: E402
from ctsearcher_jax.errors import ConfigError, DataError  # noqa: E402


def _nib_cases(folder: Path) -> list[Path]:
    """Volumes nibabel writes: dtypes, scalings, NIfTI-1/2, gzip or not, big-endian, a flip."""
    rng = np.random.default_rng(0)
    paths = []
    for dtype, slope, inter in [(np.int16, 1.0, -1024.0), (np.int16, 0.5, 3.0), (np.uint8, 1, 0),
                                (np.float64, 1, 0), (np.float32, 2.0, 0.0), (np.int32, 1e-3, 0),
                                (">i2", 1.0, 0.0)]:
        data = (rng.normal(size=(23, 19, 7)) * 300).astype(dtype)
        for klass in (nib.Nifti1Image, nib.Nifti2Image):
            for suffix in (".nii", ".nii.gz"):
                affine = np.diag([-0.7, 0.8, 2.5, 1.0])
                image = klass(data, affine)
                image.header.set_slope_inter(slope, inter)
                paths.append(folder / f"c{len(paths)}{suffix}")
                nib.save(image, str(paths[-1]))
    return paths


@pytest.mark.parametrize("piece", [50, 600, nifti.PIECE_VOXELS])  # parts of rows, rows, slices
def test_reads_what_nibabel_reads(tmp_path, monkeypatch, piece):
    monkeypatch.setattr(nifti, "PIECE_VOXELS", piece)
    for path in _nib_cases(tmp_path):
        for canonical in (False, True):
            ref = nib.load(str(path))
            ref = nib.as_closest_canonical(ref) if canonical else ref
            hu, spacing, affine = nifti.load_nifti_hu(path, canonical=canonical)
            assert hu.dtype == np.float32 and hu.flags.c_contiguous
            np.testing.assert_array_equal(hu, np.asarray(ref.dataobj).astype(np.float32))
            assert spacing == tuple(float(z) for z in ref.header.get_zooms()[:3])
            np.testing.assert_array_equal(affine, ref.affine)
        info = nifti.open_nifti(path)
        scan = nifti.scan_voxels(info)
        hu = nifti.read_hu(info)[0]
        assert scan.problem is None and (scan.minimum, scan.maximum) == (hu.min(), hu.max())


@pytest.mark.parametrize("name", sorted(BAD_VOLUMES))
def test_every_refusal_is_one_line_naming_the_file(tmp_path, name):
    path = write_bad_volumes(tmp_path, [name])[name]
    words = BAD_VOLUMES[name][1]
    with pytest.raises(DataError) as err:
        info = nifti.open_nifti(path)
        # what the header cannot tell, reading the voxels does: the same words either way
        problem = nifti.scan_voxels(info).problem
        assert problem is not None and words in problem and str(path) in problem
        nifti.read_hu(info)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and words in message and "\n" not in message


def test_bombs_are_refused_without_inflating(tmp_path):
    """A 1500^3 header; a few hundred KB that inflate to 256 MB behind a 16^3 header (told from
    the compressed size alone); 64 MB behind a 128^3 header (4 MB: told after reading exactly the
    claimed bytes and one more). The memory this process allocates meanwhile: < 1 MB, < 1 MB,
    and the claimed volume plus one piece."""
    hbomb, zbomb = header_bomb(tmp_path / "h.nii.gz"), inflate_bomb(tmp_path / "z.nii.gz")
    deep = inflate_bomb(tmp_path / "deep.nii.gz", shape=(128, 128, 128), extra_mb=64)
    assert hbomb.stat().st_size < 100 and zbomb.stat().st_size < 2_000_000
    assert deep.stat().st_size < 128 ** 3 * 2  # passes the compressed-size bound
    cases = ((hbomb, "(1500, 1500, 1500) int16 = 3,375,000,000 voxels", 1e6),
             (zbomb, "compressed bytes, more than any gzip of the 8,544 bytes it claims", 1e6),
             (deep, "more data follows the 4,194,304 bytes of voxels it claims", 40e6))
    for path, words, bound in cases:
        tracemalloc.start()
        try:
            with pytest.raises(DataError, match="larger than|more than the limit") as err:
                nifti.load_nifti_hu(path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert str(err.value).startswith(f"{path}: ") and words in str(err.value)
        assert peak < bound, peak


def test_the_limit_is_the_callers_and_the_truncation_is_named(tmp_path):
    path = write_gz(tmp_path / "v.nii.gz", nifti_bytes((16, 16, 8), data=bytes(16 * 16 * 8 * 2)))
    assert nifti.open_nifti(path).shape == (16, 16, 8)
    with pytest.raises(DataError, match="2,048 voxels.*more than the limit of 2,047 voxels.*"
                                        "--max-voxels"):
        nifti.open_nifti(path, max_voxels=2047)
    short = write_gz(tmp_path / "short.nii.gz", nifti_bytes((16, 16, 8), data=bytes(100)))
    with pytest.raises(DataError, match="truncated: its header claims 4,096 bytes.*holds 100"):
        nifti.load_nifti_hu(short)
    plain = tmp_path / "short.nii"  # uncompressed: told from the file size, before a read
    plain.write_bytes(nifti_bytes((16, 16, 8), data=bytes(100)))
    with pytest.raises(DataError, match="truncated"):
        nifti.open_nifti(plain)
    plain.write_bytes(nifti_bytes((16, 16, 8), data=bytes(4097)))
    with pytest.raises(DataError, match="larger than its header says"):
        nifti.open_nifti(plain)
    assert nifti.max_voxels_flag(None) == nifti.DEFAULT_MAX_VOXELS == 1 << 30
    with pytest.raises(ConfigError, match="--max-voxels 0"):
        nifti.max_voxels_flag(0)


def test_hostile_header_fields_are_refused(tmp_path):
    cases = {"code.nii.gz": (nifti_bytes((8, 8, 8), (999, 16)), "datatype code 999"),
             "junk.nii.gz": (b"not a nifti at all", "not a readable NIfTI file"),
             "cplx128.nii.gz": (nifti_bytes((8, 8, 8), (1792, 128)), "complex voxels")}
    for name, (payload, words) in cases.items():
        with pytest.raises(DataError, match=words):
            nifti.open_nifti(write_gz(tmp_path / name, payload))
    raw = bytearray(nifti_bytes((8, 8, 8), data=bytes(1024)))
    raw[108:112] = np.float32(1e12).tobytes()  # vox_offset far beyond the header
    with pytest.raises(DataError, match="puts the voxels at byte 1e\\+12"):
        nifti.open_nifti(write_gz(tmp_path / "offset.nii.gz", bytes(raw)))
    with pytest.raises(DataError, match="file not found"):
        nifti.open_nifti(tmp_path / "missing.nii.gz")


def test_config_default_is_the_readers(tmp_path):
    from ctsearcher_jax.config import ExtractConfig

    assert ExtractConfig().max_voxels == nifti.DEFAULT_MAX_VOXELS
    with pytest.raises(ConfigError, match="extract.max_voxels"):
        ExtractConfig(max_voxels=0)
    with pytest.raises(ConfigError, match="extract.memory_budget_gb"):
        ExtractConfig(memory_budget_gb=float("inf"))
