"""Convert a MONAI SwinUNETR checkpoint (PyTorch) into our portable weights file.

Accepted inputs (read with `torch.load(weights_only=True)`: no pickled code ever runs):
- a plain state dict, or one nested under `state_dict` or `model` (MONAI bundles, Lightning);
- keys with any number of `module.` prefixes (DataParallel / DDP);
- self-supervised SwinViT checkpoints (Tang et al. 2022, the `model_swinvit.pt` that MONAI's
  `SwinUNETR.load_from` reads): keys `module.patch_embed.*`, `module.layers1.0.blocks.0.mlp.fc1.*`,
  ... are the SwinViT alone; they become `swinViT.*` (and `fc1`/`fc2` become `linear1`/`linear2`),
  and the result is a `parts="swinvit"` file (no encoder10, so `encode` cannot give dec4 from it;
  `hidden_states` works). `swin_vit.` is read as `swinViT.` too.

Which parts a file holds is read from its keys: decoder/out keys -> "full"; otherwise `encoder10`
keys -> "encoder" (SwinViT + encoder10, what extraction needs); otherwise "swinvit". Asking for
fewer parts (`parts="encoder"` of a full checkpoint) drops the rest on purpose.

Checks: every key is mapped (unknown keys are refused with their list unless a prefix in `ignore`
covers them); every parameter of the NNX model is present (missing keys are refused with their
list); every shape equals the NNX shape after the layout change; each stored
`relative_position_index` equals the one recomputed from the window size.

The architecture (feature size, channels, depths, heads, window, use_v2) is read from the shapes.
The PatchMerging order cannot be seen in the weights: pass `merging_order` ("legacy" for the BTCV
bundle and everything trained with MONAI < 1.5; "fixed" for MONAI >= 1.5).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ctsearcher_jax.errors import WeightsError
from ctsearcher_jax.io import file_sha256
from ctsearcher_jax.tensors import check_weight_tensors
from ctsearcher_jax.torch_files import load_weights_only
from feature_extraction.swin_unetr import PARTS, SwinUNETRConfig, relative_position_index
from feature_extraction.weights import load_weights, model_param_shapes, save_weights

_SHOW = 12  # keys listed in an error message


def _list(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def read_torch_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch checkpoint as float32/int64 NumPy arrays, unwrapped and unprefixed."""
    return flatten_checkpoint(load_weights_only(path), path)


def flatten_checkpoint(obj: Any, path: str | Path = "<checkpoint>") -> dict[str, np.ndarray]:
    """Unwrap `state_dict`/`model` nesting and `module.` prefixes; tensors -> NumPy."""
    import torch  # noqa: PLC0415 (optional dependency: the [torch] extra)

    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in ("state_dict", "model") if k in obj), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue  # e.g. epoch counters saved next to the tensors
        name = str(key)
        while name.startswith("module."):
            name = name[len("module."):]
        if name in out:
            raise WeightsError(f"{path}: key {key!r} duplicates another after removing 'module.'")
        t = value.detach().cpu()
        t = t.float() if t.is_floating_point() else t.long()
        out[name] = t.numpy().copy()
    if not out:
        raise WeightsError(f"{path}: no tensors found; not a model checkpoint")
    return out


def normalise_keys(sd: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], bool]:
    """Map alternative spellings to MONAI's current keys. Returns (dict, was_bare_swinvit)."""
    bare = any(k.startswith(("patch_embed.", "layers1.")) for k in sd)
    out = {}
    for k, v in sd.items():
        if k.startswith("swin_vit."):
            k = "swinViT." + k[len("swin_vit."):]
        if bare and k.startswith(("patch_embed.", "layers")):
            k = "swinViT." + k
        k = re.sub(r"\.mlp\.fc([12])\.", r".mlp.linear\1.", k)
        out[k] = v
    return out, bare


def torch_key(nnx_path: str) -> str:
    """MONAI state-dict key of a dotted NNX parameter path."""
    k = nnx_path
    k = re.sub(r"^swinViT\.layers\.(\d+)\.", lambda m: f"swinViT.layers{int(m[1]) + 1}.0.", k)
    k = re.sub(r"^swinViT\.layers_c\.(\d+)\.", lambda m: f"swinViT.layers{int(m[1]) + 1}c.0.layer.", k)
    k = re.sub(r"^swinViT\.patch_embed\.", "swinViT.patch_embed.proj.", k)
    k = re.sub(r"^(encoder\d+)\.", r"\1.layer.", k)
    k = re.sub(r"(conv[123]|transp_conv)\.kernel$", r"\1.conv.kernel", k)
    k = re.sub(r"^out\.", "out.conv.conv.", k)
    return re.sub(r"\.(kernel|scale)$", ".weight", k)


def to_flax_layout(nnx_path: str, value: np.ndarray) -> np.ndarray:
    """Torch layout -> Flax layout for the parameter at `nnx_path`."""
    if "transp_conv" in nnx_path:       # (in, out, kd, kh, kw) -> (kd, kh, kw, in, out)
        return value.transpose(2, 3, 4, 0, 1)
    if value.ndim == 5:                 # (out, in, kd, kh, kw) -> (kd, kh, kw, in, out)
        return value.transpose(2, 3, 4, 1, 0)
    if nnx_path.endswith(".kernel") and value.ndim == 2:  # Linear (out, in) -> (in, out)
        return value.T
    return value


def to_torch_layout(nnx_path: str, value: np.ndarray) -> np.ndarray:
    """Inverse of `to_flax_layout`."""
    if "transp_conv" in nnx_path:
        return value.transpose(3, 4, 0, 1, 2)
    if value.ndim == 5:
        return value.transpose(4, 3, 0, 1, 2)
    if nnx_path.endswith(".kernel") and value.ndim == 2:
        return value.T
    return value


def detect_parts(keys: Iterable[str]) -> str:
    keys = list(keys)
    if any(k.startswith(("decoder", "out.", "encoder1.", "encoder2.")) for k in keys):
        return "full"
    if any(k.startswith("encoder10.") for k in keys):
        return "encoder"
    return "swinvit"


def infer_config(sd: dict[str, np.ndarray], merging_order: str, path: str | Path) -> Any:
    """Read the architecture from tensor shapes."""
    try:
        pe = sd["swinViT.patch_embed.proj.weight"]
    except KeyError:
        raise WeightsError(f"{path}: no 'swinViT.patch_embed.proj.weight' (nor a SwinViT patch "
                           f"embedding under another known name): not a Swin UNETR checkpoint; "
                           f"keys start {_list(list(sd)[:_SHOW])}") from None
    if pe.ndim != 5:
        raise WeightsError(f"{path}: patch embedding weight has shape {pe.shape}; only 3D models are "
                           "supported")
    depths, heads = [], []
    for s in range(1, 5):
        blocks = {int(m[1]) for k in sd if (m := re.match(rf"swinViT\.layers{s}\.0\.blocks\.(\d+)\.", k))}
        depths.append(len(blocks))
        table = sd.get(f"swinViT.layers{s}.0.blocks.0.attn.relative_position_bias_table")
        if table is None:
            raise WeightsError(f"{path}: stage {s} has no relative_position_bias_table: not a "
                               "Swin UNETR checkpoint (or a 2D one)")
        heads.append(int(table.shape[1]))
    side = round(sd["swinViT.layers1.0.blocks.0.attn.relative_position_bias_table"].shape[0] ** (1 / 3))
    window = (side + 1) // 2
    out_w = sd.get("out.conv.conv.weight")
    kwargs = dict(in_channels=int(pe.shape[1]), feature_size=int(pe.shape[0]), depths=tuple(depths),
                  num_heads=tuple(heads), window_size=(window,) * 3, patch_size=int(pe.shape[2]),
                  merging_order=merging_order,
                  use_v2=any(k.startswith("swinViT.layers1c.") for k in sd),
                  qkv_bias="swinViT.layers1.0.blocks.0.attn.qkv.bias" in sd)
    if out_w is not None:
        kwargs["out_channels"] = int(out_w.shape[0])
    mlp = sd.get("swinViT.layers1.0.blocks.0.mlp.linear1.weight")
    if mlp is not None:
        kwargs["mlp_ratio"] = mlp.shape[0] / pe.shape[0]
    try:
        return SwinUNETRConfig(**kwargs)
    except ValueError as exc:
        raise WeightsError(f"{path}: tensor shapes give an unsupported architecture ({exc})") from exc


def convert_state_dict(sd: dict[str, np.ndarray], merging_order: str = "legacy",
                       parts: str | None = None, ignore: Iterable[str] = (),
                       path: str | Path = "<checkpoint>") -> tuple[Any, str, dict[str, np.ndarray]]:
    """MONAI state dict (unprefixed, NumPy) -> `(config, parts, flat NNX params)`; all checks."""
    ignore = tuple(ignore)
    sd, _ = normalise_keys(sd)
    # Ignored keys go first: they must not decide the parts (a stray `decoder99.*` would
    # otherwise make the file look "full" and every decoder key missing).
    sd = {k: v for k, v in sd.items() if not k.startswith(ignore)}
    config = infer_config(sd, merging_order, path)
    have = detect_parts(sd)
    parts = parts or have
    if parts not in PARTS:
        raise WeightsError(f"parts must be one of {PARTS}, got {parts!r}")
    if PARTS.index(parts) < PARTS.index(have):
        raise WeightsError(f"{path}: holds only the {have!r} parts, cannot make a {parts!r} file")
    shapes = model_param_shapes(config, parts)
    wanted = {torch_key(p): p for p in shapes}
    # Keys of parts the caller chose not to keep (e.g. the decoder for an encoder-only file).
    all_keys = {torch_key(p) for p in model_param_shapes(config, "full")}
    dropped = {k for k in sd if k in all_keys and k not in wanted}
    index_keys = {k for k in sd if k.endswith(".attn.relative_position_index")}
    unknown = sorted(k for k in sd if k not in wanted and k not in dropped and k not in index_keys)
    missing = sorted(k for k in wanted if k not in sd)
    if unknown or missing:
        msg = [f"{path}: does not match a Swin UNETR ({parts}, feature_size {config.feature_size})"]
        if missing:
            msg.append(f"missing {len(missing)} keys: {_list(missing)}")
        if unknown:
            msg.append(f"unknown {len(unknown)} keys: {_list(unknown)} (pass --ignore PREFIX to drop "
                       "keys you know are not part of the model)")
        raise WeightsError("; ".join(msg))
    for k in sorted(index_keys):
        stored = sd[k]
        expected = relative_position_index(config.window_size)
        if stored.shape != expected.shape or not np.array_equal(stored, expected):
            raise WeightsError(f"{path}: {k} differs from the index recomputed for window "
                               f"{config.window_size}; the checkpoint is not a standard Swin UNETR")
    # Integer or NaN/inf weights pass every key and shape check but make the encoder's output
    # NaN or constant: refuse them here, naming the key (the original dtype decides: an integer
    # tensor was converted to int64 by flatten_checkpoint).
    check_weight_tensors({k: sd[k] for k in wanted}, str(path))
    params: dict[str, np.ndarray] = {}
    for tk, nnx_path in wanted.items():
        value = to_flax_layout(nnx_path, sd[tk]).astype(np.float32)
        shape = shapes[nnx_path][0]
        if tuple(value.shape) != shape:
            raise WeightsError(f"{path}: {tk} has shape {sd[tk].shape}, the model needs "
                               f"{to_torch_layout(nnx_path, np.zeros(shape, np.float32)).shape} "
                               f"(torch layout) for feature_size {config.feature_size}")
        params[nnx_path] = np.ascontiguousarray(value)
    return config, parts, params


def convert_file(src: str | Path, out: str | Path, merging_order: str = "legacy",
                 parts: str | None = None, ignore: Iterable[str] = ()) -> dict[str, Any]:
    """Convert `src` (a MONAI .pt/.pth) into the weights file `out`; return a summary."""
    sd = read_torch_checkpoint(src)
    config, parts, params = convert_state_dict(sd, merging_order, parts, ignore, src)
    digest = save_weights(out, config, parts, params,
                          {"source": Path(src).name, "source_sha256": file_sha256(src)})
    # Read back and compare bit for bit: what is on disk is what was converted.
    _, _, back, _ = load_weights(out)
    if back.keys() != params.keys() or any(
            back[k].dtype != params[k].dtype or back[k].tobytes() != params[k].tobytes() for k in params):
        raise WeightsError(f"{out}: read-back differs from the converted parameters; disk problem?")
    return {"out": str(out), "sha256": digest, "parts": parts, "config": config,
            "tensors": len(params), "parameters": int(sum(v.size for v in params.values()))}
