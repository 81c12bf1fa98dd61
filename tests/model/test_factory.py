"""The model factory: `build(config.model, rngs)` makes the architecture `model.arch` names."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from ctsearcher_jax import config as cfg
from ctsearcher_jax.config import ModelConfig
from ctsearcher_jax.errors import ConfigError
from ctsearcher_jax.model import factory
from ctsearcher_jax.model.ct_searcher import CTSearcher

TINY = ModelConfig(d_model=8, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                   dim_feedforward=8, feature_dim=4, grid=(1, 1, 2), max_length=3)


def test_build_is_the_constructor_of_the_named_architecture():
    model = factory.build(TINY, nnx.Rngs(0))
    direct = CTSearcher(TINY, rngs=nnx.Rngs(0))
    assert type(model) is CTSearcher
    a, b = jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(nnx.state(direct, nnx.Param))
    assert len(a) == len(b) > 10
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_a_registered_variant_plugs_in(monkeypatch):
    class Variant(CTSearcher):
        pass

    monkeypatch.setitem(factory.ARCHITECTURES, "variant", f"{__name__}:_VARIANT")
    monkeypatch.setitem(globals(), "_VARIANT", Variant)
    config = cfg.from_dict({"model": {**cfg.to_dict(cfg.Config(model=TINY))["model"],
                                      "arch": "variant"}})
    assert type(factory.build(config.model, nnx.Rngs(0))) is Variant
    with pytest.raises(ValueError, match="already registered"):
        factory.register("variant", "elsewhere:Other")


def test_unknown_arch_is_a_config_error_and_old_configs_load():
    unknown = cfg.from_dict({"model": {"arch": "transformer_xl"}}).model  # config is a leaf
    with pytest.raises(ConfigError, match="model.arch.*transformer_xl.*ct_searcher"):
        factory.check_architecture(unknown)
    with pytest.raises(ConfigError, match="model.arch"):
        factory.build(unknown, nnx.Rngs(0))
    saved = cfg.to_dict(cfg.Config(model=TINY))
    del saved["model"]["arch"]  # a config written before model.arch existed
    assert cfg.from_dict(saved).model == dataclasses.replace(TINY, arch="ct_searcher")
