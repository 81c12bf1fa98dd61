"""A trained or imported CT-Searcher as a folder: `model.safetensors`, `config.json`,
`config.yaml` and a `README.md` model card.

`model.safetensors` holds every parameter and the fixed PE table, keyed by their NNX paths
(`encoder.0.self_attn.in_proj.kernel`, `pos_table`, ...), float32, with metadata `format`,
`sha256` (of the tensors' bytes in sorted key order, checked on load) and `ctsearcher_jax`
(the version that wrote it). `config.json` and `config.yaml` are the resolved Config (the same
content; `load_model` reads `config.json`, or `config.yaml` in folders written before
`config.json` existed). `README.md` is generated (`model/card.py`). Every file is written to a
temporary name and renamed, so a failed save leaves any earlier files intact. No pickle anywhere.

`load_model` checks a folder before it builds anything: the shapes its config implies
(`expected_shapes`: `nnx.eval_shape` of the factory's build, nothing allocated) against the
tensors `model.safetensors` declares (its header alone), so a `config.json` that does not describe
the tensors (a d_model of 65536, a 64^3 grid) is refused in one line naming the file, the key and
both shapes, before a parameter is allocated or a tensor read. The model is then filled from
the file (`unfilled_model`): no initialiser runs, nothing is drawn only to be overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
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
from ctsearcher_jax.model.positional import PositionalTable, shapes_only
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


def expected_shapes(config: Config | ModelConfig) -> dict[str, tuple[int, ...]]:
    """{key: shape} of every tensor `save_model` writes for this config, from `nnx.eval_shape`
    of the factory's build (abstract: no parameter is allocated, whatever the sizes)."""
    model_config = config.model if isinstance(config, Config) else config
    return _saved_shapes(_abstract_model(model_config))


def _saved_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    return {k: tuple(int(n) for n in v.get_value().shape)
            for k, v in _saved_variables(model).items()}


def unfilled_model(model_config: ModelConfig, *, rng_seed: int = 0) -> Any:
    """The model `build(model_config, ...)` makes, without running its initialisers, for a caller
    that sets every parameter and the PE table from a file (`Variable.set_value`): until then
    they hold abstract `jax.ShapeDtypeStruct`s (nothing is allocated, whatever the sizes). The
    dropout streams are concrete: seeded by `nnx.reseed(model, dropout=rng_seed)`, as the
    training step reseeds them every step.

    An eager build would compile one small XLA program per parameter shape and draw every
    parameter only to overwrite it (the Swin UNETR loader, `feature_extraction/weights.py`,
    skips the draw the same way).
    """
    model = _abstract_model(model_config)
    nnx.reseed(model, dropout=rng_seed)
    return model


def _abstract_model(model_config: ModelConfig) -> Any:
    """`nnx.eval_shape` of the factory's build: every variable abstract, nothing computed. The
    streams are named as `build` names them, so `nnx.reseed(model, dropout=...)` finds them."""
    with shapes_only():  # the PE table comes from the file too: skip its host computation
        return nnx.eval_shape(lambda: build(model_config, nnx.Rngs(params=0, dropout=0)))


def _set_from_file(variables: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """Set each {key: nnx.Variable} from `tensors[key]` (float32 arrays of the right shapes)."""
    for key, variable in variables.items():
        variable.set_value(jnp.asarray(tensors[key], dtype=jnp.float32))


def require_filled(model: Any, source: str, error: type[Exception] = CheckpointError) -> None:
    """`error` naming the variables of an `unfilled_model` that `source` did not set (any
    variable still abstract: a tensor missing from the source, or a kind of variable that is
    neither saved nor an RNG stream)."""
    unset = [".".join(map(str, path)) for path, v in nnx.to_flat_state(nnx.state(model))
             if isinstance(v.get_value(), jax.ShapeDtypeStruct)]
    if unset:
        raise error(f"{source}: sets no value for {unset[:5]}"
                    + (f" (+{len(unset) - 5})" if len(unset) > 5 else ""))


def _declared_shapes(weights: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """(metadata, {key: shape}) of a safetensors file from its header alone."""
    try:
        with safe_open(str(weights), framework="numpy") as f:
            return f.metadata() or {}, {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, ValueError, OSError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({exc})") from None


def _unfilled_or_error(config: Config, config_path: Path, rng_seed: int = 0) -> Any:
    """`unfilled_model` of the config, or CheckpointError naming `config_path` when the
    architecture cannot be built from it."""
    try:
        return unfilled_model(config.model, rng_seed=rng_seed)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{config_path}: describes no buildable model ({exc})") from None


def check_shapes(config_path: Path, weights: Path, implied: dict[str, tuple[int, ...]],
                 declared: dict[str, tuple[int, ...]]) -> None:
    """CheckpointError naming `config_path`, the first differing key and both shapes (and what is
    unknown or missing) unless the config implies exactly the tensors `weights` declares
    (`implied`: {key: shape} of the config's model, `declared`: from the file's header)."""
    unknown = sorted(set(declared) - set(implied))
    missing = sorted(set(implied) - set(declared))
    wrong = [k for k in sorted(implied) if k in declared and implied[k] != declared[k]]
    if not (unknown or missing or wrong):
        return
    parts = []
    if wrong:
        k = wrong[0]
        more = f" (and {len(wrong) - 1} more keys)" if len(wrong) > 1 else ""
        parts.append(f"{k}: the config implies {implied[k]}, {weights.name} holds "
                     f"{declared[k]}{more}")
    if missing:
        parts.append(f"missing from {weights.name}: {missing[:5]}"
                     + (f" (+{len(missing) - 5})" if len(missing) > 5 else ""))
    if unknown:
        parts.append(f"not in the config's model: {unknown[:5]}"
                     + (f" (+{len(unknown) - 5})" if len(unknown) > 5 else ""))
    raise CheckpointError(f"{config_path} does not describe {weights}: {'; '.join(parts)}; "
                          "restore the folder's config or export the model again")


def load_model(model_dir: str | os.PathLike[str], *, rng_seed: int = 0) -> tuple[Any, Config]:
    """Read a model folder (`save_model`, a training run's `<workdir>/model`, `import-upstream`):
    (Flax NNX model of `config.model.arch`, Config). A training run folder loads its exported
    model (`<workdir>/model`), as `predict --checkpoint` does. Folders written before
    `config.json` existed (only `config.yaml`) load too.

        model, config = load_model("runs/paper")        # or "runs/paper/model"

    Raises CheckpointError naming the file for a missing file, a config that does not describe
    the tensors (checked from the safetensors header before a parameter is allocated or a tensor
    read: `check_shapes`) or a hash mismatch. `rng_seed` seeds the model's dropout streams.
    """
    model_dir = resolve_model_dir(model_dir)
    weights = model_dir / WEIGHTS
    config, config_path = read_model_config(model_dir)
    metadata, declared = _declared_shapes(weights)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{weights}: format {metadata.get('format')!r} is not {FORMAT!r}")
    model = _unfilled_or_error(config, config_path, rng_seed)
    check_shapes(config_path, weights, _saved_shapes(model), declared)
    try:
        with safe_open(str(weights), framework="numpy") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, ValueError, OSError) as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({exc})") from None
    if metadata.get("sha256") != _digest(tensors):
        raise CheckpointError(f"{weights}: sha256 of the tensors does not match its metadata; "
                              "the file is corrupt, export it again")
    check_weight_tensors(tensors, str(weights), CheckpointError)
    _set_from_file(_saved_variables(model), tensors)  # check_shapes: the same keys and shapes
    require_filled(model, str(weights))
    return model, config
