"""A trained or imported CT-Searcher as files: `model.safetensors` + `config.yaml`.

`model.safetensors` holds every parameter and the fixed PE table, keyed by their NNX paths
(`encoder.0.self_attn.in_proj.kernel`, `pos_table`, ...), float32, with metadata `format`,
`sha256` (of the tensors' bytes in sorted key order, checked on load) and `ctsearcher_jax` version.
`config.yaml` is the resolved Config. Both are written to temporary names and renamed, so a failed
save leaves any earlier files intact. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ctsearcher_jax import config as config_lib
from ctsearcher_jax.config import Config, ModelConfig
from ctsearcher_jax.errors import CheckpointError
from ctsearcher_jax.tensors import check_weight_tensors

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
FORMAT = "ctsearcher-jax/ct-searcher/1"


def _saved_variables(model: Any) -> dict[str, Any]:
    """{dotted path: nnx.Variable} of the parameters and the PE table (not RNG state)."""
    from flax import nnx

    from ctsearcher_jax.model.positional import PositionalTable

    state = nnx.state(model, nnx.Any(nnx.Param, PositionalTable))
    out = {}
    for path, variable in nnx.to_flat_state(state):
        out[".".join(str(p) for p in path)] = variable
    return out


def _digest(tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(key.encode())
        h.update(json.dumps(list(tensors[key].shape)).encode())
        h.update(np.ascontiguousarray(tensors[key], dtype=np.float32).tobytes())
    return h.hexdigest()


def model_tensors(model: Any) -> dict[str, np.ndarray]:
    """{dotted path: float32 numpy array} of everything `save_model` writes."""
    return {k: np.asarray(v.get_value(), dtype=np.float32) for k, v in _saved_variables(model).items()}


def save_model(out_dir: str | os.PathLike[str], model: Any, config: Config | ModelConfig) -> Path:
    """Write `out_dir/model.safetensors` and `out_dir/config.yaml` atomically; return out_dir."""
    from safetensors.numpy import save

    from ctsearcher_jax.io import atomic_write, atomic_write_text

    if isinstance(config, ModelConfig):
        config = Config(model=config)
    if config.model != model.config:
        raise CheckpointError(f"save_model({out_dir}): config.model {config.model} does not describe "
                              f"the model ({model.config})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = model_tensors(model)
    metadata = {"format": FORMAT, "sha256": _digest(tensors)}
    blob = save(tensors, metadata=metadata)
    atomic_write(out_dir / WEIGHTS, lambda f: f.write(blob))
    atomic_write_text(out_dir / CONFIG, config_lib.dumps(config))
    return out_dir


def load_model(model_dir: str | os.PathLike[str], *, rng_seed: int = 0) -> tuple[Any, Config]:
    """Read a directory written by `save_model`: (model of `config.model.arch`, Config).

    Raises CheckpointError naming the file for a missing file, a hash mismatch, or tensors that do
    not fit the config. `rng_seed` seeds the dropout stream of the rebuilt model.
    """
    from flax import nnx
    from safetensors import SafetensorError
    from safetensors.numpy import load

    from ctsearcher_jax.model.factory import build

    model_dir = Path(model_dir)
    weights, config_path = model_dir / WEIGHTS, model_dir / CONFIG
    for path in (weights, config_path):
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist; expected a directory written by "
                                  "`ctsearcher import-upstream` or by training's model export")
    config = config_lib.load(config_path)
    blob = weights.read_bytes()
    try:
        tensors = load(blob)
        metadata = _read_metadata(blob)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{weights}: format {metadata.get('format')!r} is not {FORMAT!r}")
    if metadata.get("sha256") != _digest(tensors):
        raise CheckpointError(f"{weights}: sha256 of the tensors does not match its metadata; "
                              "the file is corrupt, export it again")
    check_weight_tensors(tensors, str(weights), CheckpointError)
    model = build(config.model, nnx.Rngs(params=rng_seed, dropout=rng_seed))
    variables = _saved_variables(model)
    unknown, missing = sorted(set(tensors) - set(variables)), sorted(set(variables) - set(tensors))
    wrong = [f"{k}: {tensors[k].shape} != {variables[k].shape}" for k in variables
             if k in tensors and tuple(tensors[k].shape) != tuple(variables[k].shape)]
    if unknown or missing or wrong:
        raise CheckpointError(f"{weights} does not fit {config_path}: unknown {unknown}, missing "
                              f"{missing}, wrong shapes {wrong}")
    for key, variable in variables.items():
        variable[...] = tensors[key]
    return model, config


def _read_metadata(blob: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors byte string."""
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + header_len])
    return header.get("__metadata__", {}) or {}
