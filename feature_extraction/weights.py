"""Portable Swin UNETR weights: one safetensors file + a `.sha256` sidecar.

File layout. Tensor names are the NNX parameter paths joined by dots (`swinViT.layers.0.blocks.1.
attn.qkv.kernel`), in Flax layouts (Linear `(in, out)`, Conv `(kd, kh, kw, in, out)`), float32.
The safetensors header metadata holds (all strings):
- `format`: "ctsearcher-swin-unetr", `format_version`: "1";
- `config`: the `SwinUNETRConfig` as JSON (feature size, depths, heads, window, merging order, ...);
- `parts`: "full", "encoder" (SwinViT + encoder10: enough for `encode`) or "swinvit";
- `params_sha256`: sha256 over the tensors (name, dtype, shape, bytes in name order), checked on load;
- `source`, `source_sha256`: the converted checkpoint, when there was one.
`<file>.sha256` holds the sha256 of the whole file (`sha256sum` format); it is checked on load when
present and is the "weights hash" recorded in feature manifests.

Loading gives the saved arrays bit for bit; `load_model` builds the NNX model around them.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load, save

from ctsearcher_jax.errors import WeightsError
from ctsearcher_jax.io import atomic_write, atomic_write_text
from ctsearcher_jax.tensors import check_weight_tensors
from feature_extraction.swin_unetr import PARTS, SwinUNETR, SwinUNETRConfig

FORMAT = "ctsearcher-swin-unetr"
FORMAT_VERSION = "1"


def params_sha256(params: dict[str, np.ndarray]) -> str:
    """Hash of a flat parameter dict, independent of file layout."""
    h = hashlib.sha256()
    for name in sorted(params):
        a = np.ascontiguousarray(params[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def sidecar_path(path: str | Path) -> Path:
    return Path(f"{path}.sha256")


def save_weights(path: str | Path, config: Any, parts: str, params: dict[str, np.ndarray],
                 extra_metadata: dict[str, str] | None = None) -> str:
    """Write `params` (flat NNX paths -> arrays) with `config` atomically; return the file sha256."""
    arrays = {k: np.ascontiguousarray(v) for k, v in params.items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config.to_json(),
            "parts": parts, "params_sha256": params_sha256(arrays)}
    meta.update(extra_metadata or {})
    blob = save(arrays, metadata=meta)
    atomic_write(path, lambda f: f.write(blob))
    digest = hashlib.sha256(blob).hexdigest()
    atomic_write_text(sidecar_path(path), f"{digest}  {Path(path).name}\n")
    return digest


def load_weights(path: str | Path) -> tuple[Any, str, dict[str, np.ndarray], dict[str, str]]:
    """Read a weights file: `(SwinUNETRConfig, parts, params, metadata)`; verifies both hashes."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file; convert one with `ctsearcher convert-monai`")
    blob = path.read_bytes()
    side = sidecar_path(path)
    if side.is_file():
        want = side.read_text().split()[0] if side.read_text().split() else ""
        got = hashlib.sha256(blob).hexdigest()
        if want != got:
            raise WeightsError(f"{path}: sha256 {got} differs from {side} ({want}); the file is "
                               "corrupt or was replaced; convert it again")
    try:
        params = load(blob)
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except (SafetensorError, ValueError, OSError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc}); convert it again") from exc
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: metadata format {meta.get('format')!r} is not {FORMAT!r}; "
                           "convert MONAI checkpoints with `ctsearcher convert-monai`")
    if meta.get("format_version") != FORMAT_VERSION:
        raise WeightsError(f"{path}: format_version {meta.get('format_version')!r} unsupported "
                           f"(this version reads {FORMAT_VERSION})")
    try:
        config = SwinUNETRConfig.from_json(meta["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"{path}: bad `config` metadata ({exc})") from exc
    parts = meta.get("parts", "")
    if parts not in PARTS:
        raise WeightsError(f"{path}: bad `parts` metadata {parts!r} (one of {PARTS})")
    if params_sha256(params) != meta.get("params_sha256"):
        raise WeightsError(f"{path}: tensors do not match their params_sha256; the file is corrupt")
    # a file written by hand (or by an older converter) may hash correctly and still hold
    # NaN/inf or integer weights
    check_weight_tensors(params, str(path), int_keys=("relative_position_index",))
    return config, parts, params, meta


def model_param_shapes(config: Any, parts: str) -> dict[str, tuple[tuple[int, ...], Any]]:
    """`{dotted NNX path: (shape, dtype)}` of every parameter, without allocating any."""
    return dict(_param_shapes(config, parts))  # a copy: callers may change theirs


@functools.lru_cache(maxsize=8)
def _param_shapes(config: Any, parts: str) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Memoised: tracing the model costs seconds and conversion asks for the same shapes twice."""
    abstract = nnx.eval_shape(lambda: SwinUNETR(config, rngs=nnx.Rngs(0), parts=parts))
    flat = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    return {".".join(map(str, p)): (tuple(v.shape), v.dtype) for p, v in flat}


def set_params(model: Any, params: dict[str, np.ndarray]) -> None:
    """Replace every parameter of `model` by `params` (same dotted paths, same shapes)."""
    state = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(state)
    names = {".".join(map(str, p)) for p, _ in flat}
    missing, unknown = sorted(names - set(params)), sorted(set(params) - names)
    if missing or unknown:
        raise WeightsError(f"parameters do not fit the model: missing {missing[:8]} "
                           f"({len(missing)}), unexpected {unknown[:8]} ({len(unknown)})")
    for p, var in flat:
        name = ".".join(map(str, p))
        if tuple(var.shape) != tuple(params[name].shape):
            raise WeightsError(f"{name}: shape {params[name].shape} != model {var.shape}")
        var.set_value(jnp.asarray(params[name]))
    nnx.update(model, nnx.from_flat_state(flat))


def load_model(path: str | Path, parts: str | None = None, dtype: str | None = None,
               precision: str | None = None, attention_batch: int | None = None) -> Any:
    """Build a `SwinUNETR` from a weights file.

    `parts` may narrow the file's parts ("full" file -> "encoder" model for extraction); `dtype`,
    `precision` and `attention_batch` override the stored compute options (parameters stay
    float32).
    """
    config, file_parts, params, _ = load_weights(path)
    parts = parts or file_parts
    if PARTS.index(parts) < PARTS.index(file_parts):
        raise WeightsError(f"{path}: holds only parts={file_parts!r}, cannot build parts={parts!r}")
    changes = {k: v for k, v in (("dtype", dtype), ("precision", precision),
                                 ("attention_batch", attention_batch)) if v is not None}
    config = dataclasses.replace(config, **changes)
    wanted = model_param_shapes(config, parts)
    params = {k: v for k, v in params.items() if k in wanted}
    # Shapes only (no random init: it would cost one XLA compile per parameter), then the arrays.
    model = nnx.eval_shape(lambda: SwinUNETR(config, rngs=nnx.Rngs(0), parts=parts))
    set_params(model, params)
    return model
