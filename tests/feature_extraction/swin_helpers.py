"""Shared set-up for the Swin UNETR tests: a MONAI model with random weights and our copy of it."""

from __future__ import annotations

import functools

import jax
import numpy as np
from flax import nnx

from feature_extraction.convert_monai import convert_state_dict
from feature_extraction.swin_unetr import SwinUNETR, SwinUNETRConfig
from feature_extraction.weights import set_params


def monai_model(feature_size: int, out_channels: int = 3, seed: int = 0, use_v2: bool = False):
    """MONAI SwinUNETR (current, "fixed" merging order) in eval mode with every bias and norm
    parameter perturbed, so a port that ignores one of them fails."""
    import torch
    from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

    torch.manual_seed(seed)
    m = MonaiSwinUNETR(in_channels=1, out_channels=out_channels, feature_size=feature_size,
                       use_v2=use_v2)
    perturb(m)
    return m.eval()


def perturb(module) -> None:
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))


def state_dict_numpy(module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def ours_from_monai(m, merging_order: str = "fixed", parts: str | None = None,
                    dtype: str = "float32") -> SwinUNETR:
    config, parts, params = convert_state_dict(state_dict_numpy(m), merging_order, parts)
    import dataclasses
    config = dataclasses.replace(config, dtype=dtype)
    model = nnx.eval_shape(lambda: SwinUNETR(config, rngs=nnx.Rngs(0), parts=parts))
    set_params(model, params)
    return model


@functools.lru_cache(maxsize=None)
def _jitted(graphdef, what: str):
    def f(state, x):
        model = nnx.merge(graphdef, state)
        if what == "all":
            return model.encode_and_segment(x)
        if what == "encode":
            return model.encode(x)
        return model.hidden_states(x)
    return jax.jit(f)


def run(model: SwinUNETR, x_ncdhw: np.ndarray, what: str = "all"):
    """Jitted forward of `model` on a torch-layout input; outputs moved back to torch layout."""
    graphdef, state = nnx.split(model)
    x = np.transpose(x_ncdhw, (0, 2, 3, 4, 1))
    out = _jitted(graphdef, what)(state, x)
    return jax.tree.map(lambda a: np.transpose(np.asarray(a, np.float32), (0, 4, 1, 2, 3)), out)


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref| (the "relative" tolerance of the issue)."""
    ref = np.asarray(ref, np.float64)
    return float(np.max(np.abs(np.asarray(ours, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30))


__all__ = ["SwinUNETRConfig", "monai_model", "ours_from_monai", "perturb", "rel_err", "run",
           "state_dict_numpy"]
