"""3D saliency metrics on hand-checkable volumes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ctsearcher_jax.metrics import saliency as sal


def test_fixation_voxels_are_one_based_and_yxz_ordered():
    fix = np.array([[1.0, 1.0, 1.0, 0.2], [512.0, 9.0, 17.0, 0.2], [8.999, 8.0, 512.0, 0.1]])
    vox = sal.fixation_voxels(fix, grid=(64, 64, 64))
    # (iy, ix, iz) = floor((c - 1) * 64 / 512); 512 -> 63 (last voxel), 9 -> 1, 8.999 -> 0.
    assert vox.tolist() == [[0, 0, 0], [1, 63, 2], [0, 0, 63]]


def test_fixation_map_counts_and_duration_weights():
    fix = np.array([[1.0, 1.0, 1.0, 0.2], [2.0, 2.0, 2.0, 0.3], [500.0, 1.0, 1.0, 0.5]])
    counts = sal.fixation_map(fix, grid=(4, 4, 4))
    assert counts[0, 0, 0] == 2 and counts[0, 3, 0] == 1 and counts.sum() == 3
    dur = sal.fixation_map(fix, grid=(4, 4, 4), duration_weighted=True)
    assert dur[0, 0, 0] == pytest.approx(0.5)


def test_smoothing_equals_scipy_gaussian_filter_constant_mode():
    rng = np.random.default_rng(0)
    maps = (rng.random((2, 9, 11, 7)) > 0.9).astype(np.float32)
    got = sal.saliency_volumes(maps, sigma=1.5)
    for b in range(2):
        ref = ndimage.gaussian_filter(maps[b].astype(np.float64), 1.5, mode="constant", truncate=4.0)
        ref /= ref.sum()
        np.testing.assert_allclose(got[b], ref, atol=1e-6)


def test_cc_identity_and_anticorrelation():
    a = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    assert sal.cc(a, a)[0] == pytest.approx(1.0, abs=1e-6)
    assert sal.cc(a, -a)[0] == pytest.approx(-1.0, abs=1e-6)
    assert sal.cc(a, 3 * a + 2)[0] == pytest.approx(1.0, abs=1e-6)


def test_nss_uses_population_std_and_counts_repeats():
    s = np.array([0, 0, 0, 4], np.float32).reshape(1, 1, 2, 2)  # mean 1, population std sqrt(3)
    fix = np.array([0, 0, 0, 2], np.float32).reshape(1, 1, 2, 2)
    assert sal.nss(s, fix)[0] == pytest.approx(3 / np.sqrt(3), rel=1e-6)
    fix2 = np.array([1, 0, 0, 1], np.float32).reshape(1, 1, 2, 2)
    assert sal.nss(s, fix2)[0] == pytest.approx((-1 / np.sqrt(3) + 3 / np.sqrt(3)) / 2, rel=1e-6)


def test_kld_mit_convention():
    p = np.array([0.5, 0.5, 0, 0], np.float32).reshape(1, 1, 2, 2)
    q = np.array([0.25, 0.25, 0.25, 0.25], np.float32).reshape(1, 1, 2, 2)
    eps = sal.MATLAB_EPS
    expected = 2 * 0.25 * np.log(eps + 0.25 / (0.5 + eps)) + 2 * 0.25 * np.log(eps + 0.25 / eps)
    assert sal.kld(p, q)[0] == pytest.approx(expected, rel=1e-5)
    assert sal.kld(q, q)[0] == pytest.approx(0.0, abs=1e-6)


def test_auc_judd_hand_case():
    # Values 4 > 3 > 2 > 1; fixations on 4 and 2: thresholds 4 and 2.
    s = np.array([4, 3, 2, 1], np.float32).reshape(1, 1, 2, 2)
    fix = np.array([1, 0, 1, 0], np.float32).reshape(1, 1, 2, 2)
    # tp = [0, .5, 1, 1], fp = [0, 0, .5, 1] -> area = 0 + .375 + .5 = 0.875
    assert sal.auc_judd(s, fix)[0] == pytest.approx(0.875, abs=1e-6)
    perfect = np.array([1, 0, 0, 0], np.float32).reshape(1, 1, 2, 2)
    assert sal.auc_judd(s, perfect)[0] == pytest.approx(1.0, abs=1e-6)


def test_saliency_scores_identical_sets_are_perfect():
    rng = np.random.default_rng(1)
    fix = np.column_stack([rng.uniform(1, 512, (40, 3)), rng.uniform(0.1, 0.5, 40)])
    other = np.column_stack([rng.uniform(1, 512, (40, 3)), rng.uniform(0.1, 0.5, 40)])
    res = sal.saliency_scores([fix, other], [fix, fix], grid=(16, 16, 16), sigma=1.0)
    assert res["saliency_cc"][0] == pytest.approx(1.0, abs=1e-5)
    assert res["saliency_kld"][0] == pytest.approx(0.0, abs=1e-5)
    assert res["saliency_cc"][1] < 0.9 and res["saliency_kld"][1] > 0.1
    assert res["saliency_auc_judd"][0] > res["saliency_auc_judd"][1]
