"""Models: `build(config.model, rngs)` makes the configured architecture (see `factory`)."""

from ctsearcher_jax.model.factory import ARCHITECTURES, build

__all__ = ["ARCHITECTURES", "build"]
