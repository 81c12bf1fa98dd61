"""Figures of scanpaths over CTs: coordinates, windows, projections, density, files and the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ctsearcher_jax.data.schema import Scanpath, load_dataset
from ctsearcher_jax.data.synthetic import synthesize, voxel_to_gaze
from ctsearcher_jax.viz import render_ct_figures
from ctsearcher_jax.viz.animation import frame_slices
from ctsearcher_jax.viz.density import (
    density_slices,
    density_z_profile,
    display_grid,
    fixation_density,
    representative_slices,
)
from ctsearcher_jax.viz.figure import pixel_size
from ctsearcher_jax.viz.scanpaths import PANEL_INCHES, TITLE_INCHES, drilling_steps, label_step
from ctsearcher_jax.viz.volume import WINDOWS, gaze_to_voxel, parse_window, project, resolve_window

SHAPE = (48, 48, 32)
DPI = 40


def sp(x, y, z, t, subject=1, name="ct") -> Scanpath:
    f = lambda v: np.asarray(v, np.float64)  # noqa: E731
    return Scanpath(name=name, subject=subject, split=None, x=f(x), y=f(y), z=f(z), t=f(t))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, num_cts=2, num_readers=2, seed=3, shape=SHAPE, min_fixations=6,
               max_fixations=14)
    return out


# ------------------------------------------------------------------ coordinates and windows

def test_gaze_to_voxel_inverts_the_synthetic_mapping():
    rng = np.random.default_rng(0)
    for shape in [(48, 48, 32), (512, 512, 100), (96, 64, 20)]:
        ijk = rng.uniform(-0.5, np.array(shape) - 0.5, size=(50, 3))
        xyz = voxel_to_gaze(ijk, shape)
        i, j, k = gaze_to_voxel(xyz[:, 0], xyz[:, 1], xyz[:, 2], shape)
        np.testing.assert_allclose(np.stack([i, j, k], 1), ijk, atol=1e-9)


def test_gaze_to_voxel_512_frame_is_minus_one():
    i, j, k = gaze_to_voxel(np.array([1.0, 512.0]), np.array([3.0, 100.0]), np.array([1.0, 7.0]),
                            (512, 512, 40))
    np.testing.assert_allclose(j, [0.0, 511.0])
    np.testing.assert_allclose(i, [2.0, 99.0])
    np.testing.assert_allclose(k, [0.0, 6.0])


def test_parse_window():
    assert parse_window("soft") == (400.0, 40.0) == WINDOWS["soft"]
    assert parse_window("LUNG") == (1500.0, -600.0)
    assert parse_window("bone") == (1800.0, 400.0)
    assert parse_window("350,50") == (350.0, 50.0)
    assert parse_window("auto") is None
    for bad in ("brain", "0,40", "-3,1", "a,b", "1,2,3", "nan,1"):
        with pytest.raises(ValueError, match="soft, lung, bone, auto"):
            parse_window(bad)


def test_window_maps_level_to_half_and_clips():
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    w = resolve_window("soft", np.linspace(-200, 300, 1000))
    np.testing.assert_allclose(w.apply(hu), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    assert w.label == "soft W400/L40"


def test_window_falls_back_to_percentiles_when_not_hu():
    volume = np.random.default_rng(0).uniform(0.0, 1.0, size=(8, 8, 8)).astype(np.float32)
    with pytest.warns(UserWarning, match="does not look like HU"):
        w = resolve_window("soft", volume)
    assert w.label.startswith("auto")
    scaled = w.apply(volume)
    assert scaled.min() == 0.0 and scaled.max() == 1.0 and 0.3 < scaled.mean() < 0.7


def test_projection_orientation():
    vol = np.zeros((5, 6, 7), np.float32)
    vol[1, 2, 3] = 1.0   # i=1 (Y row), j=2 (X column), k=3 (slice)
    axial, coronal, sagittal = (project(vol, a, "max") for a in (2, 0, 1))
    assert axial.shape == (5, 6) and axial[1, 2] == 1.0          # rows Y, columns X
    assert coronal.shape == (7, 6) and coronal[3, 2] == 1.0      # rows Z, columns X
    assert sagittal.shape == (7, 5) and sagittal[3, 1] == 1.0    # rows Z, columns Y
    np.testing.assert_allclose(project(vol, 2, "mean")[1, 2], 1.0 / 7)
    with pytest.raises(ValueError):
        project(vol, 2, "median")


# ------------------------------------------------------------------ density, drilling, labels

def test_fixation_density_matches_brute_force():
    shape = (12, 10, 9)
    s = sp([100.0, 300.0, 480.0], [50.0, 256.0, 400.0], [2.0, 5.0, 9.0], [0.2, 0.5, 1.0])
    d = fixation_density([s], shape, sigma_frame=40.0, sigma_slices=1.5)
    assert d.shape == shape and d.dtype == np.float32
    np.testing.assert_allclose(d.sum(), 1.0, rtol=1e-5)
    i, j, k = gaze_to_voxel(s.x, s.y, s.z, shape)
    gi, gj, gk = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    ref = np.zeros(shape)
    for f in range(3):
        ref += s.t[f] * np.exp(-0.5 * (((gi - i[f]) / (40 * 12 / 512)) ** 2
                                       + ((gj - j[f]) / (40 * 10 / 512)) ** 2
                                       + ((gk - k[f]) / 1.5) ** 2))
    np.testing.assert_allclose(d, ref / ref.sum(), rtol=1e-4, atol=1e-9)
    kw = dict(sigma_frame=40.0, sigma_slices=1.5)
    np.testing.assert_allclose(density_z_profile([s], shape, **kw), d.sum(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(density_slices([s], shape, [0, 4, 8], **kw),
                               np.moveaxis(d[:, :, [0, 4, 8]], 2, 0), rtol=1e-5, atol=1e-9)
    counted = fixation_density([s], shape, sigma_frame=40.0, sigma_slices=1.5, weight="count")
    assert not np.allclose(counted, d)
    assert fixation_density([], shape).sum() == 0.0
    assert density_z_profile([], shape).sum() == 0.0 and density_slices([], shape, [1]).shape == (1, 12, 10)


def test_fixation_density_chunks_many_fixations():
    rng = np.random.default_rng(1)
    shape = (6, 5, 4000)       # J*K = 20000: chunks of 419 fixations
    many = [sp(rng.uniform(1, 512, 500), rng.uniform(1, 512, 500), rng.uniform(1, 4000, 500),
               rng.uniform(0.1, 1.0, 500), subject=s) for s in range(3)]
    d = fixation_density(many, shape)
    np.testing.assert_allclose(d.sum(axis=(0, 1)), density_z_profile(many, shape), rtol=1e-4,
                               atol=1e-9)


def test_representative_slices_follow_the_dwell():
    profile = np.zeros(50)
    profile[10] = 1.0
    profile[40] = 3.0
    picked = representative_slices(profile, 4)
    assert set(picked.tolist()) == {10, 40}
    assert list(representative_slices(np.zeros(9), 3)) == [0, 4, 8]


def test_display_grid_caps_in_plane_size():
    assert display_grid((48, 48, 32)) == (48, 48, 32)
    assert display_grid((512, 256, 90)) == (128, 64, 90)


def test_drilling_steps():
    times, slices = drilling_steps(sp([1, 2, 3], [1, 2, 3], [4, 9, 2], [0.5, 0.25, 1.0]))
    np.testing.assert_allclose(times, [0.0, 0.5, 0.5, 0.75, 0.75, 1.75])
    np.testing.assert_allclose(slices, [4, 4, 9, 9, 2, 2])


def test_label_step_and_frames():
    assert label_step(5) == 1 and label_step(15) == 1 and label_step(16) == 2
    assert label_step(400) == 27
    assert list(frame_slices(5, 60)) == [0, 1, 2, 3, 4]
    f = frame_slices(300, 60)
    assert len(f) == 60 and f[0] == 0 and f[-1] == 299 and np.all(np.diff(f) > 0)


# ------------------------------------------------------------------ files

def _check_png(path: Path, size: tuple[int, int]) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == size
        px = np.asarray(im.convert("L"))
        assert px.std() > 5  # not a blank canvas


def test_render_all_figures_with_prediction(dataset, tmp_path):
    items = load_dataset(dataset)
    gt = items[0].readers
    pred = [dataclasses.replace(r, name=items[0].name, split=None) for r in items[1].readers]
    pred = pred + [dataclasses.replace(pred[0], subject=1)]    # 3 predictions, 2 drawn
    out = render_ct_figures(dataset / "cts" / f"{items[0].name}.nii.gz", gt, pred,
                            tmp_path / "figs", dpi=DPI, gif_side=64, gif_max_frames=20)
    assert set(out) == {"projections", "drilling", "density", "slices", "viewer"}
    assert out["viewer"].name == f"{items[0].name}_viewer.html"
    assert out["projections"].name == f"{items[0].name}_projections.png"
    _check_png(out["projections"], pixel_size(4 * PANEL_INCHES, 3 * PANEL_INCHES + TITLE_INCHES, DPI))
    _check_png(out["drilling"], pixel_size(2 * 4.0, 3.0, DPI))
    _check_png(out["density"], pixel_size(4 * 2.2, 2 * 2.2 + 0.3, DPI))
    with Image.open(out["slices"]) as gif:
        assert gif.format == "GIF" and gif.size == (128, 64)
        assert gif.n_frames == 20
        assert gif.info.get("loop") == 0
    assert not list((tmp_path / "figs").glob(".*tmp"))   # atomic writes leave no temp files


def test_render_ground_truth_only_and_subset(dataset, tmp_path):
    items = load_dataset(dataset)
    name = items[1].name
    out = render_ct_figures(dataset / "cts" / f"{name}.nii.gz", items[1].readers[:1], None,
                            tmp_path, figures=("projections", "slices"), dpi=DPI, gif_side=48,
                            window="lung", projection="max")
    assert set(out) == {"projections", "slices"}
    _check_png(out["projections"], pixel_size(PANEL_INCHES, 3 * PANEL_INCHES + TITLE_INCHES, DPI))
    with Image.open(out["slices"]) as gif:
        assert gif.size == (48, 48) and gif.n_frames == SHAPE[2]
    with pytest.raises(ValueError, match="unknown figure"):
        render_ct_figures(dataset / "cts" / f"{name}.nii.gz", items[1].readers, None, tmp_path,
                          figures=("movie",))


def test_render_prediction_only(dataset, tmp_path):
    items = load_dataset(dataset)
    pred = [dataclasses.replace(r, split=None) for r in items[0].readers]
    out = render_ct_figures(dataset / "cts" / f"{items[0].name}.nii.gz", [], pred, tmp_path,
                            dpi=DPI, gif_side=48, max_pred=1)
    _check_png(out["projections"], pixel_size(PANEL_INCHES, 3 * PANEL_INCHES + TITLE_INCHES, DPI))
    _check_png(out["drilling"], pixel_size(4.0, 3.0, DPI))
    _check_png(out["density"], pixel_size(4 * 2.2, 2.2 + 0.3, DPI))
    with Image.open(out["slices"]) as gif:
        assert gif.size == (48, 48)
    with pytest.raises(ValueError, match="nothing to draw"):
        render_ct_figures(dataset / "cts" / f"{items[0].name}.nii.gz", [], None, tmp_path)


def test_fixations_beyond_the_volume_are_drawn_clipped(dataset, tmp_path):
    items = load_dataset(dataset)
    far = sp([10.0, 500.0, 256.0], [10.0, 500.0, 256.0], [1.0, 200.0, 512.0], [0.3, 0.3, 0.3],
             name=items[0].name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # HU volume: no window fallback warning either
        out = render_ct_figures(dataset / "cts" / f"{items[0].name}.nii.gz", [far], [far],
                                tmp_path, dpi=DPI, gif_side=48)
    assert all(p.stat().st_size > 0 for p in out.values())
    assert "viewer" in out   # the viewer too draws them on the nearest slice (marked outside)


# ------------------------------------------------------------------ CLI

def ctsearcher(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "ctsearcher_jax.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.cli
def test_visualize_cli(dataset, tmp_path):
    items = load_dataset(dataset)
    name = items[0].name
    pred = [dict(r.to_record(), subject=r.subject) for r in items[0].readers]
    for rec in pred:
        rec.pop("split"), rec.pop("task"), rec.pop("report")
        rec["X"] = [min(512.0, v + 20.0) for v in rec["X"]]
    pred_path = tmp_path / "pred.json"
    pred_path.write_text(json.dumps(pred))
    out = ctsearcher("visualize", "--data", dataset, "--pred", pred_path, "--name", name,
                     "--out", tmp_path / "figs", "--dpi", DPI, "--reader", "1",
                     "--figures", "projections", "drilling", "density", "slices")
    assert out.returncode == 0, out.stderr
    for kind, suffix in [("projections", "png"), ("drilling", "png"), ("density", "png"),
                         ("slices", "gif")]:
        path = tmp_path / "figs" / f"{name}_{kind}.{suffix}"
        assert path.stat().st_size > 0 and str(path) in out.stdout
    # One GT reader + one prediction (reader 1) -> two columns.
    with Image.open(tmp_path / "figs" / f"{name}_projections.png") as im:
        assert im.size == pixel_size(2 * PANEL_INCHES, 3 * PANEL_INCHES + TITLE_INCHES, DPI)


@pytest.mark.cli
def test_visualize_cli_errors(dataset, tmp_path, cli_run):
    json_path = dataset / "data_simplified_split_matched_pt.json"
    out = cli_run("visualize", "--data", dataset, "--name", "no_such_ct", "--out", tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "'no_such_ct'" in out.stderr and str(json_path) in out.stderr
    assert "synth_0000" in out.stderr                       # says what exists

    name = load_dataset(dataset)[0].name
    out = cli_run("visualize", "--data", dataset, "--name", name, "--out", tmp_path,
                     "--window", "brain")
    assert out.returncode == 2 and "--window" in out.stderr

    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"name": "elsewhere", "subject": 1, "X": [5.0], "Y": [5.0],
                                  "Z": [1.0], "T": [0.2], "length": 1}]))
    out = cli_run("visualize", "--data", dataset, "--pred", other, "--name", name,
                     "--out", tmp_path)
    assert out.returncode == 2 and str(other) in out.stderr and repr(name) in out.stderr

    # A CT listed in the records but without a volume.
    ds = tmp_path / "novol"
    (ds / "cts").mkdir(parents=True)
    (ds / "data_simplified_split_matched_pt.json").write_text(json_path.read_text())
    out = cli_run("visualize", "--data", ds, "--name", name, "--out", tmp_path)
    assert out.returncode == 2
    assert str(ds / "cts" / f"{name}.nii.gz") in out.stderr
    assert not list(tmp_path.glob("*.png"))
