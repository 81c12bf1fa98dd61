"""An animated GIF stepping through the axial slices with the fixations near each slice.

Drawn with Pillow directly (no matplotlib per frame): a few dozen small frames take well under a
second. Slices are subsampled to at most `max_frames` frames. A frame shows slice k with every
fixation whose slice lies within half a frame step (at least 1 slice) of k: filled when on the
slice itself (|dz| < 0.5), outlined when near. Ground truth on the left (orange), prediction on
the right (cyan), each when given.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ctsearcher_jax.data.schema import Scanpath
from ctsearcher_jax.io import atomic_write
from ctsearcher_jax.viz.volume import CTVolume, Window, gaze_to_voxel

GT_COLOUR = (255, 140, 0)
PRED_COLOUR = (0, 220, 255)


def frame_slices(num_slices: int, max_frames: int = 60) -> np.ndarray:
    """0-based slice indices shown, evenly spaced, at most `max_frames` of them."""
    count = min(num_slices, max_frames)
    return np.unique(np.linspace(0, num_slices - 1, count).round().astype(int))


def _panel(volume: CTVolume, window: Window, k: int, scanpaths: Sequence[Scanpath], side: int,
           half_window: float, colour: tuple[int, int, int], label: str):
    n_i, n_j, _ = volume.shape
    grey = (window.apply(volume.data[:, :, k]) * 255).astype(np.uint8)
    img = Image.fromarray(grey).resize((side, side), Image.Resampling.BILINEAR)
    img = img.convert("RGB")
    draw = ImageDraw.Draw(img)
    for sp in scanpaths:
        i, j, kk = gaze_to_voxel(sp.x, sp.y, sp.z, volume.shape)
        dz = np.abs(kk - k)
        near = np.nonzero(dz <= half_window)[0]
        for f in near:
            # Voxel-centre coordinates -> pixel coordinates of the resized panel.
            cx = (j[f] + 0.5) * side / n_j
            cy = (i[f] + 0.5) * side / n_i
            r = 3.0 + 4.0 * math.sqrt(min(float(sp.t[f]), 2.0))
            box = (cx - r, cy - r, cx + r, cy + r)
            if dz[f] < 0.5:
                draw.ellipse(box, fill=colour, outline=(255, 255, 255))
            else:
                draw.ellipse(box, outline=colour, width=1)
    draw.text((3, 2), label, fill=(255, 255, 0))
    draw.text((3, side - 12), f"slice {k + 1}/{volume.shape[2]}", fill=(255, 255, 0))
    return img


def write_slice_gif(volume: CTVolume, window: Window, gt: Sequence[Scanpath],
                    pred: Sequence[Scanpath] | None, out_path: str | os.PathLike[str], *,
                    side: int = 192, max_frames: int = 60, frame_ms: int = 120) -> Path:
    """Write the GIF: one (side x side) panel per non-empty group (ground truth, prediction) side
    by side; loops forever."""
    slices = frame_slices(volume.shape[2], max_frames)
    step = (volume.shape[2] - 1) / max(len(slices) - 1, 1)
    half_window = max(step / 2.0, 1.0)
    frames = []
    for k in slices:
        panels = [_panel(volume, window, int(k), sps, side, half_window, colour, label)
                  for sps, colour, label in ((gt, GT_COLOUR, "ground truth"),
                                             (pred, PRED_COLOUR, "prediction")) if sps]
        frame = Image.new("RGB", (side * len(panels), side))
        for n, p in enumerate(panels):
            frame.paste(p, (n * side, 0))
        # An adaptive palette per frame keeps the CT greys and the two marker colours exact.
        frames.append(frame.quantize(colors=64, method=Image.Quantize.MEDIANCUT))

    def write(f) -> None:
        frames[0].save(f, format="GIF", save_all=True, append_images=frames[1:],
                       duration=frame_ms, loop=0, optimize=True, disposal=1)

    return atomic_write(out_path, write)
