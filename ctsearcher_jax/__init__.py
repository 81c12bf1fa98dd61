"""ctsearcher-jax: CT-ScanGaze / CT-Searcher in JAX."""

from ctsearcher_jax._version import __version__

__all__ = ["__version__"]
