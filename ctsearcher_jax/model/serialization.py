"""A trained or imported CT-Searcher as a folder: `model.safetensors`, `config.json`,
`config.yaml` and a `README.md` model card.

`model.safetensors` holds every parameter and the fixed PE table, keyed by their NNX paths
(`encoder.0.self_attn.in_proj.kernel`, `pos_table`, ...), float32, with metadata `format`,
`sha256` (of the tensors' bytes in sorted key order, checked on load) and `ctsearcher_jax`
(the version that wrote it). `config.json` and `config.yaml` are the resolved Config (the same
content; `load_model` reads `config.json`, or `config.yaml` in folders written before
`config.json` existed). `README.md` is generated (`model/card.py`). Every file is written to a
temporary name and renamed, so a failed save leaves any earlier files intact. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from ctsearcher_jax import config as config_lib
from ctsearcher_jax._version import __version__
from ctsearcher_jax.config import Config, ModelConfig
from ctsearcher_jax.errors import CheckpointError
from ctsearcher_jax.io import atomic_write, atomic_write_json, atomic_write_text, loads_json
from ctsearcher_jax.model.card import write_model_card
from ctsearcher_jax.model.factory import build
from ctsearcher_jax.model.positional import PositionalTable
from ctsearcher_jax.tensors import check_weight_tensors

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
CONFIG_JSON = "config.json"
CARD = "README.md"
FORMAT = "ctsearcher-jax/ct-searcher/1"


def _saved_variables(model: Any) -> dict[str, Any]:
    """{dotted path: nnx.Variable} of the parameters and the PE table (not RNG state)."""
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


def save_model(out_dir: str | os.PathLike[str], model: Any, config: Config | ModelConfig,
               card: dict[str, Any] | None = None) -> Path:
    """Write the model folder (`model.safetensors`, `config.json`, `config.yaml`, `README.md`)
    atomically, file by file; return out_dir.

    card: what the model card should say beyond the config (see `model.card.card_text`: the
    training step and its metrics, or the imported checkpoint).
    """
    if isinstance(config, ModelConfig):
        config = Config(model=config)
    if config.model != model.config:
        raise CheckpointError(f"save_model({out_dir}): config.model {config.model} does not describe "
                              f"the model ({model.config})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = model_tensors(model)
    metadata = {"format": FORMAT, "sha256": _digest(tensors), "ctsearcher_jax": __version__}
    blob = save(tensors, metadata=metadata)
    atomic_write(out_dir / WEIGHTS, lambda f: f.write(blob))
    atomic_write_json(out_dir / CONFIG_JSON, config_lib.to_dict(config))
    atomic_write_text(out_dir / CONFIG, config_lib.dumps(config))
    write_model_card(out_dir, config, card)
    return out_dir


def read_model_config(model_dir: str | os.PathLike[str]) -> tuple[Config, Path]:
    """The Config of a model folder and the file it came from: `config.json`, else (a folder
    written before config.json existed) `config.yaml`."""
    model_dir = Path(model_dir)
    json_path, yaml_path = model_dir / CONFIG_JSON, model_dir / CONFIG
    if json_path.is_file():
        data = loads_json(json_path.read_text(errors="replace"), str(json_path))
        if not isinstance(data, dict):
            raise CheckpointError(f"{json_path}: expected a JSON object of config sections")
        try:
            return config_lib.from_dict(data), json_path
        except config_lib.ConfigError as exc:
            raise CheckpointError(f"{json_path}: {exc}") from None
    if yaml_path.is_file():
        return config_lib.load(yaml_path), yaml_path
    raise CheckpointError(f"{model_dir}: no {CONFIG_JSON} (or {CONFIG}); expected a folder written "
                          "by `ctsearcher import-upstream` or by training's model export")


def resolve_model_dir(checkpoint: str | os.PathLike[str]) -> Path:
    """The model folder `checkpoint` names: a model folder itself, or a training run folder
    (workdir) holding its exported model in `model/` (CheckpointError naming both otherwise)."""
    path = Path(checkpoint)
    for candidate in (path, path / "model"):
        if (candidate / "model.safetensors").is_file():
            return candidate
    raise CheckpointError(
        f"{path}: no model.safetensors here or in {path / 'model'}; pass a training workdir "
        f"(after `ctsearcher train`) or a directory written by `ctsearcher import-upstream`")


def load_model(model_dir: str | os.PathLike[str], *, rng_seed: int = 0) -> tuple[Any, Config]:
    """Read a model folder (`save_model`, a training run's `<workdir>/model`, `import-upstream`):
    (Flax NNX model of `config.model.arch`, Config). A training run folder loads its exported
    model (`<workdir>/model`), as `predict --checkpoint` does. Folders written before
    `config.json` existed (only `config.yaml`) load too.

        model, config = load_model("runs/paper")        # or "runs/paper/model"

    Raises CheckpointError naming the file for a missing file, a hash mismatch, or tensors that do
    not fit the config. `rng_seed` seeds the dropout stream of the rebuilt model.
    """
    model_dir = resolve_model_dir(model_dir)
    weights = model_dir / WEIGHTS
    config, config_path = read_model_config(model_dir)
    try:
        with safe_open(str(weights), framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, ValueError, OSError) as exc:
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
