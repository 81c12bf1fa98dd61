"""Mesh and batch start-up checks."""

from __future__ import annotations

import pytest

from ctsearcher_jax.config import TrainConfig
from ctsearcher_jax.errors import ConfigError


def test_batch_that_does_not_divide_devices_is_config_error():
    import jax

    from ctsearcher_jax.train.sharding import check_batch_divides, make_mesh

    mesh = make_mesh(TrainConfig())
    n = len(jax.devices())
    with pytest.raises(ConfigError, match="grad_accum_steps"):
        check_batch_divides(TrainConfig(batch_size=3, grad_accum_steps=2), mesh, 1)
    with pytest.raises(ConfigError, match="processes"):
        check_batch_divides(TrainConfig(batch_size=3 * n), mesh, 2)
    with pytest.raises(ConfigError, match="fsdp"):
        make_mesh(TrainConfig(fsdp=n + 1))
    check_batch_divides(TrainConfig(batch_size=2 * n, grad_accum_steps=2), mesh, 1)
