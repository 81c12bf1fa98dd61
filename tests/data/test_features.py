"""Feature grids: legacy-nearest resize equals torch's F.interpolate(mode="nearest"); token order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ctsearcher_jax.data.features import grid_to_tokens, load_feature_grid, load_tokens, resize_nearest_legacy
from ctsearcher_jax.errors import DataError

torch.set_num_threads(1)


@pytest.mark.parametrize("shape", [(16, 16, 4), (16, 16, 8), (7, 7, 10), (3, 3, 3), (5, 9, 12),
                                   (4, 8, 16), (13, 11, 29)])
@pytest.mark.parametrize("out", [(8, 8, 8), (4, 4, 4), (6, 5, 7), (16, 16, 16), (3, 12, 9)])
def test_resize_equals_torch_nearest(shape, out):
    rng = np.random.default_rng(0)
    grid = rng.standard_normal((3, *shape)).astype(np.float32)
    ours = resize_nearest_legacy(grid, out)
    ref = F.interpolate(torch.from_numpy(grid)[None], size=out, mode="nearest")[0].numpy()
    assert ours.shape == (3, *out)
    np.testing.assert_array_equal(ours, ref)


def test_tokens_order_matches_rearrange():
    # token = iy*Gx*Gz + ix*Gz + iz, as einops 'b d h w c -> b (h w c) d'.
    grid = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    tokens = grid_to_tokens(grid)
    assert tokens.shape == (60, 2)
    iy, ix, iz = 2, 1, 3
    np.testing.assert_array_equal(tokens[iy * 4 * 5 + ix * 5 + iz], grid[:, iy, ix, iz])
    ref = torch.from_numpy(grid)[None].flatten(2).transpose(1, 2)[0].numpy()
    np.testing.assert_array_equal(tokens, ref)


def test_load_tokens_reference_dataset_image(tmp_path):
    # The reference dataset image: torch.randn(768,5,9,12) resized to 8^3 (ctsearcher_small README).
    raw = torch.randn(768, 5, 9, 12, generator=torch.Generator().manual_seed(1237)).numpy()
    np.save(tmp_path / "synthct.npy", raw)
    tokens = load_tokens(tmp_path, "synthct", (8, 8, 8))
    ref = F.interpolate(torch.from_numpy(raw)[None], size=(8, 8, 8))
    ref = ref.flatten(2).transpose(1, 2)[0].numpy()
    assert tokens.dtype == np.float32 and tokens.shape == (512, 768)
    np.testing.assert_array_equal(tokens, ref)


def test_bad_files_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_feature_grid(tmp_path / "missing.npy")
    np.save(tmp_path / "flat.npy", np.zeros((4, 4), np.float32))
    with pytest.raises(DataError, match="shape"):
        load_feature_grid(tmp_path / "flat.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a plain"):
        load_feature_grid(tmp_path / "obj.npy")
    bad = np.zeros((2, 2, 2, 2), np.float32)
    bad[0, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match="NaN"):
        load_feature_grid(tmp_path / "nan.npy")


def test_feature_files_are_parsed_one_thread_at_a_time(tmp_path, monkeypatch):
    """numpy parses .npy headers with ast.literal_eval, which CPython 3.11 cannot run in two
    threads at once (a rare SystemError in the data pipeline's read threads, seen in a suite
    run): the loads from the pipeline's threads must take turns."""
    import ast
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    for i in range(4):
        np.save(tmp_path / f"ct{i}.npy", np.zeros((2, 1, 1, 1), np.float32), allow_pickle=False)
    inside, overlaps, lock = [0], [0], threading.Lock()
    literal_eval = ast.literal_eval

    def slow_literal_eval(text):
        with lock:
            inside[0] += 1
            overlaps[0] += inside[0] > 1
        time.sleep(0.01)  # widen the window: without the loader's lock the threads overlap here
        try:
            return literal_eval(text)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(ast, "literal_eval", slow_literal_eval)
    with ThreadPoolExecutor(4) as pool:
        grids = list(pool.map(lambda i: load_feature_grid(tmp_path / f"ct{i % 4}.npy"), range(16)))
    assert len(grids) == 16 and overlaps[0] == 0
