"""Swin UNETR parity: our NNX port against MONAI (PyTorch) with random, perturbed weights.

Whole models (MONAI >= 1.5 = "fixed" PatchMerging order), within 1e-4 relative (max abs error /
max abs value): hidden_states_out[0..4], dec4 and logits for feature_size 12 at 96^3 (the
extraction window, batch 1) and feature_size 24 at 32x64x128 (batch 2: windows of two volumes
must not mix; not a cube: the partial window-shrink case). use_v2 SwinViT at 64^3. Submodules within 1e-5.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need the test extra (torch, monai)")
monai_swin = pytest.importorskip("monai.networks.nets.swin_unetr")

from flax import nnx  # noqa: E402

from feature_extraction import swin_unetr as ours_mod  # noqa: E402
from feature_extraction.convert_monai import to_flax_layout, torch_key  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # tests/ has no packages: import the helper by path
from swin_helpers import monai_model, ours_from_monai, perturb, rel_err, run  # noqa: E402

pytestmark = pytest.mark.torch
torch.set_num_threads(1)


def monai_outputs(m, x: torch.Tensor):
    """(hidden_states, dec4, logits) of one MONAI forward, captured with hooks."""
    got = {}
    h1 = m.swinViT.register_forward_hook(lambda mod, i, o: got.__setitem__("hs", o))
    h2 = m.encoder10.register_forward_hook(lambda mod, i, o: got.__setitem__("dec4", o))
    try:
        with torch.no_grad():
            logits = m(x)
    finally:
        h1.remove()
        h2.remove()
    return [h.numpy() for h in got["hs"]], got["dec4"].numpy(), logits.numpy()


@pytest.fixture(scope="module")
def pair12():
    m = monai_model(12, seed=0)
    return m, ours_from_monai(m)


@pytest.fixture(scope="module")
def pair24():
    m = monai_model(24, seed=1)
    return m, ours_from_monai(m)


def _check_all(pair, shape, seed, batch):
    m, ours = pair
    x = torch.rand(batch, 1, *shape, generator=torch.Generator().manual_seed(seed))
    ref_hs, ref_dec4, ref_logits = monai_outputs(m, x)
    hs, dec4, logits = run(ours, x.numpy(), "all")
    for i in range(5):
        assert hs[i].shape == ref_hs[i].shape
        assert rel_err(hs[i], ref_hs[i]) < 1e-4, f"hidden_states_out[{i}]"
    assert rel_err(dec4, ref_dec4) < 1e-4
    assert logits.shape == ref_logits.shape
    assert rel_err(logits, ref_logits) < 1e-4


def test_feature12_96cube(pair12):
    _check_all(pair12, (96, 96, 96), seed=2, batch=1)


def test_feature24_32x64x128(pair24):
    # Another feature size on a volume that is not a cube. Stage 4 is 2x4x8: the window shrinks
    # on two axes only and the shift stays on the third.
    _check_all(pair24, (32, 64, 128), seed=3, batch=2)


def test_use_v2_hidden_states():
    m = monai_model(12, seed=5, use_v2=True)
    ours = ours_from_monai(m, parts="swinvit")
    x = torch.rand(1, 1, 64, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ref = [h.numpy() for h in m.swinViT(x, True)]
    got = run(ours, x.numpy(), "hidden")
    for i in range(5):
        assert rel_err(got[i], ref[i]) < 1e-4, f"hidden_states_out[{i}]"


# ---------------------------------------------------------------------------------------------
# Submodules, 1e-5.

def load_sub(ours, tmod) -> None:
    """Copy a torch submodule's parameters into ours through the converter's key/layout rules."""
    sd = {k: v.detach().numpy() for k, v in tmod.state_dict().items()}
    flat = nnx.to_flat_state(nnx.state(ours, nnx.Param))
    for path, var in flat:
        name = ".".join(map(str, path))
        var.set_value(np.asarray(to_flax_layout(name, sd[torch_key(name)])))
    nnx.update(ours, nnx.from_flat_state(flat))


def cl(t: torch.Tensor) -> np.ndarray:
    """torch NCDHW -> numpy NDHWC."""
    return np.moveaxis(t.detach().numpy(), 1, -1)


OPTS = ours_mod._Opts.of(ours_mod.SwinUNETRConfig())
CFG = ours_mod.SwinUNETRConfig()


@pytest.mark.parametrize("size,shift", [((14, 14, 14), (3, 3, 3)), ((4, 6, 14), (0, 0, 3)),
                                        ((14, 14, 14), (0, 0, 0))])
def test_window_attention(size, shift):
    torch.manual_seed(10)
    window, shift = ours_mod.window_and_shift(size, (7, 7, 7), shift)
    window = tuple(min(w, s) for w, s in zip(window, size))
    tm = monai_swin.WindowAttention(24, 3, (7, 7, 7), qkv_bias=True).eval()
    perturb(tm)
    with torch.no_grad():
        tm.relative_position_bias_table.normal_()
    om = ours_mod.WindowAttention(24, 3, (7, 7, 7), True, OPTS, rngs=nnx.Rngs(0))
    load_sub(om, tm)
    nw = int(np.prod([s // w for s, w in zip(size, window)]))
    n = int(np.prod(window))
    x = torch.randn(2 * nw, n, 24)
    use_mask = any(s > 0 for s in shift)
    mask = monai_swin.compute_mask(list(size), window, shift, None) if use_mask else None
    with torch.no_grad():
        ref = tm(x, mask).numpy()
    our_mask = ours_mod.shift_mask(size, window, shift) if use_mask else None
    if use_mask:
        np.testing.assert_array_equal(our_mask, mask.numpy())
    got = np.asarray(om(x.numpy(), our_mask))
    assert rel_err(got, ref) < 1e-5


@pytest.mark.parametrize("size,shifted,attention_batch", [
    ((8, 12, 14), True, 1), ((8, 12, 14), True, 0), ((4, 6, 8), True, 1), ((8, 8, 8), False, 1)])
def test_swin_block(size, shifted, attention_batch):
    torch.manual_seed(11)
    shift = (3, 3, 3) if shifted else (0, 0, 0)
    tm = monai_swin.SwinTransformerBlock(24, 3, (7, 7, 7), shift).eval()
    perturb(tm)
    cfg = ours_mod.SwinUNETRConfig(attention_batch=attention_batch)
    om = ours_mod.SwinBlock(24, 3, (7, 7, 7), shifted, cfg, OPTS, rngs=nnx.Rngs(0))
    load_sub(om, tm)
    window, wshift = monai_swin.get_window_size(size, (7, 7, 7), shift)
    padded = [int(np.ceil(s / w)) * w for s, w in zip(size, window)]
    mask = monai_swin.compute_mask(padded, window, wshift, None)
    x = torch.randn(2, *size, 24)
    with torch.no_grad():
        ref = tm(x, mask).numpy()
    got = np.asarray(om(x.numpy()))
    assert rel_err(got, ref) < 1e-5


@pytest.mark.parametrize("order,cls", [("fixed", "PatchMerging"), ("v2", "PatchMergingV2")])
def test_patch_merging(order, cls):
    torch.manual_seed(12)
    tm = getattr(monai_swin, cls)(12).eval()
    perturb(tm)
    om = ours_mod.PatchMerging(12, ours_mod.MERGING_OFFSETS[order], OPTS, rngs=nnx.Rngs(0))
    load_sub(om, tm)
    x = torch.randn(2, 4, 6, 8, 12)
    with torch.no_grad():
        ref = tm(x).numpy()
    assert rel_err(np.asarray(om(x.numpy())), ref) < 1e-5


def test_legacy_merging_order_differs_from_fixed():
    # The legacy order repeats two slices: a model built with it must not equal the fixed one.
    x = np.random.default_rng(0).standard_normal((1, 4, 4, 4, 12)).astype(np.float32)
    a = ours_mod.PatchMerging(12, ours_mod.MERGING_OFFSETS["legacy"], OPTS, rngs=nnx.Rngs(0))
    b = ours_mod.PatchMerging(12, ours_mod.MERGING_OFFSETS["fixed"], OPTS, rngs=nnx.Rngs(0))
    assert not np.allclose(np.asarray(a(x)), np.asarray(b(x)), atol=1e-3)


@pytest.mark.parametrize("cin,cout", [(24, 12), (12, 12)])
def test_unet_res_block(cin, cout):
    from monai.networks.blocks import UnetResBlock

    torch.manual_seed(13)
    tm = UnetResBlock(3, cin, cout, kernel_size=3, stride=1, norm_name="instance").eval()
    om = ours_mod.UnetResBlock(cin, cout, OPTS, rngs=nnx.Rngs(0))
    load_sub(om, tm)
    x = torch.randn(2, cin, 6, 8, 10)
    with torch.no_grad():
        ref = tm(x)
    assert rel_err(np.asarray(om(cl(x))), cl(ref)) < 1e-5


def test_up_block():
    from monai.networks.blocks import UnetrUpBlock

    torch.manual_seed(14)
    tm = UnetrUpBlock(3, 24, 12, kernel_size=3, upsample_kernel_size=2, norm_name="instance",
                      res_block=True).eval()
    om = ours_mod.UpBlock(24, 12, OPTS, rngs=nnx.Rngs(0))
    load_sub(om, tm)
    x, skip = torch.randn(2, 24, 3, 4, 5), torch.randn(2, 12, 6, 8, 10)
    with torch.no_grad():
        ref = tm(x, skip)
    assert rel_err(np.asarray(om(cl(x), cl(skip))), cl(ref)) < 1e-5


def test_relative_position_index_matches_monai():
    tm = monai_swin.WindowAttention(12, 3, (7, 7, 7), qkv_bias=True)
    np.testing.assert_array_equal(ours_mod.relative_position_index((7, 7, 7)),
                                  tm.relative_position_index.numpy())
