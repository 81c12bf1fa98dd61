"""Scanpaths drawn over CT projections, and the slice-against-time ("drilling") plot.

Projection figure: one column per scanpath (ground-truth readers first, then predictions), one
row per view (axial, coronal, sagittal). Fixations are circles whose area is proportional to the
fixation duration, numbered in order (every k-th number on long scanpaths, always the first and
last), joined by saccade lines; colour runs from dark (start) to yellow (end) so the order reads
without the numbers.

Why a windowed *mean* projection by default, not a maximum-intensity projection (MIP): after a
soft-tissue window (W400/L40) everything above +240 HU is white, and nearly every ray through
the body crosses bone or contrast, so a soft-tissue MIP is a white silhouette with the skeleton
burnt in. The mean of the windowed volume (a "windowed average-intensity projection") reads
like a radiograph: body outline, lungs, liver, spine and large vessels stay distinct, which is
what one needs to see where readers looked. `projection="max"` gives the MIP (pair it with the
bone window to see the skeleton).
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib.patheffects as pe
import numpy as np
from matplotlib import colormaps
from matplotlib.collections import LineCollection

from ctsearcher_jax.data.schema import Scanpath
from ctsearcher_jax.text import visible
from ctsearcher_jax.viz.figure import new_figure, save_png
from ctsearcher_jax.viz.volume import CTVolume, Window, gaze_to_voxel, project

# (view name, axis projected away, voxel axes on (horizontal, vertical), axis labels)
VIEWS = (
    ("axial", 2, (1, 0), ("X", "Y")),
    ("coronal", 0, (1, 2), ("X", "Z")),
    ("sagittal", 1, (0, 2), ("Y", "Z")),
)
MAX_LABELS = 15  # numbers drawn per scanpath at most (every k-th fixation beyond that)
PANEL_INCHES = 2.6  # width and height of one panel
TITLE_INCHES = 0.45  # room for the (wrapped) figure title


def scanpath_label(sp: Scanpath, kind: str) -> str:
    """Short panel title: 'GT reader 1' / 'pred 2 (reader 1)' plus fixation count and time."""
    subject = visible(sp.subject)  # data: no line break or reordering from it
    who = f"GT reader {subject}" if kind == "gt" else f"pred (reader {subject})"
    return f"{who}: {sp.length} fix, {float(np.sum(sp.t)):.1f} s"


def label_step(n: int, max_labels: int = MAX_LABELS) -> int:
    """Number every k-th fixation so that at most about `max_labels` numbers are drawn."""
    return max(1, math.ceil(n / max_labels))


def marker_areas(durations: np.ndarray, reference: float) -> np.ndarray:
    """Marker areas (points^2), proportional to duration (s), 36 pt^2 at the `reference` duration."""
    return np.clip(36.0 * np.asarray(durations) / max(reference, 1e-6), 4.0, 400.0)


def _clip_to_volume(coords: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    outside = (coords < -0.5) | (coords > size - 0.5)
    return np.clip(coords, -0.5, size - 0.5), outside


def draw_scanpath(ax, h: np.ndarray, v: np.ndarray, durations: np.ndarray, *,
                  reference_duration: float, outside: np.ndarray | None = None,
                  max_labels: int = MAX_LABELS, cmap: str = "plasma") -> None:
    """Draw one scanpath on `ax` in data coordinates: saccade lines, duration circles, numbers.

    h, v: (n,) horizontal and vertical positions; durations: (n,) seconds; outside: (n,) bool,
    fixations that were clipped to the volume edge (drawn hollow).
    """
    n = len(h)
    colours = colormaps[cmap](np.linspace(0.05, 0.95, max(n, 2)))[:n]
    if n > 1:
        segments = np.stack([np.stack([h[:-1], v[:-1]], 1), np.stack([h[1:], v[1:]], 1)], 1)
        ax.add_collection(LineCollection(segments, colors=colours[:-1], linewidths=1.0, alpha=0.9,
                                         zorder=2))
    outside = np.zeros(n, bool) if outside is None else outside
    areas = marker_areas(durations, reference_duration)
    inside = ~outside
    ax.scatter(h[inside], v[inside], s=areas[inside], c=colours[inside], alpha=0.55,
               edgecolors="white", linewidths=0.5, zorder=3)
    if outside.any():
        ax.scatter(h[outside], v[outside], s=areas[outside], facecolors="none",
                   edgecolors=colours[outside], linewidths=1.0, linestyle=":", zorder=3)
    step = label_step(n, max_labels)
    idx = sorted(set(range(0, n, step)) | {n - 1})
    outline = [pe.withStroke(linewidth=1.5, foreground="black")]
    for t in idx:
        ax.text(h[t], v[t], str(t + 1), color="white", fontsize=5.5, ha="center", va="center",
                zorder=4, path_effects=outline)


def plot_scanpath_projections(volume: CTVolume, window: Window, gt: Sequence[Scanpath],
                              pred: Sequence[Scanpath] | None, out_path: str | os.PathLike[str],
                              *, projection: str = "mean", dpi: int = 100,
                              panel_inches: float = PANEL_INCHES, title: str = "") -> Path:
    """Write the projection figure: 3 rows (views) x (len(gt) + len(pred)) columns, PNG.

    Pixel size: (columns * panel_inches * dpi) x (3 * panel_inches + TITLE_INCHES) * dpi.
    """
    columns = [(sp, "gt") for sp in gt] + [(sp, "pred") for sp in (pred or [])]
    if not columns:
        raise ValueError("nothing to draw: no ground-truth and no predicted scanpath")
    windowed = window.apply(volume.data)
    images = {name: project(windowed, axis, projection) for name, axis, _, _ in VIEWS}
    shape = volume.shape
    spacing = volume.spacing
    reference = float(np.median(np.concatenate([sp.t for sp, _ in columns])))

    width, height = len(columns) * panel_inches, 3 * panel_inches + TITLE_INCHES
    fig = new_figure(width, height, dpi)
    axes = fig.subplots(3, len(columns), squeeze=False)
    for c, (sp, kind) in enumerate(columns):
        vox = gaze_to_voxel(sp.x, sp.y, sp.z, shape)
        for r, (name, _, (ah, av), (lh, lv)) in enumerate(VIEWS):
            ax = axes[r, c]
            # Aspect = vertical voxel spacing / horizontal voxel spacing, so anatomy is not
            # squashed by thick slices; bounded so a degenerate header cannot flatten a panel.
            aspect = float(np.clip(spacing[av] / spacing[ah], 0.2, 5.0))
            ax.imshow(images[name], cmap="gray", vmin=0.0, vmax=1.0, aspect=aspect,
                      interpolation="antialiased", origin="upper")
            h, out_h = _clip_to_volume(vox[ah], shape[ah])
            v, out_v = _clip_to_volume(vox[av], shape[av])
            draw_scanpath(ax, h, v, sp.t, reference_duration=reference, outside=out_h | out_v,
                          cmap="plasma" if kind == "gt" else "viridis")
            ax.set_xlim(-0.5, shape[ah] - 0.5)
            ax.set_ylim(shape[av] - 0.5, -0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{name}\n{lh} →, {lv} ↓", fontsize=7)
            if r == 0:
                ax.set_title(scanpath_label(sp, kind), fontsize=7,
                             color="black" if kind == "gt" else "darkgreen")
        n_out = int(np.sum((vox[2] < -0.5) | (vox[2] > shape[2] - 0.5)))
        if n_out:
            axes[2, c].text(0.02, 0.02, f"{n_out} fix beyond the {shape[2]} slices (dotted)",
                            transform=axes[2, c].transAxes, fontsize=5.5, color="yellow")
    mode = "windowed mean projection" if projection == "mean" else "maximum-intensity projection"
    text = (f"{visible(title)}  {mode}, {window.label}; circle area ∝ duration, numbers and colour "
            f"(dark → light) = order")
    # Wrapped to the figure width (about 17 characters per inch at 7.5 pt), at most 3 lines.
    lines = textwrap.wrap(text, max(20, int(width * 17)))[:3]
    fig.suptitle("\n".join(lines), fontsize=7.5)
    return save_png(fig, out_path)


def fixation_onsets(durations: np.ndarray) -> np.ndarray:
    """(n,) onset times (s) of fixations with (n,) durations: 0, t1, t1 + t2, ..."""
    d = np.asarray(durations, np.float64)
    return np.concatenate([[0.0], np.cumsum(d)[:-1]])


def drilling_steps(sp: Scanpath) -> tuple[np.ndarray, np.ndarray]:
    """Step curve of slice against cumulative time: (2n,) times (s) and (2n,) slice numbers.

    Each fixation is a horizontal segment at its Z from its onset to its offset; consecutive
    segments join with a vertical saccade.
    """
    onset = fixation_onsets(sp.t)
    offset = onset + sp.t
    times = np.stack([onset, offset], 1).ravel()
    slices = np.repeat(np.asarray(sp.z, np.float64), 2)
    return times, slices


def plot_drilling(gt: Sequence[Scanpath], pred: Sequence[Scanpath] | None,
                  out_path: str | os.PathLike[str], *, num_slices: int | None = None,
                  dpi: int = 100, panel_inches: tuple[float, float] = (4.0, 3.0),
                  title: str = "") -> Path:
    """Write the drilling plot: slice (Z) against cumulative time, one line per scanpath.

    One panel for the ground truth, one (same axes) for predictions, each when given. Slice 1 is
    at the top, as in the coronal and sagittal views. Pixel size: (panels * panel_inches[0] *
    dpi) x (panel_inches[1] * dpi).
    """
    groups = [(label, list(sps), cmap) for label, sps, cmap in
              (("ground truth", gt, "tab10"), ("prediction", pred, "Dark2")) if sps]
    if not groups:
        raise ValueError("nothing to draw: no ground-truth and no predicted scanpath")
    fig = new_figure(len(groups) * panel_inches[0], panel_inches[1], dpi)
    axes = fig.subplots(1, len(groups), squeeze=False, sharey=True, sharex=True)[0]
    z_max = max([float(np.max(sp.z)) for _, sps, _ in groups for sp in sps] + [num_slices or 1])
    for ax, (label, sps, cmap) in zip(axes, groups):
        colours = colormaps[cmap].colors
        for n, sp in enumerate(sps):
            times, slices = drilling_steps(sp)
            subject = visible(sp.subject)
            who = f"reader {subject}" if label == "ground truth" else f"sample (reader {subject})"
            ax.plot(times, slices, color=colours[n % len(colours)], linewidth=1.0,
                    label=who if n < 8 else None)
        if num_slices is not None:
            ax.axhspan(num_slices + 0.5, max(z_max, num_slices) + 1, color="0.85", zorder=0)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("time (s)", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3, linewidth=0.5)
        if sps:
            ax.legend(fontsize=5.5, loc="best", frameon=False)
    axes[0].set_ylabel("slice Z" + (f" (of {num_slices})" if num_slices else ""), fontsize=7)
    axes[0].set_ylim(max(z_max, num_slices or 0) + 0.5, 0.5)
    fig.suptitle(f"{visible(title)}  slice against time (drilling)", fontsize=8)
    return save_png(fig, out_path)
