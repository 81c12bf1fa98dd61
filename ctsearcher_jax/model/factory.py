"""The model factory: `build(config.model, rngs)` makes the architecture `config.model.arch` names.

Every place that needs a model (training, evaluation, export, loading, import) calls `build`, so
a new architecture (e.g. a variant conditioned on the reader) is one module plus one entry in
`ARCHITECTURES`; nothing else changes. Entries are "module:Class" strings imported on first use,
so looking a name up imports nothing heavy. The name is checked here, not in `config.py` (the
config is a leaf of the import graph): `check_architecture` raises ConfigError naming
`model.arch`; `build` calls it, and the commands call it right after loading a config. The class is called
as `Class(model_config, rngs=rngs)` and must return an `nnx.Module` whose `__call__(tokens,
deterministic=...)` gives `ScanpathOutputs` (see `model/ct_searcher.py`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ctsearcher_jax.config import ModelConfig
from ctsearcher_jax.errors import ConfigError

if TYPE_CHECKING:
    from flax import nnx

# Architecture name (`model.arch`) -> "module:Class".
ARCHITECTURES: dict[str, str] = {
    "ct_searcher": "ctsearcher_jax.model.ct_searcher:CTSearcher",
}
DEFAULT_ARCH = "ct_searcher"


def register(name: str, target: str) -> None:
    """Add architecture `name` built by the class at `target` ("module:Class")."""
    if name in ARCHITECTURES and ARCHITECTURES[name] != target:
        raise ValueError(f"architecture {name!r} is already registered as {ARCHITECTURES[name]}")
    if ":" not in target:
        raise ValueError(f"target {target!r}: expected 'module:Class'")
    ARCHITECTURES[name] = target


def check_architecture(config: ModelConfig) -> None:
    """ConfigError naming `model.arch` and the known names when `config.arch` is not registered."""
    if config.arch not in ARCHITECTURES:
        raise ConfigError(f"config key 'model.arch': unknown {config.arch!r}; choose from "
                          f"{sorted(ARCHITECTURES)}")


def architecture(name: str) -> Any:
    """The model class registered as `name` (ConfigError listing the known names)."""
    check_architecture(ModelConfig(arch=name))
    module, _, cls = ARCHITECTURES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build(config: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    """A freshly initialised model of architecture `config.arch` (parameters from `rngs`).

    Wrap in `nnx.eval_shape(lambda: build(config, nnx.Rngs(0)))` for an abstract model.
    """
    return architecture(config.arch)(config, rngs=rngs)
