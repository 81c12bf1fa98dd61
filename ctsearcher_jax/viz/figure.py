"""Matplotlib without global state: an Agg-backed `Figure` and an atomic PNG save.

`matplotlib.pyplot` is never imported, so no display is needed, no backend is switched for
the caller, and figures are freed when they go out of scope.

Text is drawn literally: every figure is written through `save_png`, which turns off mathtext
and TeX on each of its texts first, so a CT name such as `m$^$` or a subject `$\\x{$` (legal in
the data) is shown as typed instead of being parsed as math (where it would fail the save).
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from ctsearcher_jax.io import atomic_write


def new_figure(width_in: float, height_in: float, dpi: int):
    """A `Figure` of exactly (width_in x height_in) inches at `dpi` (constrained layout)."""
    fig = Figure(figsize=(width_in, height_in), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | os.PathLike[str]) -> Path:
    """Write `fig` as PNG atomically; the pixel size is exactly figsize * dpi (no tight bbox).
    Every text of the figure is drawn literally (no mathtext, no TeX)."""
    for text in fig.findobj(Text):
        text.set_parse_math(False)
        text.set_usetex(False)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=fig.dpi,
                                                    facecolor=fig.get_facecolor()))


def pixel_size(width_in: float, height_in: float, dpi: int) -> tuple[int, int]:
    """(width, height) in pixels of a PNG saved by `save_png`: inches * dpi, truncated (after
    rounding away float noise such as 86.99999999999999, as matplotlib does)."""
    return int(round(width_in * dpi, 6)), int(round(height_in * dpi, 6))
