"""The extraction loop with a cheap stand-in encoder: outputs, manifest, skipping, bad input, CLI."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from extract_helpers import CHANNELS, fake_extractor, write_ct  # noqa: E402

from ctsearcher_jax.config import ExtractConfig  # noqa: E402
from ctsearcher_jax.data import manifest as mf  # noqa: E402
from ctsearcher_jax.data.nifti import volume_name  # noqa: E402
from ctsearcher_jax.errors import DataError  # noqa: E402
from ctsearcher_jax.io import file_sha256  # noqa: E402
from feature_extraction import directory  # noqa: E402
from feature_extraction import extract as ex  # noqa: E402
from feature_extraction.directory import extract_directory  # noqa: E402
from feature_extraction.merge import merge_windows  # noqa: E402
from feature_extraction.preprocess import load_volume, scale_hu  # noqa: E402
from feature_extraction.sliding_window import pad_volume, plan_windows  # noqa: E402


@pytest.fixture(scope="module")
def extractor():
    return fake_extractor(ExtractConfig(feature_size=12, batch=2))


def run(cts, out, extractor, **kw):
    return extract_directory(cts, out, extractor=extractor, progress=False, echo=lambda s: None, **kw)


def test_outputs_and_manifest(tmp_path, extractor):
    hu = write_ct(tmp_path / "cts" / "a.b.nii.gz", (130, 100, 70), seed=1)
    write_ct(tmp_path / "cts" / "c.nii", (96, 96, 40), seed=2)
    s = run(tmp_path / "cts", tmp_path / "out", extractor)
    assert s.ok and s.processed == ["a.b", "c"] and s.windows == 4 + 1
    dec4 = np.load(tmp_path / "out" / "a.b.npy", allow_pickle=False)
    hidden = np.load(tmp_path / "out" / "a.b_hidden_states_out_4.npy", allow_pickle=False)
    assert dec4.shape == hidden.shape == (CHANNELS, 4, 3, 3) and dec4.dtype == np.float32
    # The whole chain by hand: scale, pad, cut, encode (stand-in), merge.
    plan = plan_windows(hu.shape, 96, 0.0)
    cells, _ = extractor.encoder.encode_volume(pad_volume(scale_hu(hu), plan), plan.starts)
    np.testing.assert_array_equal(dec4, merge_windows(cells, plan.starts, plan.padded_shape))
    entry = mf.read_manifest(tmp_path / "out")["a.b"]
    assert entry["volume_shape"] == [130, 100, 70] and entry["grid_shape"] == [4, 3, 3]
    assert entry["spacing"] == pytest.approx([0.8, 0.8, 2.5])
    assert entry["source_sha256"] == file_sha256(tmp_path / "cts" / "a.b.nii.gz")
    assert entry["source_size"] == (tmp_path / "cts" / "a.b.nii.gz").stat().st_size
    assert entry["weights"]["kind"] == "random" and entry["settings"]["overlap"] == 0.0
    assert entry["dtype"] == "float32" and entry["windows"] == 4
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["format"] == mf.FORMAT


def test_rerun_skips_until_source_settings_or_outputs_change(tmp_path, extractor):
    write_ct(tmp_path / "cts" / "a.nii.gz", seed=1)
    write_ct(tmp_path / "cts" / "b.nii.gz", seed=2)
    assert run(tmp_path / "cts", tmp_path / "out", extractor).processed == ["a", "b"]
    s = run(tmp_path / "cts", tmp_path / "out", extractor)
    assert s.processed == [] and s.skipped == ["a", "b"]
    write_ct(tmp_path / "cts" / "a.nii.gz", seed=3)  # new bytes
    (tmp_path / "out" / "b_hidden_states_out_4.npy").unlink()  # lost output
    s = run(tmp_path / "cts", tmp_path / "out", extractor)
    assert s.processed == ["a", "b"]
    other = fake_extractor(ExtractConfig(feature_size=12, batch=2, overlap=0.5))
    assert run(tmp_path / "cts", tmp_path / "out", other).processed == ["a", "b"]
    assert run(tmp_path / "cts", tmp_path / "out", other, force=True).processed == ["a", "b"]
    assert set(mf.read_manifest(tmp_path / "out")) == {"a", "b"}


def test_damaged_outputs_are_re_extracted_not_trusted(tmp_path, extractor):
    """Issue 16.7: a truncated, reshaped or retyped .npy is not up to date."""
    write_ct(tmp_path / "cts" / "a.nii.gz", seed=1)
    out = tmp_path / "out"
    assert run(tmp_path / "cts", out, extractor).processed == ["a"]
    good = (out / "a.npy").read_bytes()
    (out / "a.npy").write_bytes(good[: len(good) - 100])  # a copy cut short
    entry = mf.read_manifest(out)["a"]
    assert "truncated" in mf.outputs_intact(entry, out)
    assert run(tmp_path / "cts", out, extractor).processed == ["a"]
    assert (out / "a.npy").read_bytes() == good
    np.save(out / "a_hidden_states_out_4.npy", np.zeros((CHANNELS, 1, 1, 1), np.float32))
    assert "shape (6, 1, 1, 1), the manifest says" in mf.outputs_intact(entry, out)
    np.save(out / "a.npy", np.load(out / "a.npy").astype(np.float64))
    assert "dtype float64" in mf.npy_problem(out / "a.npy", None)
    assert run(tmp_path / "cts", out, extractor).processed == ["a"]
    assert mf.outputs_intact(mf.read_manifest(out)["a"], out) is None
    assert run(tmp_path / "cts", out, extractor).skipped == ["a"]


def test_keep_others_refuses_to_replace_features_of_other_weights(tmp_path, extractor):
    """Issue 16.1 at the extraction level: `keep_others` (predict) never overwrites a cache."""
    write_ct(tmp_path / "cts" / "a.nii.gz", seed=1)
    out = tmp_path / "out"
    ex.extract_volume(tmp_path / "cts" / "a.nii.gz", out, extractor=extractor)
    before = (out / "a.npy").read_bytes()
    other = fake_extractor(ExtractConfig(feature_size=12, batch=2))
    other.weights = dict(other.weights, kind="file", path="/w/btcv.safetensors", sha256="f" * 64)
    with pytest.raises(DataError, match=r"a.npy: made with a random-initialised encoder \(weights "
                                        r"'random', seed 0, feature_size 12\); not replaced"):
        ex.extract_volume(tmp_path / "cts" / "a.nii.gz", out, extractor=other, keep_others=True)
    changed = fake_extractor(ExtractConfig(feature_size=12, batch=2, hu_min=-500))
    with pytest.raises(DataError, match="made with other settings"):
        ex.extract_volume(tmp_path / "cts" / "a.nii.gz", out, extractor=changed, keep_others=True)
    assert (out / "a.npy").read_bytes() == before
    # `extract` itself (no keep_others) replaces them: the user asked for those weights
    assert not ex.extract_volume(tmp_path / "cts" / "a.nii.gz", out, extractor=other).skipped


def write_bad_inputs(cts: Path) -> None:
    cts.mkdir(parents=True, exist_ok=True)
    (cts / "corrupt.nii.gz").write_bytes(b"this is not a CT" * 10)
    write_ct(cts / "trunc.nii.gz", (100, 100, 100), seed=4)
    blob = (cts / "trunc.nii.gz").read_bytes()
    (cts / "trunc.nii.gz").write_bytes(blob[: len(blob) // 2])
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 40, 2), np.int16), np.eye(4)), str(cts / "series.nii.gz"))
    nib.save(nib.Nifti1Image(np.full((40, 40, 40), np.nan, np.float32), np.eye(4)), str(cts / "nan.nii.gz"))
    (cts / "notes.txt").write_text("not a volume")
    (cts / "plain.nii.gz").write_bytes(gzip.compress(b"\0" * 400))  # gzip of garbage


def test_bad_inputs_reported_others_processed_nothing_partial(tmp_path, extractor):
    cts, out = tmp_path / "cts", tmp_path / "out"
    write_bad_inputs(cts)
    write_ct(cts / "good.nii.gz", (100, 90, 50), seed=5)
    messages = []
    s = extract_directory(cts, out, extractor=extractor, progress=False, echo=messages.append)
    assert s.processed == ["good"] and not s.ok
    failed = {Path(f).name: m for f, m in s.failed}
    assert set(failed) == {"corrupt.nii.gz", "trunc.nii.gz", "series.nii.gz", "nan.nii.gz",
                           "notes.txt", "plain.nii.gz"}
    assert "truncated or corrupt" in failed["trunc.nii.gz"]
    assert "3D" in failed["series.nii.gz"] and "no finite voxels" in failed["nan.nii.gz"]
    assert "not a NIfTI" in failed["notes.txt"]
    assert len(messages) == 6 and all(any(n in m for n in failed) for m in messages)
    assert sorted(p.name for p in out.iterdir()) == ["good.npy", "good_hidden_states_out_4.npy",
                                                     "manifest.json"]
    assert set(mf.read_manifest(out)) == {"good"}


def test_name_clash_refused(tmp_path, extractor):
    write_ct(tmp_path / "cts" / "a.nii", seed=1)
    write_ct(tmp_path / "cts" / "a.nii.gz", seed=2)
    write_ct(tmp_path / "cts" / "b.nii.gz", seed=3)
    s = run(tmp_path / "cts", tmp_path / "out", extractor)
    assert s.processed == ["b"] and sorted(Path(f).name for f, _ in s.failed) == ["a.nii", "a.nii.gz"]


def test_failure_while_writing_leaves_no_half_pair(tmp_path, extractor, monkeypatch):
    write_ct(tmp_path / "cts" / "a.nii.gz", seed=1)
    real = ex.atomic_save_npy

    def flaky(path, array):
        if "hidden" in Path(path).name:
            raise OSError("disk full")
        return real(path, array)

    monkeypatch.setattr(ex, "atomic_save_npy", flaky)
    s = run(tmp_path / "cts", tmp_path / "out", extractor)
    assert not s.ok and "disk full" in s.failed[0][1]
    assert list((tmp_path / "out").iterdir()) == []


def test_empty_or_missing_directory(tmp_path, extractor):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .nii/.nii.gz files"):
        run(tmp_path / "empty", tmp_path / "out", extractor)
    with pytest.raises(DataError, match="no such directory"):
        run(tmp_path / "nope", tmp_path / "out", extractor)


def test_limit_takes_first_files(tmp_path, extractor):
    for i in range(3):
        write_ct(tmp_path / "cts" / f"ct{i}.nii.gz", (96, 96, 30), seed=i)
    assert run(tmp_path / "cts", tmp_path / "out", extractor, limit=2).processed == ["ct0", "ct1"]


def test_manifest_parts_are_merged(tmp_path):
    mf.write_manifest(mf.manifest_path(tmp_path, 0, 2), {"a": {"x": 1}})
    mf.write_manifest(mf.manifest_path(tmp_path, 1, 2), {"b": {"x": 2}})
    assert mf.read_manifest(tmp_path) == {"a": {"x": 1}, "b": {"x": 2}}
    mf.merge_parts(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
    assert mf.read_manifest(tmp_path) == {"a": {"x": 1}, "b": {"x": 2}}


# ----------------------------------------------------------------------------- preprocessing

def test_preprocessing_equals_monai_transforms(tmp_path):
    """LoadImaged(ensure_channel_first) + ScaleIntensityRanged(-175, 250, 0, 1, clip) as the original."""
    from monai.transforms import LoadImage, ScaleIntensityRange

    path = tmp_path / "x.nii.gz"
    write_ct(path, (40, 33, 20), seed=7, slope=2.0, inter=-1024.0)
    expected = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    expected = ScaleIntensityRange(-175, 250, 0.0, 1.0, clip=True)(expected)[0].numpy()
    got = load_volume(path)
    assert got.array.dtype == np.float32 and got.array.shape == (40, 33, 20)
    np.testing.assert_allclose(got.array, expected, rtol=0, atol=1e-7)
    assert 0.0 < got.array.mean() < 1.0  # slope/intercept applied: values span the window


def test_hu_window_is_configurable():
    hu = np.array([-300.0, -200.0, 0.0, 100.0, 400.0], np.float32)
    np.testing.assert_allclose(scale_hu(hu, -200.0, 100.0), [0, 0, 2 / 3, 1, 1], rtol=1e-6)


def test_canonical_reorients_to_ras(tmp_path):
    path = tmp_path / "lps.nii.gz"
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    hu = write_ct(path, (20, 30, 10), seed=8, affine=affine)
    stored, ras = load_volume(path), load_volume(path, canonical=True)
    np.testing.assert_array_equal(stored.array, scale_hu(hu))
    expected = np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj, np.float32)
    np.testing.assert_array_equal(ras.array, scale_hu(expected))
    np.testing.assert_array_equal(ras.array, stored.array[::-1, ::-1, :])
    assert ras.affine[0, 0] > 0 and ras.canonical


def test_trailing_singleton_axis_accepted(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20, 1), np.int16), np.eye(4)), str(tmp_path / "s.nii"))
    assert load_volume(tmp_path / "s.nii").array.shape == (20, 20, 20)


def test_output_names():
    assert volume_name("/x/a.b.nii.gz") == "a.b" and volume_name("C.NII") == "C"
    with pytest.raises(DataError):
        volume_name("a.mha")


# ----------------------------------------------------------------------------- CLI

@pytest.mark.cli
def test_cli_exit_codes(tmp_path, extractor, monkeypatch, capsys):
    from ctsearcher_jax import cli

    seen = {}

    def fake_get(weights, config, seed=0):
        seen.update(weights=weights, config=config)
        return extractor

    monkeypatch.setattr(directory, "get_extractor", fake_get)  # what extract_directory calls
    write_ct(tmp_path / "cts" / "a.nii.gz", seed=1)
    argv = ["extract", "--ct-dir", str(tmp_path / "cts"), "--swin-weights", "random", "--out",
            str(tmp_path / "out"), "--feature-size", "24", "--overlap", "0.25", "--no-progress"]
    assert cli.main(argv) == 0
    assert seen["config"].feature_size == 24 and seen["config"].overlap == 0.25
    captured = capsys.readouterr()
    assert "windows/s" in captured.out  # the summary (a result) on stdout
    # diagnostics on stderr, plain lines (no bar, no cursor codes): devices, one line per CT
    assert "backend cpu" in captured.err and "CT 1/1 a.nii.gz: " in captured.err
    assert "\r" not in captured.err and "\x1b[" not in captured.err
    (tmp_path / "cts" / "bad.nii.gz").write_bytes(b"junk")
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "bad.nii.gz" in captured.err and "FAILED" in captured.out
    # the bad file is refused by its header before the encoder runs: one CT left to go through
    assert "CT 1/1 a.nii.gz: up to date, skipped" in captured.err
    (tmp_path / "empty").mkdir()
    argv[2] = str(tmp_path / "empty")
    assert cli.main(argv) == 2
    assert "no .nii/.nii.gz files" in capsys.readouterr().err
    assert cli.main(argv[:-1] + ["--overlap", "1.5"]) == 2


def test_torch_checkpoint_or_missing_weights_refused(tmp_path):
    from ctsearcher_jax.errors import WeightsError

    (tmp_path / "model.pt").write_bytes(b"\x80\x04junk")
    with pytest.raises(WeightsError, match="convert-monai"):
        ex.build_extractor(tmp_path / "model.pt", ExtractConfig(feature_size=12))
    with pytest.raises(WeightsError, match="no such weights file"):
        ex.get_extractor(tmp_path / "missing.safetensors", ExtractConfig(feature_size=12))


def test_cli_refuses_feature_size_that_contradicts_the_weights_file(tmp_path, capsys):
    from safetensors.numpy import save_file

    from ctsearcher_jax import cli

    weights = tmp_path / "w.safetensors"
    save_file({"x": np.zeros(1, np.float32)}, str(weights),
              metadata={"config": json.dumps({"feature_size": 24})})
    write_ct(tmp_path / "cts" / "a.nii.gz", seed=1)
    argv = ["extract", "--ct-dir", str(tmp_path / "cts"), "--swin-weights", str(weights), "--out",
            str(tmp_path / "out"), "--feature-size", "12"]
    assert cli.main(argv) == 2
    assert "holds feature_size 24" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_only_non_nifti_files_fail_without_loading_weights(tmp_path, monkeypatch):
    (tmp_path / "cts").mkdir()
    (tmp_path / "cts" / "scan.dcm").write_bytes(b"DICM")

    def boom(*a, **k):
        raise AssertionError("the encoder must not be built")

    monkeypatch.setattr(ex, "get_extractor", boom)
    s = extract_directory(tmp_path / "cts", tmp_path / "out", "random", ExtractConfig(),
                             progress=False, echo=lambda s: None)
    assert not s.ok and Path(s.failed[0][0]).name == "scan.dcm" and s.processed == []
