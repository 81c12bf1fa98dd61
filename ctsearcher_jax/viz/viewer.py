"""An interactive scanpath viewer: one self-contained HTML file (no server, no network).

`build_viewer_html(volume, paths, ...)` returns the page as one string; `write_viewer` writes it
atomically. The page (template `viewer_template.html` + script `viewer.js`, both package data,
inlined) replays every scanpath over the axial slices with a time line, a drilling plot and
coronal / sagittal projections; see docs/data-and-figures.md, "Interactive viewer".

Encoding of the CT (what lets the page switch windows without a server):

- in-plane size reduced to at most `max_side` (default 256) per axis with a box filter
  (PIL `BOX`, covering the full field of view), every slice kept;
- intensities clipped to `[hu_min, hu_max]` (default [-1024, 3071] HU) and quantised to
  `v = round((value - hu_min) / step)` with `step` = 1 HU by default (a volume whose range spans
  fewer than 256 steps, i.e. not HU, gets 4095 levels over its range instead), so any window of
  at least a few HU width is drawn from the real values;
- `v` (< 65536) split into a high and a low byte, stacked as the top and bottom halves of one
  8-bit greyscale PNG per slice (2h x w pixels), base64 in the page. The page decodes each PNG on a
  canvas, rebuilds `v`, and windows `hu_min + step * v` through a 65536-entry lookup table.

Positions: every fixation is placed with `ctsearcher_jax.viz.volume.gaze_to_voxel`, the mapping
`visualize` uses; the page receives the resulting continuous voxel (i, j, k) and each fixation's
slice index `floor(k + 0.5)` (the slice its Z rounds to), and draws voxel (i, j) at display pixel
`((j + 0.5) * width / J, (i + 0.5) * height / I)`, as the static figures do.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import os
import re
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from PIL import Image

from ctsearcher_jax.config import GAZE_FRAME
from ctsearcher_jax.data.schema import Scanpath
from ctsearcher_jax.errors import DataError
from ctsearcher_jax.io import atomic_write_text
from ctsearcher_jax.metrics.protocol import score_pairs
from ctsearcher_jax.metrics.registry import DEFAULT_FAMILIES
from ctsearcher_jax.text import visible
from ctsearcher_jax.viz.scanpaths import fixation_onsets
from ctsearcher_jax.viz.volume import WINDOWS, CTVolume, gaze_to_voxel, resolve_window

MAX_SIDE = 256             # in-plane pixels per axis at most
HU_RANGE = (-1024.0, 3071.0)  # intensities kept (HU); outside is clipped
HU_STEP = 1.0              # quantisation step (HU)
# The steps `view --hu-step` accepts: 1/16 HU (65521 levels over HU_RANGE: 16 bits hold 65536)
# to the whole range (2 levels).
HU_STEP_RANGE = (1.0 / 16.0, HU_RANGE[1] - HU_RANGE[0])
# Budget for the embedded slices (base64 bytes): the page of a 512 x 512 x 300 CT stays under
# 25 MB. Measured: a synthetic one takes 17.5 MB at 1 HU (docs/data-and-figures.md), so this rarely applies.
MAX_SLICE_BYTES = 24_000_000
# Colours of the scanpaths (ground truth first, then predictions), colour-blind-safe-ish.
GT_COLOURS = ("#ff8c00", "#e6194b", "#ffe119", "#f032e6", "#ff6f91", "#bcf60c")
PRED_COLOURS = ("#00dcff", "#3cb44b", "#4363d8", "#46f0f0", "#aaffc3", "#9a9aff")


@dataclasses.dataclass(frozen=True)
class ViewerPath:
    """One scanpath shown in the viewer.

    label: what the legend says ("reader 1", "prediction 2 (reader 1)"). kind: "gt" or "pred".
    source: the file it was read from (shown in the page).
    """

    label: str
    kind: Literal["gt", "pred"]
    scanpath: Scanpath
    source: str = ""


def default_paths(gt: Sequence[Scanpath], pred: Sequence[Scanpath] | None, *,
                  gt_source: str = "", pred_source: str = "") -> list[ViewerPath]:
    """Legend labels for readers then predictions, in the order given."""
    out = [ViewerPath(f"reader {sp.subject}", "gt", sp, gt_source) for sp in gt]
    out += [ViewerPath(f"prediction {n + 1} (reader {sp.subject})", "pred", sp, pred_source)
            for n, sp in enumerate(pred or ())]
    return out


# ------------------------------------------------------------------ the CT

def _downsample(slice_2d: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    if slice_2d.shape == out_hw:
        return slice_2d
    img = Image.fromarray(np.ascontiguousarray(slice_2d, np.float32), mode="F")
    return np.asarray(img.resize((out_hw[1], out_hw[0]), Image.Resampling.BOX), np.float32)


def display_shape(shape: Sequence[int], max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(h, w) of the encoded slices: (I, J) scaled by one factor so that neither exceeds max_side."""
    n_i, n_j = int(shape[0]), int(shape[1])
    scale = min(1.0, max_side / max(n_i, n_j))
    return max(1, round(n_i * scale)), max(1, round(n_j * scale))


def quantisation(data: np.ndarray, hu_range: tuple[float, float] = HU_RANGE,
                 hu_step: float = HU_STEP) -> tuple[float, float, int]:
    """(offset, step, levels) of the encoding: value = offset + step * v, v in [0, levels).

    HU data: offset = max(min, hu_range[0]), step = hu_step. A volume whose clipped range spans
    fewer than 256 steps (evidently not HU, e.g. scaled to [0, 1]) gets 4096 levels over its range.
    """
    lo = max(float(np.min(data)), hu_range[0])
    hi = min(float(np.max(data)), hu_range[1])
    if not hi > lo:
        hi = lo + 1.0
    step = float(hu_step)
    if (hi - lo) / step < 255:
        step = (hi - lo) / 4095.0
    levels = int(math.floor((hi - lo) / step + 0.5)) + 1
    if levels > 65536:
        raise ValueError(f"{levels} levels do not fit 16 bits; use a coarser step")
    return lo, step, levels


def encode_slices(data: np.ndarray, max_side: int = MAX_SIDE, hu_range: tuple[float, float] = HU_RANGE,
                  hu_step: float = HU_STEP) -> dict[str, Any]:
    """Encode a volume (I, J, K) for the page; see the module docstring.

    Returns {"height", "width", "offset", "step", "levels", "slices": [K base64 PNG strings]}.
    """
    offset, step, levels = quantisation(data, hu_range, hu_step)
    h, w = display_shape(data.shape, max_side)
    hi_clip = offset + step * (levels - 1)
    slices = []
    for k in range(data.shape[2]):
        small = _downsample(np.asarray(data[:, :, k], np.float32), (h, w))
        v = np.rint((np.clip(small, offset, hi_clip) - offset) / step).astype(np.uint16)
        planes = np.concatenate([(v >> 8).astype(np.uint8), (v & 0xFF).astype(np.uint8)], axis=0)
        buf = io.BytesIO()
        Image.fromarray(planes, mode="L").save(buf, format="PNG", compress_level=6)  # 9: 1 % smaller, 2x slower
        slices.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return {"height": h, "width": w, "offset": offset, "step": step, "levels": levels,
            "slices": slices}


def encode_slices_within(data: np.ndarray, max_side: int = MAX_SIDE, hu_step: float = HU_STEP,
                         max_bytes: int | None = MAX_SLICE_BYTES) -> dict[str, Any]:
    """`encode_slices`, doubling the step (up to 16 x `hu_step`) while the slices exceed
    `max_bytes` of base64 (None: no budget). Noise costs about one bit per voxel per halving."""
    step = hu_step
    while True:
        encoded = encode_slices(data, max_side, hu_step=step)
        size = sum(len(s) for s in encoded["slices"])
        if max_bytes is None or size <= max_bytes or step >= 16 * hu_step \
                or encoded["step"] != step:  # not HU: the step is set by the range
            return encoded
        step *= 2


def decode_slice(encoded: Mapping[str, Any], k: int) -> np.ndarray:
    """Inverse of `encode_slices` for slice k: (h, w) float64 values (what the page computes)."""
    planes = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded["slices"][k]))), np.uint16)
    h = encoded["height"]
    v = (planes[:h] << 8) | planes[h:]
    return encoded["offset"] + encoded["step"] * v.astype(np.float64)


# ------------------------------------------------------------------ the scanpaths

def _where(vp: ViewerPath) -> str:
    sp = vp.scanpath
    rec = f"record {sp.index}, " if sp.index >= 0 else ""
    src = f"{vp.source}: " if vp.source else ""
    return f"{src}{rec}CT {sp.name!r}, subject {sp.subject!r} ({vp.label})"


def check_paths(paths: Sequence[ViewerPath], shape: Sequence[int], frame: int = GAZE_FRAME, *,
                clip_z: bool = False) -> None:
    """Refuse empty scanpaths, non-finite values and fixations outside the volume (DataError).

    Inside means X, Y in [0, frame] (the gaze frame; 0-based exports are accepted as by
    `evaluate`) and Z rounding to one of the volume's slices 1..K (0.5 <= Z < K + 0.5).
    clip_z: accept any Z (drawn on the nearest slice and marked outside), for predictions
    made with `z_extent: 512` on a shorter volume (what `predict` writes viewers for).
    """
    if not paths:
        raise DataError("nothing to show: no ground-truth and no predicted scanpath for this CT")
    n_k = int(shape[2])
    for vp in paths:
        sp = vp.scanpath
        if sp.length == 0:
            raise DataError(f"{_where(vp)}: empty scanpath (0 fixations); remove the record or "
                            f"give it fixations")
        arr = sp.as_array()
        if not np.all(np.isfinite(arr)) or np.any(sp.t <= 0):
            raise DataError(f"{_where(vp)}: X, Y, Z must be finite and T > 0 seconds; fix the "
                            f"record (`ctsearcher validate-data` lists every problem)")
        for key, values, lo, hi in (("X", sp.x, 0.0, frame), ("Y", sp.y, 0.0, frame)):
            bad = np.nonzero((values < lo) | (values > hi))[0]
            if bad.size:
                f = int(bad[0])
                raise DataError(f"{_where(vp)}: fixation {f + 1} has {key} = {values[f]:g}, outside "
                                f"the {frame} x {frame} gaze frame [0, {frame}] ({bad.size} such "
                                f"fixation(s)); fix the coordinates")
        bad = np.nonzero((sp.z < 0.5) | (sp.z >= n_k + 0.5))[0]
        if bad.size and not clip_z:
            f = int(bad[0])
            raise DataError(f"{_where(vp)}: fixation {f + 1} has Z = {sp.z[f]:g}, outside the "
                            f"volume's {n_k} slices (Z must round to 1..{n_k}; {bad.size} such "
                            f"fixation(s)); is this the right CT, or were the scanpaths predicted "
                            f"with z_extent 512 for a shorter volume?")


def slice_indices(k: np.ndarray, num_slices: int) -> np.ndarray:
    """0-based slice each fixation is drawn on: the slice its Z rounds to (half up), clipped."""
    return np.clip(np.floor(np.asarray(k, np.float64) + 0.5), 0, num_slices - 1).astype(int)


def path_payload(vp: ViewerPath, shape: Sequence[int], colour: str) -> dict[str, Any]:
    """What the page needs of one scanpath: positions from `gaze_to_voxel`, slices, times."""
    sp = vp.scanpath
    i, j, k = gaze_to_voxel(sp.x, sp.y, sp.z, shape)
    onset = fixation_onsets(sp.t)
    # Fixations of a 0-based export at X or Y = 0 sit half a pixel outside; draw them on the edge.
    outside = (i < -0.5) | (i > shape[0] - 0.5) | (j < -0.5) | (j > shape[1] - 0.5) \
        | (k < -0.5) | (k >= shape[2] - 0.5)
    # text from data is shown as written: line breaks and bidirectional controls made visible
    # (`text.visible`); the page inserts it as text or HTML-escaped (viewer.js `esc`)
    return {"label": visible(vp.label), "kind": vp.kind, "subject": visible(sp.subject),
            "source": visible(vp.source),
            "colour": colour, "i": i.tolist(), "j": j.tolist(), "k": k.tolist(),
            "slice": slice_indices(k, shape[2]).tolist(), "x": sp.x.tolist(), "y": sp.y.tolist(),
            "z": sp.z.tolist(), "t": sp.t.tolist(), "onset": onset.tolist(),
            "outside": outside.tolist(),
            "summary": {"fixations": sp.length, "total_s": float(np.sum(sp.t)),
                        "slices_visited": int(np.unique(slice_indices(k, shape[2])).size)}}


def pair_metrics(reference: Scanpath, others: Sequence[Scanpath],
                 families: Sequence[str] | None = None) -> list[dict[str, float]]:
    """The metrics of each of `others` against `reference` (project metrics; `families` defaults
    to the registry's default families: ScanMatch, MultiMatch, SED).

    Returns one {metric name: value} per other scanpath (NaN becomes None for JSON).
    """
    families = DEFAULT_FAMILIES if families is None else tuple(families)
    if not others:
        return []
    ref = reference.as_array()
    scores = score_pairs([ref] * len(others), [o.as_array() for o in others], families)
    out = []
    for n in range(len(others)):
        row = {}
        for name, values in scores.items():
            v = float(values[n])
            row[name] = v if math.isfinite(v) else None
        if all(f"multimatch_{m}" in scores for m in
               ("vector", "direction", "length", "position", "duration")):
            mm = [row[f"multimatch_{m}"] for m in
                  ("vector", "direction", "length", "position", "duration")]
            row["multimatch_mean"] = None if None in mm else float(np.mean(mm))
        out.append(row)
    return out


# ------------------------------------------------------------------ the page

def _template(name: str) -> str:
    return resources.files("ctsearcher_jax.viz").joinpath(name).read_text(encoding="utf-8")


def viewer_payload(volume: CTVolume, paths: Sequence[ViewerPath], *, name: str,
                   sources: Mapping[str, str] | None = None, window: str = "soft",
                   reference: int | None = None, metrics: Sequence[Mapping[str, float]] | None = None,
                   max_side: int = MAX_SIDE, hu_step: float = HU_STEP,
                   clip_z: bool = False,
                   max_slice_bytes: int | None = MAX_SLICE_BYTES) -> dict[str, Any]:
    """The JSON object embedded in the page (everything it shows); arguments as
    `build_viewer_html`."""
    shape = volume.shape
    check_paths(paths, shape, clip_z=clip_z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a non-HU volume falls back to auto (said in the label)
        initial = resolve_window(window, volume.data)
    auto = resolve_window("auto", volume.data)
    windows = {k: {"width": w, "level": l, "label": f"{k} W{w:g}/L{l:g}"}
               for k, (w, l) in WINDOWS.items()}
    windows["auto"] = {"width": auto.width, "level": auto.level, "label": auto.label}
    initial_name = window.strip().lower()
    if initial.label.startswith("auto"):
        initial_name = "auto"
    elif initial_name not in windows:
        initial_name = "custom"
    gt_n = pred_n = 0
    payload_paths = []
    for vp in paths:
        if vp.kind == "gt":
            colour, gt_n = GT_COLOURS[gt_n % len(GT_COLOURS)], gt_n + 1
        else:
            colour, pred_n = PRED_COLOURS[pred_n % len(PRED_COLOURS)], pred_n + 1
        payload_paths.append(path_payload(vp, shape, colour))
    if metrics is not None:
        for p, row in zip(payload_paths, metrics):
            p["metrics"] = dict(row) if row is not None else None
    encoded = encode_slices_within(volume.data, max_side, hu_step, max_slice_bytes)
    return {
        "name": visible(name),
        "shape": list(shape),
        "spacing": list(volume.spacing),
        "frame": GAZE_FRAME,
        "sources": {visible(k): visible(v) for k, v in (sources or {}).items()},
        "volume_path": visible(volume.path),
        "windows": windows,
        "initial_window": {"name": initial_name, "width": initial.width, "level": initial.level},
        "reference": reference,
        "encoding": {k: v for k, v in encoded.items() if k != "slices"} | {
            "description": (f"slices {encoded['height']} x {encoded['width']} (box-filtered from "
                            f"{shape[0]} x {shape[1]}); values clipped to "
                            f"[{encoded['offset']:g}, "
                            f"{encoded['offset'] + encoded['step'] * (encoded['levels'] - 1):g}] "
                            f"and quantised in steps of {encoded['step']:.4g}")},
        "slices": encoded["slices"],
        "paths": payload_paths,
    }


def render_html(payload: Mapping[str, Any]) -> str:
    """Inline the payload and the script into the template: one HTML string."""
    data = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    # "</script" would end the element early and "<!--" changes how it is parsed; "\u003c" is
    # the same JSON string with no "<" at all (names and paths come from user files).
    data = data.replace("<", "\\u003c")
    script = _template("viewer.js").replace("</script", "<\\/script")
    page = _template("viewer_template.html")
    title = f"{payload['name']}: scanpath viewer"
    # One pass, so text inside the data (a CT named "{{SCRIPT}}") is never substituted again.
    values = {"TITLE": html.escape(title), "DATA": data, "SCRIPT": script}
    return re.sub(r"\{\{(TITLE|DATA|SCRIPT)\}\}", lambda m: values[m.group(1)], page)


def build_viewer_html(volume: CTVolume, paths: Sequence[ViewerPath], *, name: str,
                      sources: Mapping[str, str] | None = None, window: str = "soft",
                      reference: int | None = None,
                      metrics: Sequence[Mapping[str, float]] | None = None,
                      max_side: int = MAX_SIDE, hu_step: float = HU_STEP,
                      clip_z: bool = False,
                      max_slice_bytes: int | None = MAX_SLICE_BYTES) -> str:
    """The viewer page of one CT as one HTML string (see the module docstring).

    volume: the CT (`load_volume`). paths: scanpaths to show, in legend order. sources: what the
    page lists as its inputs ({"dataset": path, "predictions": path, ...}). window: initial window
    (soft | lung | bone | auto | W,L). reference: index into `paths` of the reader the metrics
    compare against, with `metrics` one row per path (None for the reference itself).
    max_side, hu_step: the encoding (module docstring); when the slices take more than
    `max_slice_bytes` (base64), the step doubles until they fit (at most 16 x; the page states
    the step used). clip_z: see `check_paths`.
    Raises DataError for empty scanpaths or fixations outside the volume.
    """
    return render_html(viewer_payload(volume, paths, name=name, sources=sources, window=window,
                                      reference=reference, metrics=metrics, max_side=max_side,
                                      hu_step=hu_step, clip_z=clip_z,
                                      max_slice_bytes=max_slice_bytes))


def metrics_against(paths: Sequence[ViewerPath], reference: int) -> list[dict[str, float] | None]:
    """Metric rows for `viewer_payload`: every path against paths[reference] (None for itself)."""
    others = [n for n in range(len(paths)) if n != reference]
    rows = pair_metrics(paths[reference].scanpath, [paths[n].scanpath for n in others])
    out: list[dict[str, float] | None] = [None] * len(paths)
    for n, row in zip(others, rows):
        out[n] = row
    return out


def write_viewer(path: str | os.PathLike[str], volume: CTVolume, paths: Sequence[ViewerPath],
                 **kwargs: Any) -> tuple[Path, int]:
    """Build the page (`build_viewer_html` arguments) and write it atomically; (path, bytes)."""
    text = build_viewer_html(volume, paths, **kwargs)
    written = atomic_write_text(path, text)
    return written, written.stat().st_size
