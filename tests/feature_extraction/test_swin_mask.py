"""The shifted-window mask built in the program from region ids equals MONAI's dense mask (which
`shift_mask` reproduces and test_swin_parity checks against MONAI itself)."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from feature_extraction import swin_unetr as sw


@pytest.mark.parametrize("padded,window,shift", [((14, 14, 14), (7, 7, 7), (3, 3, 3)),
                                                 ((4, 6, 14), (4, 6, 7), (0, 0, 3))])
def test_region_mask_equals_shift_mask(padded, window, shift):
    regions = sw.shift_regions(padded, window, shift)
    nw, n = regions.shape
    assert regions.dtype == np.int32 and n == int(np.prod(window))
    np.testing.assert_array_equal(np.asarray(sw.region_mask(regions)),
                                  sw.shift_mask(padded, window, shift))


def test_window_attention_takes_regions_or_the_mask():
    window, shift = (7, 7, 7), (3, 3, 3)
    cfg = sw.SwinUNETRConfig()
    attn = sw.WindowAttention(24, 3, window, True, sw._Opts.of(cfg), rngs=nnx.Rngs(0))
    regions = sw.shift_regions((14, 14, 14), window, shift)
    x = np.random.default_rng(0).normal(size=(2 * regions.shape[0], 343, 24)).astype(np.float32)
    by_mask = attn(x, sw.shift_mask((14, 14, 14), window, shift))
    by_regions = attn(x, None, regions)
    np.testing.assert_array_equal(np.asarray(by_mask), np.asarray(by_regions))
