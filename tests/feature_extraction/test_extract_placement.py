"""Window placement and padding equal MONAI's `dense_patch_slices` / `sliding_window_inference`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from monai.data.utils import dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from feature_extraction.sliding_window import (
    axis_starts,
    pad_amounts,
    pad_volume,
    plan_windows,
    process_share,
    scan_interval,
)

OVERLAPS = [0.0, 0.1, 0.25, 0.3, 0.5, 0.6, 0.7, 0.75, 0.9]


def monai_starts(shape, roi, overlap):
    """Window corners as MONAI's sliding_window_inference computes them (after its padding)."""
    image_size = tuple(max(s, roi) for s in shape)
    rois = (roi,) * len(shape)
    interval = _get_scan_interval(image_size, rois, len(shape), (overlap,) * len(shape))
    slices = dense_patch_slices(image_size, rois, interval)
    return np.array([[s.start for s in sl] for sl in slices], dtype=np.int64), image_size


@pytest.mark.parametrize("overlap", OVERLAPS)
@pytest.mark.parametrize("shape", [(96, 96, 96), (130, 100, 70), (512, 512, 128), (40, 97, 191),
                                   (1, 200, 95), (300, 96, 33), (193, 289, 385)])
def test_placement_matches_monai(shape, overlap):
    plan = plan_windows(shape, 96, overlap)
    expected, image_size = monai_starts(shape, 96, overlap)
    assert plan.padded_shape == image_size
    np.testing.assert_array_equal(plan.starts, expected)


@settings(max_examples=150, deadline=None)
@given(shape=st.tuples(*[st.integers(1, 400)] * 3), roi=st.sampled_from([32, 64, 96, 128]),
       overlap=st.floats(0.0, 0.999))
def test_placement_matches_monai_random(shape, roi, overlap):
    padded = [max(s, roi) for s in shape]
    counts = [len(axis_starts(s, roi, i)) for s, i in zip(padded, scan_interval(padded, [roi] * 3, overlap))]
    assume(np.prod(counts) <= 4000)  # extreme overlaps make millions of windows (slow in MONAI too)
    plan = plan_windows(shape, roi, overlap)
    expected, image_size = monai_starts(shape, roi, overlap)
    assert plan.padded_shape == image_size
    np.testing.assert_array_equal(plan.starts, expected)


def test_extreme_overlap_gives_stride_one_like_monai():
    plan = plan_windows((100, 97, 96), 96, 0.995)  # int(96 * 0.005) = 0 -> stride 1
    expected, _ = monai_starts((100, 97, 96), 96, 0.995)
    np.testing.assert_array_equal(plan.starts, expected)
    assert plan.num_windows == 5 * 2 * 1


@pytest.mark.parametrize("shape", [(95, 96, 70), (130, 1, 71), (100, 100, 100)])
def test_padding_matches_torch_pad(shape):
    """Symmetric zero padding; an odd difference puts the extra voxel at the end (MONAI's pad list)."""
    volume = np.random.default_rng(0).random(shape, dtype=np.float32) + 1
    plan = plan_windows(shape, 96, 0.0)
    pad_list = []
    for k in range(len(shape) - 1, -1, -1):  # MONAI builds F.pad's list from the last axis
        diff = max(96 - shape[k], 0)
        pad_list.extend([diff // 2, diff - diff // 2])
    expected = F.pad(torch.from_numpy(volume)[None, None], pad=pad_list, mode="constant", value=0.0)
    np.testing.assert_array_equal(pad_volume(volume, plan), expected[0, 0].numpy())
    assert pad_amounts((95, 96, 70), (96,) * 3) == ((0, 1), (0, 0), (13, 13))


def test_grid_shape_is_floor_of_padded_over_32():
    plan = plan_windows((130, 100, 70), 96, 0.0)
    assert plan.padded_shape == (130, 100, 96)
    assert plan.grid_shape == (4, 3, 3)
    assert plan.num_windows == 2 * 2 * 1


def test_process_share_round_robin_covers_everything_once():
    items = [f"ct{i}" for i in range(11)]
    shares = [process_share(items, p, 4) for p in range(4)]
    assert sorted(sum(shares, [])) == sorted(items)
    assert shares[1] == ["ct1", "ct5", "ct9"]


def test_overlap_out_of_range_is_refused():
    with pytest.raises(ValueError, match="overlap"):
        plan_windows((100, 100, 100), 96, 1.0)
