"""The model factory: `build(config.model, rngs)` makes the architecture `config.model.arch` names.

Every place that needs a model (training, evaluation, export, loading, import) calls `build`, so
a new architecture (e.g. a variant conditioned on the reader) is one module plus one entry in
`ARCHITECTURES`; nothing else changes. Entries are "module:Class" strings imported on first use,
so looking a name up imports nothing heavy. The name is checked here, not in `config.py` (the
config is a leaf of the import graph): `check_architecture` raises ConfigError naming
`model.arch`; `build` calls it, and the commands call it right after loading a config. The class is called
as `Class(model_config, rngs=rngs)` and must return an `nnx.Module` whose `__call__(tokens,
deterministic=...)` gives `ScanpathOutputs` (see `model/ct_searcher.py`); an autoregressive one
(listed in `AUTOREGRESSIVE`) takes the previous fixations too (`model/ct_searcher_ar.py`).
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
    "ct_searcher_ar": "ctsearcher_jax.model.ct_searcher_ar:CTSearcherAR",
}
DEFAULT_ARCH = "ct_searcher"
# Architectures that draw each fixation given the previous ones: their forward pass takes the
# previous fixations (teacher forcing), their sampler is a `lax.scan` (`model/sampling_ar.py`).
AUTOREGRESSIVE: frozenset[str] = frozenset({"ct_searcher_ar"})


def is_autoregressive(arch: str) -> bool:
    """True when architecture `arch` is autoregressive (see AUTOREGRESSIVE)."""
    return arch in AUTOREGRESSIVE


def register(name: str, target: str) -> None:
    """Add architecture `name` built by the class at `target` ("module:Class")."""
    if name in ARCHITECTURES and ARCHITECTURES[name] != target:
        raise ValueError(f"architecture {name!r} is already registered as {ARCHITECTURES[name]}")
    if ":" not in target:
        raise ValueError(f"target {target!r}: expected 'module:Class'")
    ARCHITECTURES[name] = target


def check_architecture(config: ModelConfig) -> None:
    """ConfigError naming the key: `model.arch` not registered (with the known names), or a field
    of one kind of architecture set on another (`model.reader_dropout` on a non-autoregressive
    one, `model.legacy_stop_last` on an autoregressive one)."""
    if config.arch not in ARCHITECTURES:
        raise ConfigError(f"config key 'model.arch': unknown {config.arch!r}; choose from "
                          f"{sorted(ARCHITECTURES)}")
    if not is_autoregressive(config.arch) and config.reader_dropout != 0.0:
        raise ConfigError(f"config key 'model.reader_dropout': only for the autoregressive "
                          f"architectures {sorted(AUTOREGRESSIVE)} (model.arch is {config.arch!r})")
    if is_autoregressive(config.arch) and config.legacy_stop_last:
        raise ConfigError("config key 'model.legacy_stop_last': only for importing original "
                          "CT-Searcher checkpoints (model.arch ct_searcher)")


def check_sampling(arch: str, temperature: float, top_k: int) -> None:
    """ConfigError naming `eval.temperature` / `eval.top_k` when set for a non-autoregressive
    architecture (CT-Searcher draws at temperature 1 over every class)."""
    if not is_autoregressive(arch) and (temperature != 1.0 or top_k != 0):
        raise ConfigError(f"config keys 'eval.temperature'/'eval.top_k': only for the "
                          f"autoregressive architectures {sorted(AUTOREGRESSIVE)} "
                          f"(model.arch is {arch!r})")


def architecture(name: str) -> Any:
    """The model class registered as `name` (ConfigError listing the known names)."""
    check_architecture(ModelConfig(arch=name))
    module, _, cls = ARCHITECTURES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build(config: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    """A freshly initialised model of architecture `config.arch` (parameters from `rngs`).

    Wrap in `nnx.eval_shape(lambda: build(config, nnx.Rngs(0)))` for an abstract model.
    """
    check_architecture(config)
    return architecture(config.arch)(config, rngs=rngs)
