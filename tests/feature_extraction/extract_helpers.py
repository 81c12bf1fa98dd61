"""Shared helpers of the extraction tests: a cheap stand-in encoder and tiny NIfTI writers."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import nibabel as nib
import numpy as np

from ctsearcher_jax.config import ExtractConfig
from feature_extraction.extract import Extractor
from feature_extraction.sliding_window import WindowEncoder

CHANNELS = 6
W_DEC = np.linspace(0.5, 2.0, CHANNELS).astype(np.float32)
W_HID = np.linspace(-1.0, 1.0, CHANNELS).astype(np.float32)


def fake_apply(params, windows):
    """Stand-in for Swin UNETR `encode`: 32^3 average pooling times a channel vector.

    windows `(B, 96, 96, 96, 1)` -> `(dec4, hidden4)`, each `(B, 3, 3, 3, C)`.
    """
    b = windows.shape[0]
    pooled = windows.reshape(b, 3, 32, 3, 32, 3, 32).mean(axis=(2, 4, 6))
    return pooled[..., None] * params["w"], jnp.sin(pooled[..., None] * params["v"]) + 1.0


def torch_fake_predictor(x):
    """The same stand-in in PyTorch, channels-first: `(B, 1, 96, 96, 96) -> (B, C, 3, 3, 3)`."""
    import torch
    import torch.nn.functional as F

    return F.avg_pool3d(x, 32) * torch.from_numpy(W_DEC).view(1, -1, 1, 1, 1)


def fake_encoder(batch_per_device: int = 2, devices=None) -> WindowEncoder:
    return WindowEncoder(fake_apply, {"w": jnp.asarray(W_DEC), "v": jnp.asarray(W_HID)}, roi=96,
                         batch_per_device=batch_per_device, devices=devices)


def fake_extractor(config: ExtractConfig | None = None) -> Extractor:
    config = config or ExtractConfig(feature_size=12, batch=2)
    return Extractor(encoder=fake_encoder(config.batch),
                     weights={"kind": "random", "seed": 0, "sha256": "0" * 64,
                              "feature_size": config.feature_size,
                              "merging_order": config.merging_order},
                     config=config)


def write_ct(path: Path, shape=(100, 97, 60), seed: int = 0, dtype=np.int16, slope=None,
             inter=None, affine=None) -> np.ndarray:
    """Write a random CT-like NIfTI; return the HU array as nibabel will read it back."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(-1000, 1200, size=shape).astype(dtype)
    img = nib.Nifti1Image(raw, np.diag([0.8, 0.8, 2.5, 1.0]) if affine is None else affine)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return np.asarray(nib.load(str(path)).dataobj).astype(np.float32)
