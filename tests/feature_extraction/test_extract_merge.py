"""Window cutting, batching and merging against MONAI's `sliding_window_inference` and the
original `merge_features.py` procedure (written out here in torch), with a cheap stand-in encoder."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

sys.path.insert(0, str(Path(__file__).parent))
from extract_helpers import fake_encoder, torch_fake_predictor

from feature_extraction.merge import cell_weights, importance_map, merge_windows
from feature_extraction.sliding_window import pad_volume, plan_windows

torch.set_num_threads(1)


def ours(volume, overlap, mode, batch=2):
    plan = plan_windows(volume.shape, 96, overlap)
    enc = fake_encoder(batch)
    dec4, _ = enc.encode_volume(pad_volume(volume, plan), plan.starts)
    return merge_windows(dec4, plan.starts, plan.padded_shape, mode), plan


def monai(volume, overlap, mode, batch=3):
    x = torch.from_numpy(volume)[None, None]
    with torch.no_grad():
        out = sliding_window_inference(x, (96, 96, 96), batch, torch_fake_predictor,
                                       overlap=overlap, mode=mode)
    return out[0].numpy()


@pytest.mark.parametrize("mode", ["constant", "gaussian"])
@pytest.mark.parametrize("shape,overlap", [((130, 100, 160), 0.0), ((130, 100, 160), 0.25),
                                           ((200, 96, 131), 0.5), ((161, 97, 96), 0.7)])
def test_blending_equals_monai_sliding_window_inference(shape, overlap, mode):
    """No padding needed here, so MONAI's final crop is a no-op and the grids must agree."""
    volume = np.random.default_rng(1).random(shape, dtype=np.float32)
    merged, plan = ours(volume, overlap, mode)
    expected = monai(volume, overlap, mode)
    assert merged.shape == expected.shape == (6, *plan.grid_shape)
    np.testing.assert_allclose(merged, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["constant", "gaussian"])
def test_padded_volume_equals_monai_before_its_crop(mode):
    """MONAI crops the padding away at the end; we keep the original's full padded grid."""
    shape = (130, 100, 70)
    volume = np.random.default_rng(2).random(shape, dtype=np.float32)
    merged, plan = ours(volume, 0.25, mode)
    expected = monai(volume, 0.25, mode)
    crop = []
    for (before, _), size in zip(plan.pad, shape):  # MONAI's final_slicing at zoom 3/96
        crop.append(slice(int(round(before * 3 / 96)), int(round((before + size) * 3 / 96))))
    np.testing.assert_allclose(merged[(slice(None), *crop)], expected, rtol=1e-5, atol=1e-6)


def original_merge(cells_cf, starts, padded_shape):
    """merge_features.py written out: torch zeros, `+=` at start // 32, count map, divide."""
    c = cells_cf.shape[1]
    dims = [s // 32 for s in padded_shape]
    dec4 = torch.zeros((c, *dims))
    count = torch.zeros([1, 1, *dims])
    for patch, st in zip(torch.from_numpy(cells_cf), starts):
        sl = tuple(slice(s // 32, (s + 96) // 32) for s in st)
        dec4[(slice(None), *sl)] += patch
        count[(slice(0, 1), slice(None), *sl)] += 1
    count[count == 0] = 1
    dec4 /= count[0]
    return dec4.numpy()


@pytest.mark.parametrize("shape,overlap", [((130, 100, 70), 0.0), ((260, 190, 100), 0.3),
                                           ((96, 300, 97), 0.6)])
def test_original_merge_equals_merge_features_loop(shape, overlap):
    plan = plan_windows(shape, 96, overlap)
    cells = np.random.default_rng(3).standard_normal((plan.num_windows, 3, 3, 3, 5)).astype(np.float32)
    merged = merge_windows(cells, plan.starts, plan.padded_shape, "original")
    expected = original_merge(cells.transpose(0, 4, 1, 2, 3), plan.starts, plan.padded_shape)
    np.testing.assert_array_equal(merged, expected)  # same additions in the same order


def test_original_equals_constant_and_cells_land_at_start_floor_32():
    plan = plan_windows((130, 100, 70), 96, 0.0)
    np.testing.assert_array_equal(plan.starts[:, 0], [0, 0, 34, 34])  # clamped last window
    cells = np.zeros((plan.num_windows, 3, 3, 3, 1), np.float32)
    cells[3] = 1.0  # window at (34, 4, 0) -> cells from (34 // 32, 4 // 32, 0) = (1, 0, 0)
    merged = merge_windows(cells, plan.starts, plan.padded_shape, "original")[0]
    assert merged.shape == (4, 3, 3)
    # j starts 0 and 4 both land on cell 0: i-cell 3 is covered by windows 2 and 3, i-cells 1-2
    # by all four, i-cell 0 by windows 0 and 1 only.
    np.testing.assert_array_equal(merged[3], 0.5)
    np.testing.assert_array_equal(merged[1:3], 0.25)
    np.testing.assert_array_equal(merged[0], 0.0)
    np.testing.assert_array_equal(
        merged, merge_windows(cells, plan.starts, plan.padded_shape, "constant")[0])


def test_gaussian_cell_weights_sample_monai_importance_map():
    from monai.data.utils import compute_importance_map

    expected = compute_importance_map((96, 96, 96), mode="gaussian", sigma_scale=0.125).numpy()
    np.testing.assert_allclose(importance_map(96, "gaussian"), expected, rtol=1e-6, atol=0)
    w = cell_weights(96, "gaussian")
    np.testing.assert_allclose(w, expected[np.ix_([16, 48, 80], [16, 48, 80], [16, 48, 80])], rtol=1e-6)
    assert w[1, 1, 1] == pytest.approx(expected.max(), rel=1e-6) and w.min() == pytest.approx(1e-3)


def test_encoder_compiles_once_across_volume_sizes():
    enc = fake_encoder(batch_per_device=3)
    for shape in [(96, 96, 96), (130, 100, 70), (200, 97, 150), (40, 50, 60)]:
        vol = np.random.default_rng(0).random(shape, dtype=np.float32)
        plan = plan_windows(shape, 96, 0.25)
        dec4, hid = enc.encode_volume(pad_volume(vol, plan), plan.starts)
        assert dec4.shape == hid.shape == (plan.num_windows, 3, 3, 3, 6)
    assert enc.encode_compilations() == 1
