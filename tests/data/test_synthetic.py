"""Synthetic CT-ScanGaze: format, determinism, CT realism, reading statistics, CLI."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctsearcher_jax.data import synthetic as S
from ctsearcher_jax.data.schema import group_by_ct, load_records
from ctsearcher_jax.errors import ConfigError, DataError

SHAPE = (48, 48, 32)
FIELDS = ["name", "subject", "task", "X", "Y", "Z", "T", "length", "split", "report"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> S.SynthSummary:
    """4 CTs x 2 readers at the default shape, default fixation range."""
    return S.synthesize(tmp_path_factory.mktemp("synth") / "ds", num_cts=4, num_readers=2, seed=11)


@pytest.fixture(scope="module")
def records(dataset) -> list[dict]:
    return json.loads(dataset.dataset_json.read_text())


@pytest.fixture(scope="module")
def meta(dataset) -> dict:
    return json.loads(dataset.meta_json.read_text())


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- determinism and layout

def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(num_cts=2, num_readers=2, shape=SHAPE, min_fixations=20, max_fixations=60)
    S.synthesize(tmp_path / "a", seed=3, **kw)
    S.synthesize(tmp_path / "b", seed=3, **kw)
    S.synthesize(tmp_path / "c", seed=4, **kw)
    a, b, c = (_tree_bytes(tmp_path / n) for n in "abc")
    assert sorted(a) == ["cts/synth_0000.nii.gz", "cts/synth_0001.nii.gz",
                         S.DATASET_JSON, S.META_JSON]
    assert a == b
    assert a[S.DATASET_JSON] != c[S.DATASET_JSON]
    assert a["cts/synth_0000.nii.gz"] != c["cts/synth_0000.nii.gz"]
    # gzip header: mtime 0, so no timestamp leaks into the bytes
    assert a["cts/synth_0000.nii.gz"][4:8] == b"\x00\x00\x00\x00"


def test_adding_cts_keeps_existing_ones(tmp_path):
    kw = dict(num_readers=2, seed=5, shape=SHAPE, min_fixations=20, max_fixations=60)
    S.synthesize(tmp_path / "two", num_cts=2, **kw)
    S.synthesize(tmp_path / "three", num_cts=3, **kw)
    two, three = _tree_bytes(tmp_path / "two"), _tree_bytes(tmp_path / "three")
    assert two["cts/synth_0000.nii.gz"] == three["cts/synth_0000.nii.gz"]
    r2 = json.loads(two[S.DATASET_JSON])
    r3 = json.loads(three[S.DATASET_JSON])
    for a, b in zip(r2[:2], r3[:2]):   # CT 0's scanpaths (the split may move, the paths do not)
        assert {k: a[k] for k in "XYZT"} == {k: b[k] for k in "XYZT"}


def test_records_have_the_dataset_format(dataset, records):
    assert len(records) == 4 * 2
    stems = {p.name[: -len(".nii.gz")] for p in (dataset.out_dir / "cts").glob("*.nii.gz")}
    for rec in records:
        assert list(rec) == FIELDS
        assert rec["name"] in stems
        assert isinstance(rec["subject"], int) and rec["subject"] in (1, 2)
        assert isinstance(rec["task"], str) and rec["task"]
        assert rec["split"] in ("train", "test")
        assert rec["length"] == len(rec["X"]) == len(rec["Y"]) == len(rec["Z"]) == len(rec["T"])
        assert all(isinstance(z, int) for z in rec["Z"])
        assert "focal lesion" in rec["report"] and "mm" in rec["report"]
    # one split per CT; every reader once per CT
    by_ct: dict[str, list] = {}
    for rec in records:
        by_ct.setdefault(rec["name"], []).append(rec)
    assert all(len({r["split"] for r in rs}) == 1 for rs in by_ct.values())
    assert all(sorted(r["subject"] for r in rs) == [1, 2] for rs in by_ct.values())
    assert dataset.num_scanpaths == 8 and dataset.num_fixations == sum(r["length"] for r in records)


def test_output_passes_the_schema(dataset, meta):
    scanpaths = load_records(dataset.out_dir,
                             z_limits={c["name"]: c["shape"][2] for c in meta["cts"]})
    items = group_by_ct(scanpaths)
    assert [it.name for it in items] == [S.ct_name(i) for i in range(4)]
    assert all(it.num_readers == 2 for it in items)
    assert {it.split for it in items} == {"train", "test"}


@pytest.mark.parametrize("n, n_test", [(1, 0), (2, 1), (3, 1), (4, 1), (8, 2), (10, 2)])
def test_splits(n, n_test):
    splits = S.split_of_cts(n, seed=0)
    assert splits.count("test") == n_test and splits.count("train") == n - n_test
    assert splits == S.split_of_cts(n, seed=0)


# ---------------------------------------------------------------- volumes

def test_volumes_load_with_nibabel(dataset, meta):
    for ct in meta["cts"]:
        path = dataset.out_dir / ct["file"]
        img = nib.load(path)
        assert img.shape == S.DEFAULT_SHAPE
        assert img.get_data_dtype() == np.int16
        spacing = ct["spacing_mm"]
        np.testing.assert_allclose(img.header.get_zooms(), spacing, rtol=1e-5)
        np.testing.assert_allclose(img.affine, S.phantom_affine(img.shape, spacing), atol=1e-4)
        assert nib.aff2axcodes(img.affine) == ("P", "L", "I")
        assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
        assert img.header.get_xyzt_units() == ("mm", "sec")
        # raw header: real scaling stored = HU + 1024
        raw = nib.Nifti1Header.from_fileobj(io.BytesIO(gzip.decompress(path.read_bytes())))
        assert float(raw["scl_slope"]) == 1.0 and float(raw["scl_inter"]) == -1024.0
        assert np.asarray(img.dataobj.get_unscaled()).min() >= 0
        # realistic in-plane spacing x size = field of view, 320-420 mm
        assert 320 <= spacing[0] * img.shape[0] <= 420


def test_volumes_cover_ct_tissue_classes(dataset, meta):
    hu = np.concatenate([nib.load(dataset.out_dir / ct["file"]).get_fdata().ravel()
                         for ct in meta["cts"]])
    assert hu.min() >= -1024 and hu.max() <= 3071
    assert np.all(hu == np.round(hu))
    frac = lambda lo, hi: float(np.mean((hu >= lo) & (hu <= hi)))  # noqa: E731
    assert frac(-1024, -960) > 0.3        # air around the body
    assert frac(-900, -780) > 0.01        # lung
    assert frac(-130, -70) > 0.05         # fat
    assert frac(20, 60) > 0.03            # soft tissue and organs
    assert frac(400, 1500) > 0.003        # bone
    assert frac(-700, -200) < 0.06        # little in between (partial volume at edges only)


def test_lesion_centres_carry_lesion_attenuation(dataset, meta):
    n = 0
    for ct in meta["cts"]:
        hu = nib.load(dataset.out_dir / ct["file"]).get_fdata()
        assert 2 <= len(ct["lesions"]) <= 4
        for les in ct["lesions"]:
            i, j, k = (int(round(v)) for v in les["center_ijk"])
            got = hu[i, j, k]
            contrast = les["hu"] - les["background_hu"]
            assert abs(contrast) >= 10, les
            # the centre voxel is much closer to the lesion's value than to its surroundings
            assert abs(got - les["hu"]) < 0.5 * abs(contrast) + 35, (les, got)
            x, y, z = (les["center_gaze"][a] for a in "XYZ")
            np.testing.assert_allclose(S.voxel_to_gaze(np.array(les["center_ijk"]), ct["shape"]),
                                       [x, y, z], atol=0.01)
            n += 1
    assert n == sum(len(c["lesions"]) for c in meta["cts"]) == dataset.num_lesions


def test_make_phantom_other_shape():
    hu, spacing, lesions = S.make_phantom((40, 56, 20), np.random.default_rng(0))
    assert hu.shape == (40, 56, 20) and hu.dtype == np.int16
    assert spacing[0] * 40 == pytest.approx(spacing[1] * 56)       # square field of view
    assert (hu > 400).any() and (hu < -950).any() and len(lesions) >= 1


def test_gaze_mapping():
    shape = (512, 256, 30)
    ijk = np.array([[0.0, 0.0, 0.0], [511.0, 255.0, 29.0], [10.0, 20.0, 3.0]])
    xyz = S.voxel_to_gaze(ijk, shape)
    np.testing.assert_allclose(xyz[0], [1.5, 1.0, 1.0])          # J=256: a pixel spans 2 frame px
    np.testing.assert_allclose(xyz[1], [511.5, 512.0, 30.0])
    np.testing.assert_allclose(S.voxel_to_gaze(np.array([7.0, 9.0, 0.0]), (512, 512, 1)),
                               [10.0, 8.0, 1.0])                  # full resolution: X = j + 1
    np.testing.assert_allclose(S.gaze_to_voxel(xyz, shape), ijk)


# ---------------------------------------------------------------- reading statistics

def test_scanpath_statistics(records, meta):
    K = S.DEFAULT_SHAPE[2]
    for rec in records:
        x, y, z, t = (np.asarray(rec[k], dtype=float) for k in "XYZT")
        assert 50 <= rec["length"] <= 400
        assert x.min() >= 1 and x.max() <= 512 and y.min() >= 1 and y.max() <= 512
        assert z.min() >= 1 and z.max() <= K
        assert t.min() > 0
        # drilling: Z mostly non-decreasing, with real back-tracking, covering most slices
        steps = np.diff(z)
        assert np.mean(steps >= 0) > 0.6
        assert (steps < 0).any()
        assert z.max() - z.min() >= 0.8 * (K - 1)
    durations = np.concatenate([r["T"] for r in records])
    assert 0.18 <= np.median(durations) <= 0.33
    # log-normal: the log durations are roughly symmetric around the log median
    logs = np.log(durations)
    assert abs(np.mean(logs) - np.median(logs)) < 0.15


def _near_lesion(x, y, z, lesions, scale=1.5):
    hit = np.zeros(len(x), bool)
    for les in lesions:
        c, r = les["center_gaze"], les["radii_gaze"]
        d = (((x - c["X"]) / r["X"]) ** 2 + ((y - c["Y"]) / r["Y"]) ** 2
             + ((z - c["Z"]) / max(r["Z"], 1.0)) ** 2)
        hit |= d <= scale ** 2
    return hit


def test_lesions_attract_fixations_and_dwell(records, meta):
    lesions = {c["name"]: c["lesions"] for c in meta["cts"]}
    rng = np.random.default_rng(0)
    on, chance, t_on, t_off = [], [], [], []
    for rec in records:
        x, y, z, t = (np.asarray(rec[k], dtype=float) for k in "XYZT")
        hit = _near_lesion(x, y, z, lesions[rec["name"]])
        on.append(hit.mean())
        t_on.extend(t[hit])
        t_off.extend(t[~hit])
        u = rng.uniform(1, 512, (2, 20000))
        zr = rng.integers(1, S.DEFAULT_SHAPE[2] + 1, 20000).astype(float)
        chance.append(_near_lesion(u[0], u[1], zr, lesions[rec["name"]]).mean())
    assert np.mean(on) > 0.05
    assert np.mean(on) > 20 * np.mean(chance)
    assert np.median(t_on) > 1.4 * np.median(t_off)      # longer dwell on lesions


def test_readers_differ_systematically(tmp_path):
    s = S.synthesize(tmp_path / "r", num_cts=4, num_readers=3, seed=2, shape=SHAPE)
    recs = json.loads(s.dataset_json.read_text())
    styles = [S.reader_style(2, r) for r in (1, 2, 3)]
    order = np.argsort([st.thoroughness for st in styles])       # fast ... thorough
    mean_len = np.array([np.mean([r["length"] for r in recs if r["subject"] == sub])
                         for sub in (1, 2, 3)])
    assert np.all(np.diff(mean_len[order]) > 0)
    # style traits follow thoroughness, whatever the seed
    for seed in (0, 1, 99):
        fast, thorough = S.reader_style(seed, 2), S.reader_style(seed, 3)
        assert fast.thoroughness < thorough.thoroughness
        assert fast.count_level < thorough.count_level
        assert fast.dwell_scale < thorough.dwell_scale
        assert fast.duration_median_s < thorough.duration_median_s


def test_fixation_range_is_respected(tmp_path):
    s = S.synthesize(tmp_path / "short", num_cts=2, num_readers=3, seed=0, shape=SHAPE,
                     min_fixations=5, max_fixations=9)
    recs = json.loads(s.dataset_json.read_text())
    assert all(5 <= r["length"] <= 9 for r in recs)
    s1 = S.synthesize(tmp_path / "one", num_cts=1, num_readers=1, seed=0, shape=SHAPE,
                      min_fixations=1, max_fixations=1)
    (rec,) = json.loads(s1.dataset_json.read_text())
    assert rec["length"] == 1 and rec["split"] == "train"


# ---------------------------------------------------------------- errors and overwrite policy

def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match=r"shape \(8, 8, 8\)"):
        S.synthesize(tmp_path / "x", num_cts=1, num_readers=1, seed=0, shape=(8, 8, 8))
    with pytest.raises(ConfigError, match="min"):
        S.synthesize(tmp_path / "x", num_cts=1, num_readers=1, seed=0, min_fixations=10,
                     max_fixations=5)
    with pytest.raises(ConfigError, match="num_cts=0"):  # Python's words, not the CLI's
        S.synthesize(tmp_path / "x", num_cts=0, num_readers=1, seed=0)
    # issue 24 row 12: refused before anything is written (was a traceback and an empty cts/)
    with pytest.raises(ConfigError, match="--seed -1: must be an integer >= 0"):
        S.synthesize(tmp_path / "x", num_cts=1, num_readers=1, seed=-1)
    with pytest.raises(ConfigError, match="--shape 5000 5000 5000: 125,000,000,000 voxels"):
        S.synthesize(tmp_path / "x", num_cts=1, num_readers=1, seed=0, shape=(5000, 5000, 5000))
    assert not (tmp_path / "x").exists()


def test_a_failed_synth_leaves_nothing_behind(tmp_path, monkeypatch):
    """A failure half-way (here the second phantom) removes what this call wrote, folders it
    created included; a user's file in a --force folder stays."""
    from ctsearcher_jax.data.synthetic import writing

    real, calls = writing.make_phantom, []

    def fail_second(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("out of memory in the second phantom")
        return real(*a, **kw)

    monkeypatch.setattr(writing, "make_phantom", fail_second)
    with pytest.raises(MemoryError):
        S.synthesize(tmp_path / "new" / "d", num_cts=2, num_readers=1, seed=0, shape=SHAPE)
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    calls.clear()
    with pytest.raises(MemoryError):
        S.synthesize(kept, num_cts=2, num_readers=1, seed=0, shape=SHAPE, force=True)
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]


def test_refuses_non_empty_folder_and_force_keeps_user_files(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty") as info:
        S.synthesize(out, num_cts=1, num_readers=1, seed=0, shape=SHAPE)
    assert "force=True" in str(info.value) and "--force" not in str(info.value)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    S.synthesize(out, num_cts=1, num_readers=1, seed=0, shape=SHAPE, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / S.DATASET_JSON).is_file()
    assert not [p for p in out.rglob("*.tmp")]


@pytest.mark.cli
def test_cli_synth(tmp_path, cli_run):
    out = tmp_path / "cli"
    args = ["--out", out, "--num-cts", 2, "--num-readers", 2, "--seed", 1, "--shape", 32, 32, 16,
            "--min-fixations", 10, "--max-fixations", 30]
    res = cli_run("synth", *args)
    assert res.returncode == 0, res.stderr
    assert "2 CTs of shape (32, 32, 16)" in res.stdout and S.DATASET_JSON in res.stdout
    before = _tree_bytes(out)
    assert nib.load(out / "cts" / "synth_0001.nii.gz").shape == (32, 32, 16)
    recs = json.loads((out / S.DATASET_JSON).read_text())
    assert all(10 <= r["length"] <= 30 for r in recs) and max(max(r["Z"]) for r in recs) <= 16

    again = cli_run("synth", *args)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "not empty" in again.stderr and "--force" in again.stderr
    assert _tree_bytes(out) == before                        # nothing touched

    forced = cli_run("synth", *args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert _tree_bytes(out) == before                        # same seed, same bytes
    # the former names still work, with a deprecation warning each
    old = cli_run("synth", *[{"--num-cts": "--cts", "--num-readers": "--readers"}.get(a, a)
                             for a in args],
                  "--force")
    assert old.returncode == 0 and _tree_bytes(out) == before
    assert "warning: --cts is deprecated; use --num-cts" in old.stderr
    assert "warning: --readers is deprecated; use --num-readers" in old.stderr

    bad = cli_run("synth", "--out", tmp_path / "bad", "--shape", 4, 4, 4)
    assert bad.returncode == 2 and "shape (4, 4, 4)" in bad.stderr
    assert not (tmp_path / "bad").exists()
    for args in (("--seed", -1), ("--shape", 5000, 5000, 5000)):  # issue 24 row 12
        bad = cli_run("synth", "--out", tmp_path / "bad", *args)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and args[0] in bad.stderr
        assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()
