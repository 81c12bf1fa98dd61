"""All figures of one CT in one call: what `visualize`, `predict` and `report` use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from ctsearcher_jax.data.inspect import volume_stem
from ctsearcher_jax.data.nifti import DEFAULT_MAX_VOXELS
from ctsearcher_jax.data.schema import Scanpath
from ctsearcher_jax.paths import check_name
from ctsearcher_jax.viz.animation import write_slice_gif
from ctsearcher_jax.viz.density import plot_density
from ctsearcher_jax.viz.scanpaths import plot_drilling, plot_scanpath_projections
from ctsearcher_jax.viz.viewer import default_paths, write_viewer
from ctsearcher_jax.viz.volume import load_volume, resolve_window

FIGURES = ("projections", "drilling", "density", "slices", "viewer")
# Resolution bounds: figures are about 10 x 4 inches, so 600 dpi is a 6000 x 2400 canvas;
# far beyond that matplotlib's allocation fails (std::bad_alloc) instead of drawing.
MIN_DPI, MAX_DPI = 20, 600
FILE_NAMES = {"projections": "{name}_projections.png", "drilling": "{name}_drilling.png",
              "density": "{name}_density.png", "slices": "{name}_slices.gif",
              "viewer": "{name}_viewer.html"}


def render_ct_figures(volume_path: str | os.PathLike[str], gt: Sequence[Scanpath],
                      pred: Sequence[Scanpath] | None, out_dir: str | os.PathLike[str], *,
                      name: str | None = None, window: str = "soft", projection: str = "mean",
                      max_pred: int = 2, figures: Sequence[str] = FIGURES, dpi: int = 100,
                      gif_side: int = 192, gif_max_frames: int = 60,
                      sources: Mapping[str, str] | None = None,
                      max_voxels: int = DEFAULT_MAX_VOXELS) -> dict[str, Path]:
    """Render the figures of one CT into `out_dir`; return {figure kind: path written}.

    volume_path: the CT (NIfTI). gt: its ground-truth scanpaths (may be empty when only a
    prediction exists). pred: predicted scanpaths of the same CT, or None; at most `max_pred` of
    them are drawn in the projection figure (the drilling, density and GIF use all).
    window: soft | lung | bone | auto | "W,L" in HU. projection: "mean" (windowed mean) or "max"
    (MIP); see `ctsearcher_jax.viz.scanpaths`. figures: any of FIGURES. Files are
    `<name>_projections.png`, `<name>_drilling.png`, `<name>_density.png`, `<name>_slices.gif`,
    `<name>_viewer.html` (the interactive viewer, `ctsearcher_jax.viz.viewer`; fixations beyond
    the volume's slices are drawn on the nearest one and marked, as in the other figures; `sources`
    are the input files it names), each written atomically; `name` defaults to the CT's file stem.
    max_voxels: the largest volume read (`data.nifti`; a larger header is refused unread).
    """
    unknown = [f for f in figures if f not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; choose from {list(FIGURES)}")
    if not gt and not pred:
        raise ValueError("nothing to draw: no ground-truth and no predicted scanpath")
    if not MIN_DPI <= dpi <= MAX_DPI:
        raise ValueError(f"dpi {dpi}: must be in [{MIN_DPI}, {MAX_DPI}]")
    if name is not None:
        check_name(name, f"CT {name!r}")  # a file name, never a path (no '..', no '/')
    volume = load_volume(volume_path, max_voxels=max_voxels)
    if name is None:
        name = volume_stem(volume_path) or Path(volume_path).stem
    win = resolve_window(window, volume.data)
    out_dir = Path(out_dir)
    pred = list(pred) if pred else None
    gt = list(gt)
    paths = {kind: out_dir / FILE_NAMES[kind].format(name=name) for kind in figures}
    written: dict[str, Path] = {}
    if "projections" in paths:
        written["projections"] = plot_scanpath_projections(
            volume, win, gt, pred[:max_pred] if pred else None, paths["projections"],
            projection=projection, dpi=dpi, title=name)
    if "drilling" in paths:
        written["drilling"] = plot_drilling(gt, pred, paths["drilling"],
                                            num_slices=volume.shape[2], dpi=dpi, title=name)
    if "density" in paths:
        written["density"] = plot_density(volume, win, gt, pred, paths["density"], dpi=dpi,
                                          title=name)
    if "slices" in paths:
        written["slices"] = write_slice_gif(volume, win, gt, pred, paths["slices"], side=gif_side,
                                            max_frames=gif_max_frames)
    if "viewer" in paths:
        written["viewer"], _ = write_viewer(
            paths["viewer"], volume, default_paths(gt, pred), name=name, window=window,
            sources=sources, clip_z=True)
    return written
