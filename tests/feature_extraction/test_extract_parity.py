"""End-to-end parity: `extract_directory` against the original procedure run with MONAI in PyTorch.

The "original procedure" below mirrors CTScanGaze's `swin_unet_extract_feature.py` +
`encoder/utils.py::sliding_window_encode` + `merge_features.py`: MONAI `LoadImage` (channel first)
and `ScaleIntensityRange(-175, 250, 0, 1, clip)`, symmetric `F.pad` to 96, `dense_patch_slices`
windows (overlap 0), `swinViT(x, normalize)` -> `hidden_states_out[4]` and
`encoder10(hidden_states_out[4])` = dec4 per batch of 4 windows, then the cell-average merge.
MONAI's current SwinUNETR uses the "fixed" PatchMerging order, so the weights are converted with
merging_order="fixed". Random weights (seeded), feature_size 12 and 64^3 windows (the original's
ROI is 96; `extract.roi` is the same procedure with another window, and 64^3 costs a third of
96^3 on CPU) to keep the CPU cost low. The encoder at 96^3 has its own parity tests
(test_swin_parity.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data.utils import dense_patch_slices
from monai.inferers.utils import _get_scan_interval
from monai.networks.nets import SwinUNETR as MonaiSwinUNETR
from monai.transforms import LoadImage, ScaleIntensityRange

sys.path.insert(0, str(Path(__file__).parent))
from extract_helpers import write_ct  # noqa: E402

from ctsearcher_jax.config import ExtractConfig  # noqa: E402
from ctsearcher_jax.io import file_sha256  # noqa: E402
from feature_extraction import extract as ex  # noqa: E402
from feature_extraction.convert_monai import convert_state_dict  # noqa: E402
from feature_extraction.directory import extract_directory  # noqa: E402
from feature_extraction.weights import save_weights  # noqa: E402

torch.set_num_threads(1)
ROI = (64, 64, 64)


def original_extract(net, path):
    """The original extraction + merge for one file -> (dec4, hidden4), each (C, gi, gj, gk)."""
    img = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    img = ScaleIntensityRange(a_min=-175, a_max=250, b_min=0.0, b_max=1.0, clip=True)(img)
    inputs = torch.as_tensor(np.asarray(img))[None]  # (1, 1, I, J, K)
    spatial = inputs.shape[2:]
    image_size = tuple(max(s, r) for s, r in zip(spatial, ROI))
    pad = []
    for k in range(4, 1, -1):  # F.pad lists the last axis first
        diff = max(ROI[k - 2] - inputs.shape[k], 0)
        pad += [diff // 2, diff - diff // 2]
    inputs = F.pad(inputs, pad=pad, mode="constant", value=0.0)
    slices = dense_patch_slices(image_size, ROI, _get_scan_interval(image_size, ROI, 3, (0.0,) * 3))
    saved = []
    with torch.no_grad():
        for b0 in range(0, len(slices), 4):
            batch = slices[b0:b0 + 4]
            win = torch.cat([inputs[(slice(0, 1), slice(None), *s)] for s in batch])
            hidden = net.swinViT(win, net.normalize)
            saved.append((hidden[4], net.encoder10(hidden[4]), batch))
    dims = [s // 32 for s in image_size]
    channels = saved[0][0].shape[1]
    dec4, hid4 = torch.zeros((channels, *dims)), torch.zeros((channels, *dims))
    count = torch.zeros([1, 1, *dims])
    for h, d, batch in saved:
        for hp, dp, s in zip(h, d, batch):
            cells = tuple(slice(x.start // 32, x.stop // 32) for x in s)
            hid4[(slice(None), *cells)] += hp
            dec4[(slice(None), *cells)] += dp
            count[(slice(None), slice(None), *cells)] += 1
    count[count == 0] = 1
    return (dec4 / count[0]).numpy(), (hid4 / count[0]).numpy()


@pytest.mark.slow
@pytest.mark.torch
def test_extraction_matches_original_procedure_with_monai(tmp_path):
    torch.manual_seed(0)
    net = MonaiSwinUNETR(in_channels=1, out_channels=14, feature_size=12).eval()
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    config, parts, params = convert_state_dict(state, merging_order="fixed", parts="encoder")
    weights = tmp_path / "random12.safetensors"
    save_weights(weights, config, parts, params)

    cts = tmp_path / "cts"
    # 98 x 68 x 46: clamped last windows on i (0, 34) and j (0, 4), k padded 9 + 9 to 64;
    # the windows overlap. 40 x 64 x 65: padding 12 + 12, two windows on k (0, 1).
    write_ct(cts / "vol.a.nii.gz", (98, 68, 46), seed=1, slope=1.0, inter=-1024.0)
    write_ct(cts / "small.nii", (40, 64, 65), seed=2)

    # 4 windows: 3 + 1 padded batch
    cfg = ExtractConfig(feature_size=12, merging_order="fixed", batch=3, roi=ROI[0])
    summary = extract_directory(cts, tmp_path / "out", weights, cfg, progress=False)
    assert summary.ok and summary.processed == ["small", "vol.a"] and summary.windows == 6

    for name, file in [("vol.a", "vol.a.nii.gz"), ("small", "small.nii")]:
        ref_dec4, ref_hidden = original_extract(net, cts / file)
        dec4 = np.load(tmp_path / "out" / f"{name}.npy")
        hidden = np.load(tmp_path / "out" / f"{name}_hidden_states_out_4.npy")
        for got, ref in [(dec4, ref_dec4), (hidden, ref_hidden)]:
            assert got.shape == ref.shape
            assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    assert np.load(tmp_path / "out" / "vol.a.npy").shape == (192, 3, 2, 2)

    # One compiled encoder program served both volume sizes (and the warm-up).
    extractor = ex.get_extractor(weights, cfg)
    assert extractor.encoder.encode_compilations() == 1
    entry = ex.mf.read_manifest(tmp_path / "out")["vol.a"]
    assert entry["weights"] == {"kind": "file", "path": str(weights.resolve()),
                                "sha256": file_sha256(weights), "feature_size": 12,
                                "merging_order": "fixed"}
