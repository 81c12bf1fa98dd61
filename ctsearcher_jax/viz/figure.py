"""Matplotlib without global state: an Agg-backed `Figure` and an atomic PNG save.

`matplotlib.pyplot` is never imported, so no display is needed, no backend is switched for
the caller, and figures are freed when they go out of scope.
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ctsearcher_jax.io import atomic_write


def new_figure(width_in: float, height_in: float, dpi: int):
    """A `Figure` of exactly (width_in x height_in) inches at `dpi` (constrained layout)."""
    fig = Figure(figsize=(width_in, height_in), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | os.PathLike[str]) -> Path:
    """Write `fig` as PNG atomically; the pixel size is exactly figsize * dpi (no tight bbox)."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=fig.dpi,
                                                    facecolor=fig.get_facecolor()))


def pixel_size(width_in: float, height_in: float, dpi: int) -> tuple[int, int]:
    """(width, height) in pixels of a PNG saved by `save_png`: inches * dpi, truncated (after
    rounding away float noise such as 86.99999999999999, as matplotlib does)."""
    return int(round(width_in * dpi, 6)), int(round(height_in * dpi, 6))
