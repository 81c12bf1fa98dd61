"""The model factory: `build(config.model, rngs)` makes the architecture `config.model.arch` names.

Every place that needs a model (training, evaluation, export, loading, import) calls `build`, so
a new architecture (e.g. a variant conditioned on the reader) is one module plus one entry in
`ARCHITECTURES`; nothing else changes. Entries are "module:Class" strings imported on first use,
so `ModelConfig` can check a name against this table without importing Flax. The class is called
as `Class(model_config, rngs=rngs)` and must return an `nnx.Module` whose `__call__(tokens,
deterministic=...)` gives `ScanpathOutputs` (see `model/ct_searcher.py`); an autoregressive one
(listed in `AUTOREGRESSIVE`) takes the previous fixations too (`model/ct_searcher_ar.py`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flax import nnx

    from ctsearcher_jax.config import ModelConfig

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


def architecture(name: str) -> Any:
    """The model class registered as `name` (KeyError listing the known names)."""
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown model architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    module, _, cls = ARCHITECTURES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build(config: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    """A freshly initialised model of architecture `config.arch` (parameters from `rngs`).

    Wrap in `nnx.eval_shape(lambda: build(config, nnx.Rngs(0)))` for an abstract model.
    """
    return architecture(config.arch)(config, rngs=rngs)
