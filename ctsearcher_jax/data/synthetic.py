"""Synthetic CT-ScanGaze: CT-like phantoms and radiologist-like scanpaths, reproducible to the byte.

`synthesize(out_dir, num_cts=..., num_readers=..., seed=...)` writes a dataset in exactly the
format of the CT-ScanGaze release::

    out_dir/cts/<name>.nii.gz                      int16 NIfTI-1, stored value = HU + 1024,
                                                   scl_slope 1, scl_inter -1024
    out_dir/data_simplified_split_matched_pt.json  one record per (CT, reader)
    out_dir/synthetic_meta.json                    sidecar: lesions, spacing, reader styles

Phantom (`make_phantom`). A chest-abdomen-pelvis CT in Hounsfield units, built in millimetres so
that any array shape renders the same anatomy: air (-1000) around an elliptic body with
subcutaneous fat (about -100), a muscle wall (about 45 HU), lungs (about -850), heart, aorta,
IVC, liver, spleen, stomach (with a gas cap), kidneys, bowel loops with gas, bladder,
vertebrae (cortical shell about 1000 HU, cancellous about 300 HU, discs, canal, posterior arch),
ribs, sternum, iliac bones and femoral heads (400-1500 HU), then 2-4 lesions of varying size and
contrast (solid and ground-glass lung nodules, hypo- and hyperdense liver lesions, renal cysts,
splenic lesions, lytic and sclerotic vertebral lesions), and mild Gaussian noise. Edges are
partial-volume blended over about one voxel, so a lesion never falls between voxels.
The field of view is 320-420 mm in-plane and 330-420 mm along the body, so the spacing is
`fov / shape`: about 0.7 mm in-plane and 1.5-2 mm per slice at 512 x 512 x 200-250, and about
6 mm x 8 mm at the small default shape (64, 64, 48).

Volume axes and orientation. Array axis i (0) runs anterior -> posterior (image rows), j (1) runs
patient right -> left (image columns, radiological display), k (2) runs superior -> inferior
(slice 1 is the top of the chest). The affine says exactly that (axis codes P, L, I) with the
spacing on its diagonal; qform and sform are set (code 1), units mm and s.

Gaze coordinates (DESIGN.md). Volume axes (i, j, k) map to gaze (Y, X, Z). X and Y are 1-based
pixels of a 512 x 512 frame whatever the in-plane size: voxel centre j (0-based) is at
`X = (j + 0.5) * 512 / J + 0.5` (so for J = 512, X = j + 1), and likewise `Y` from i and I.
Z is the 1-based slice number `k + 1`, an integer in [1, K]. `voxel_to_gaze` and
`gaze_to_voxel` implement the mapping.

Reading model (`make_scanpath`). A reader drills through the slices from top to bottom: each
search fixation either advances (exponential step), stays on the slice (in-plane search) or
backtracks a few slices, with reader-specific probabilities. In-plane, search fixations land on
tissue of the current slice (never outside the body), spread around the slice's centre by a
reader-specific factor, and stay near the previous point for a few fixations before jumping.
When the drilling reaches a lesion the reader detects it with a probability that grows with its
size and contrast, and dwells on it: several fixations inside it, scrolling back and forth over
its slices, each lasting longer than a search fixation. Some lesions are revisited later
(a back-jump in Z). Durations are log-normal with a median of about 0.25 s. Readers differ
systematically: reader r has a fixed "thoroughness" (golden-ratio sequence over r) that sets
its fixation count, drilling speed, backtracking, search spread, durations, dwell and
sensitivity, so the same reader behaves alike on every CT.

Reproducibility. Every CT and every (CT, reader) draws from its own `numpy.random.SeedSequence`
keyed by (seed, index), so adding CTs or readers does not change the existing ones; gzip is
written with mtime 0 and no file name, JSON with fixed key order and rounded numbers
(X, Y: 2 decimals, Z: integer, T: 3 decimals, T >= 0.05 s).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import math
import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from ctsearcher_jax.config import GAZE_FRAME
from ctsearcher_jax.errors import ConfigError, DataError
from ctsearcher_jax.io import atomic_write, atomic_write_text

DATASET_JSON = "data_simplified_split_matched_pt.json"
META_JSON = "synthetic_meta.json"
CT_DIR = "cts"
# Small enough for CPU tests and the demo; the feature extractor pads to 96 anyway.
DEFAULT_SHAPE: tuple[int, int, int] = (64, 64, 48)
MIN_SHAPE: tuple[int, int, int] = (16, 16, 8)
# Stored int16 value = HU - HU_INTERCEPT; the NIfTI header carries scl_slope 1, scl_inter -1024.
HU_INTERCEPT = -1024.0
AIR_HU = -1000.0
TASK = "free reading of a chest-abdomen-pelvis CT"
TEST_FRACTION = 0.25
GENERATOR_VERSION = 1

# Seed-sequence keys: the spawn "streams" of one dataset seed.
_STREAM_CT, _STREAM_READER, _STREAM_SCANPATH, _STREAM_SPLIT = 1, 2, 3, 4


# ----------------------------------------------------------------------------------------------
# Coordinates
# ----------------------------------------------------------------------------------------------

def voxel_to_gaze(ijk: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Voxel indices (..., 3) as (i, j, k), 0-based, float -> gaze (..., 3) as (X, Y, Z).

    X, Y in the 512 frame (pixel centres at 1..512 when the slice is 512 wide); Z = k + 1.
    """
    ijk = np.asarray(ijk, dtype=np.float64)
    i, j, k = ijk[..., 0], ijk[..., 1], ijk[..., 2]
    x = (j + 0.5) * GAZE_FRAME / shape[1] + 0.5
    y = (i + 0.5) * GAZE_FRAME / shape[0] + 0.5
    return np.stack([x, y, k + 1.0], axis=-1)


def gaze_to_voxel(xyz: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Inverse of `voxel_to_gaze`: gaze (..., 3) (X, Y, Z) -> voxel indices (..., 3) (i, j, k)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    j = (x - 0.5) * shape[1] / GAZE_FRAME - 0.5
    i = (y - 0.5) * shape[0] / GAZE_FRAME - 0.5
    return np.stack([i, j, z - 1.0], axis=-1)


def phantom_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """(4, 4) voxel -> RAS+ mm affine: i -> posterior, j -> patient left, k -> inferior.

    The volume centre sits on the world z axis; slice k = 0 is at z = 0 (the top of the scan).
    """
    si, sj, sk = (float(s) for s in spacing)
    aff = np.zeros((4, 4))
    aff[0, 1] = -sj          # j+ -> x- (toward patient left)
    aff[1, 0] = -si          # i+ -> y- (toward posterior)
    aff[2, 2] = -sk          # k+ -> z- (toward inferior)
    aff[0, 3] = (shape[1] - 1) / 2.0 * sj
    aff[1, 3] = (shape[0] - 1) / 2.0 * si
    aff[3, 3] = 1.0
    return aff


# ----------------------------------------------------------------------------------------------
# Phantom
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Lesion:
    """One lesion of a phantom.

    center_ijk: voxel indices (float, 0-based) of the centre; radii_ijk: semi-axes in voxels;
    radius_mm: nominal radius in mm (mean of the three semi-axes); hu: lesion attenuation;
    background_hu: attenuation of the tissue it sits in (contrast = hu - background_hu).
    """

    kind: str
    organ: str
    location: str
    center_ijk: tuple[float, float, float]
    radii_ijk: tuple[float, float, float]
    radius_mm: float
    hu: float
    background_hu: float

    @property
    def contrast_hu(self) -> float:
        return self.hu - self.background_hu

    def center_gaze(self, shape: Sequence[int]) -> tuple[float, float, float]:
        """Centre in gaze coordinates (X, Y, Z), Z possibly fractional."""
        return tuple(float(v) for v in voxel_to_gaze(np.array(self.center_ijk), shape))

    def radii_gaze(self, shape: Sequence[int]) -> tuple[float, float, float]:
        """Semi-axes in gaze units (X pixels, Y pixels, slices)."""
        ri, rj, rk = self.radii_ijk
        return (rj * GAZE_FRAME / shape[1], ri * GAZE_FRAME / shape[0], rk)

    def to_json(self, shape: Sequence[int]) -> dict[str, Any]:
        x, y, z = self.center_gaze(shape)
        rx, ry, rz = self.radii_gaze(shape)
        return {
            "kind": self.kind, "organ": self.organ, "location": self.location,
            "center_ijk": [round(v, 3) for v in self.center_ijk],
            "radii_ijk": [round(v, 3) for v in self.radii_ijk],
            "center_gaze": {"X": round(x, 2), "Y": round(y, 2), "Z": round(z, 2)},
            "radii_gaze": {"X": round(rx, 2), "Y": round(ry, 2), "Z": round(rz, 2)},
            "radius_mm": round(self.radius_mm, 2), "hu": round(self.hu, 1),
            "background_hu": round(self.background_hu, 1),
        }


class _Canvas:
    """A float32 HU volume plus millimetre coordinates of its voxel centres.

    p: (I,) mm, posterior positive, 0 at the in-plane centre; l: (J,) mm, patient-left positive;
    s: (K,) mm below the top of the scan.
    """

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]):
        self.shape = shape
        self.spacing = np.asarray(spacing, dtype=np.float64)
        I, J, K = shape
        si, sj, sk = spacing
        self.p = ((np.arange(I) + 0.5) * si - I * si / 2.0).astype(np.float32)
        self.l = ((np.arange(J) + 0.5) * sj - J * sj / 2.0).astype(np.float32)
        self.s = ((np.arange(K) + 0.5) * sk).astype(np.float32)
        self.vol = np.full(shape, AIR_HU, dtype=np.float32)

    def _range(self, axis: int, lo_mm: float, hi_mm: float) -> slice:
        """Voxel slice covering [lo_mm, hi_mm] on an axis, plus a 2-voxel margin."""
        coords = (self.p, self.l, self.s)[axis]
        step = float(self.spacing[axis])
        start = int(np.searchsorted(coords, lo_mm - 2 * step))
        stop = int(np.searchsorted(coords, hi_mm + 2 * step, side="right"))
        return slice(start, stop)

    def _box(self, center: Sequence[float], half: Sequence[float]):
        sl = tuple(self._range(a, center[a] - half[a], center[a] + half[a]) for a in range(3))
        if any(s.stop <= s.start for s in sl):
            return None
        P = self.p[sl[0]][:, None, None]
        L = self.l[sl[1]][None, :, None]
        S = self.s[sl[2]][None, None, :]
        return sl, P, L, S

    def _blend(self, sl, mask: np.ndarray, hu: float) -> None:
        view = self.vol[sl]
        view += mask * (np.float32(hu) - view)

    def ellipsoid_mask(self, center, radii, P, L, S) -> np.ndarray:
        """Soft (partial-volume) mask of an ellipsoid: 1 inside, 0 outside, ~1 voxel ramp.

        Uses the first-order (Sampson) distance to the surface, in voxel units.
        """
        sp = self.spacing
        dp, dl, ds = (P - center[0]), (L - center[1]), (S - center[2])
        rp, rl, rs = radii
        f = (dp / rp) ** 2 + (dl / rl) ** 2 + (ds / rs) ** 2 - 1.0
        grad = 2.0 * np.sqrt((dp * sp[0] / rp ** 2) ** 2 + (dl * sp[1] / rl ** 2) ** 2
                             + (ds * sp[2] / rs ** 2) ** 2)
        d = f / np.maximum(grad, 1e-6)
        return np.clip(0.5 - d, 0.0, 1.0).astype(np.float32)

    def ellipsoid(self, center, radii, hu: float) -> None:
        """Paint an ellipsoid: center (p, l, s) mm, radii (rp, rl, rs) mm."""
        box = self._box(center, radii)
        if box is None:
            return
        sl, P, L, S = box
        self._blend(sl, self.ellipsoid_mask(center, radii, P, L, S), hu)

    def cylinder_mask(self, center_pl, radii_pl, s0, s1, P, L, S) -> np.ndarray:
        sp = self.spacing
        dp, dl = P - center_pl[0], L - center_pl[1]
        rp, rl = radii_pl
        f = (dp / rp) ** 2 + (dl / rl) ** 2 - 1.0
        grad = 2.0 * np.sqrt((dp * sp[0] / rp ** 2) ** 2 + (dl * sp[1] / rl ** 2) ** 2)
        m_in = np.clip(0.5 - f / np.maximum(grad, 1e-6), 0.0, 1.0)
        d_s = np.maximum(s0 - S, S - s1) / sp[2]
        m_s = np.clip(0.5 - d_s, 0.0, 1.0)
        return np.minimum(m_in, m_s).astype(np.float32)

    def cylinder(self, center_pl, radii_pl, s0: float, s1: float, hu: float) -> None:
        """Paint an elliptic cylinder along s: in-plane centre (p, l), radii (rp, rl), s in [s0, s1]."""
        mid = (s0 + s1) / 2.0
        box = self._box((center_pl[0], center_pl[1], mid), (radii_pl[0], radii_pl[1], (s1 - s0) / 2.0))
        if box is None:
            return
        sl, P, L, S = box
        self._blend(sl, self.cylinder_mask(center_pl, radii_pl, s0, s1, P, L, S), hu)

    def value_at(self, p: float, l: float, s: float) -> float:
        """HU of the voxel nearest to (p, l, s) mm."""
        idx = [int(np.clip(round(v), 0, n - 1)) for v, n in zip(self.to_index(p, l, s), self.shape)]
        return float(self.vol[idx[0], idx[1], idx[2]])

    def to_index(self, p: float, l: float, s: float) -> tuple[float, float, float]:
        """mm -> fractional voxel indices (i, j, k)."""
        I, J, K = self.shape
        si, sj, sk = self.spacing
        return (float((p + I * si / 2.0) / si - 0.5), float((l + J * sj / 2.0) / sj - 0.5),
                float(s / sk - 0.5))


@dataclasses.dataclass(frozen=True)
class _Host:
    """Where a kind of lesion may sit: an ellipsoid (mm) and the HU band of its tissue."""

    organ: str
    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    hu_band: tuple[float, float]


# kind -> (host organ group, HU range, radius range mm, relative frequency)
_LESION_KINDS: dict[str, tuple[str, tuple[float, float], tuple[float, float], float]] = {
    "solid pulmonary nodule": ("lung", (20.0, 60.0), (3.0, 12.0), 3.0),
    "ground-glass nodule": ("lung", (-550.0, -350.0), (5.0, 14.0), 1.0),
    "hypodense liver lesion": ("liver", (0.0, 30.0), (6.0, 22.0), 2.0),
    "hyperdense liver lesion": ("liver", (100.0, 140.0), (6.0, 16.0), 1.0),
    "renal cyst": ("kidney", (-5.0, 12.0), (5.0, 16.0), 1.5),
    "hypodense splenic lesion": ("spleen", (5.0, 25.0), (5.0, 14.0), 0.7),
    "lytic vertebral lesion": ("vertebra", (20.0, 80.0), (4.0, 9.0), 0.7),
    "sclerotic vertebral lesion": ("vertebra", (950.0, 1300.0), (4.0, 9.0), 0.6),
}


def _vertebral_level(frac: float) -> str:
    """Rough vertebral level name at a fraction of the scan length (0 = top of the chest)."""
    if frac < 0.45:
        return f"T{min(12, 1 + int(frac / 0.45 * 12))}"
    if frac < 0.80:
        return f"L{min(5, 1 + int((frac - 0.45) / 0.35 * 5))}"
    return "S1"


def make_phantom(shape: Sequence[int] = DEFAULT_SHAPE, rng: np.random.Generator | None = None
                 ) -> tuple[np.ndarray, tuple[float, float, float], list[Lesion]]:
    """A chest-abdomen-pelvis CT phantom with lesions.

    Returns (hu, spacing, lesions): hu is an (I, J, K) int16 array of Hounsfield units (axes as in
    the module docstring), spacing (si, sj, sk) in mm, lesions a list of `Lesion`.
    """
    shape = tuple(int(v) for v in shape)
    _check_shape(shape)
    rng = np.random.default_rng(0) if rng is None else rng
    I, J, K = shape
    fov = float(rng.uniform(320.0, 420.0))            # square in-plane field of view, mm
    length = float(rng.uniform(330.0, 420.0))         # scan length (top of chest to pelvis), mm
    spacing = (fov / I, fov / J, length / K)
    cv = _Canvas(shape, spacing)
    C = length

    # Body: outer ellipse (A: half width, B: half depth) tapering slightly along s.
    A0 = float(rng.uniform(0.38, 0.44) * fov)
    B0 = float(rng.uniform(0.64, 0.74) * A0)
    fat = float(rng.uniform(8.0, 22.0))
    wall = float(rng.uniform(8.0, 14.0))
    frac = cv.s / C
    A_s = A0 * (0.94 + 0.08 * frac)                   # (K,) wider toward the pelvis
    B_s = B0 * (1.0 - 0.05 * frac)
    P = cv.p[:, None, None]
    L = cv.l[None, :, None]

    def body_mask(shrink: float) -> np.ndarray:
        a = (A_s - shrink)[None, None, :]
        b = (B_s - shrink)[None, None, :]
        f = (P / b) ** 2 + (L / a) ** 2 - 1.0
        grad = 2.0 * np.sqrt((P * spacing[0] / b ** 2) ** 2 + (L * spacing[1] / a ** 2) ** 2)
        return np.clip(0.5 - f / np.maximum(grad, 1e-6), 0.0, 1.0).astype(np.float32)

    def blend_full(mask: np.ndarray, hu: float, s_lo: float = -1e9, s_hi: float = 1e9) -> None:
        m_s = np.clip(0.5 - np.maximum(s_lo - cv.s, cv.s - s_hi) / spacing[2], 0.0, 1.0)
        mask = mask * m_s[None, None, :].astype(np.float32)
        cv.vol += mask * (np.float32(hu) - cv.vol)

    blend_full(body_mask(0.0), rng.uniform(-110.0, -90.0))                  # subcutaneous fat
    blend_full(body_mask(fat), rng.uniform(40.0, 55.0))                     # muscle wall
    cavity = fat + wall
    A_in, B_in = float(A0 - cavity), float(B0 - cavity)
    cavity_mask = body_mask(cavity)
    blend_full(cavity_mask, rng.uniform(15.0, 35.0), s_hi=0.42 * C)         # mediastinum
    blend_full(cavity_mask, rng.uniform(-100.0, -80.0), s_lo=0.42 * C)      # visceral fat
    del cavity_mask

    def jit(v: float, rel: float = 0.06) -> float:
        return float(v * (1.0 + rng.uniform(-rel, rel)))

    # Bowel loops (soft tissue) with gas, in the lower abdomen.
    loops = []
    for _ in range(int(rng.integers(8, 14))):
        c = (float(rng.uniform(-0.6, 0.25) * B_in), float(rng.uniform(-0.6, 0.6) * A_in),
             float(rng.uniform(0.62, 0.88) * C))
        r = (float(rng.uniform(10, 22)), float(rng.uniform(10, 22)), float(rng.uniform(12, 30)))
        cv.ellipsoid(c, r, rng.uniform(25.0, 40.0))
        loops.append((c, r))
    for idx in rng.choice(len(loops), size=min(4, len(loops)), replace=False):
        c, r = loops[int(idx)]
        rg = float(min(r[0], r[1]) * rng.uniform(0.35, 0.55))
        cv.ellipsoid((c[0] - 0.4 * r[0], c[1], c[2]), (rg, rg, rg * 1.2), rng.uniform(-990.0, -940.0))

    hosts: dict[str, list[_Host]] = {"lung": [], "liver": [], "kidney": [], "spleen": [], "vertebra": []}
    lung_hu = float(rng.uniform(-870.0, -830.0))
    for side, name in ((-1.0, "right lung"), (1.0, "left lung")):
        c = (jit(0.05 * B_in), side * jit(0.47 * A_in), jit(0.22 * C))
        r = (jit(0.78 * B_in), jit(0.42 * A_in), jit(0.21 * C))
        cv.ellipsoid(c, r, lung_hu)
        hosts["lung"].append(_Host(name, c, r, (-950.0, -700.0)))

    cv.ellipsoid((jit(-0.25 * B_in), jit(0.15 * A_in), jit(0.33 * C)),
                 (jit(0.45 * B_in), jit(0.33 * A_in), jit(0.09 * C)), rng.uniform(35.0, 45.0))  # heart
    spine_p = 0.42 * B_in
    cv.cylinder((spine_p - 30.0, 0.12 * A_in), (jit(12.0), jit(12.0)), 0.08 * C, 0.82 * C,
                rng.uniform(38.0, 46.0))                                                         # aorta
    cv.cylinder((spine_p - 28.0, -0.14 * A_in), (jit(10.0), jit(12.0)), 0.40 * C, 0.82 * C,
                rng.uniform(34.0, 42.0))                                                         # IVC
    liver_hu = float(rng.uniform(55.0, 65.0))
    c, r = (jit(-0.05 * B_in), jit(-0.35 * A_in), jit(0.50 * C)), (jit(0.70 * B_in), jit(0.50 * A_in), jit(0.14 * C))
    cv.ellipsoid(c, r, liver_hu)
    hosts["liver"].append(_Host("liver", c, r, (liver_hu - 8, liver_hu + 8)))
    spleen_hu = float(rng.uniform(44.0, 50.0))
    c, r = (jit(0.35 * B_in), jit(0.62 * A_in), jit(0.45 * C)), (jit(0.30 * B_in), jit(0.16 * A_in), jit(0.06 * C))
    cv.ellipsoid(c, r, spleen_hu)
    hosts["spleen"].append(_Host("spleen", c, r, (spleen_hu - 8, spleen_hu + 8)))
    c = (jit(-0.30 * B_in), jit(0.33 * A_in), jit(0.46 * C))
    cv.ellipsoid(c, (jit(0.30 * B_in), jit(0.22 * A_in), jit(0.06 * C)), rng.uniform(15.0, 30.0))  # stomach
    cv.ellipsoid((c[0] - 0.18 * B_in, c[1], c[2] - 0.02 * C), (0.10 * B_in, 0.12 * A_in, 0.03 * C),
                 rng.uniform(-990.0, -950.0))                                                  # gastric gas
    kidney_hu = float(rng.uniform(28.0, 36.0))
    for side, name, drop in ((-1.0, "right kidney", 0.02), (1.0, "left kidney", 0.0)):
        c = (jit(0.50 * B_in), side * jit(0.40 * A_in), jit((0.60 + drop) * C))
        r = (jit(0.20 * B_in), jit(0.11 * A_in), jit(0.07 * C))
        cv.ellipsoid(c, r, kidney_hu)
        hosts["kidney"].append(_Host(name, c, r, (kidney_hu - 8, kidney_hu + 8)))
    cv.ellipsoid((jit(-0.35 * B_in), 0.0, jit(0.93 * C)), (jit(0.25 * B_in), jit(0.22 * A_in), jit(0.06 * C)),
                 rng.uniform(2.0, 12.0))                                                       # bladder

    # Spine: discs, vertebral bodies (cortical shell + cancellous core), canal, posterior arch.
    cortical = float(rng.uniform(950.0, 1200.0))
    cancellous = float(rng.uniform(260.0, 340.0))
    vb_r = (jit(15.0), jit(19.0))
    cv.cylinder((spine_p, 0.0), vb_r, 0.0, C, rng.uniform(75.0, 95.0))                         # discs
    level = float(rng.uniform(25.0, 30.0))
    s = float(rng.uniform(-level, 0.0))
    while s < C:
        s0, s1 = s + 3.0, s + level - 3.0
        cv.cylinder((spine_p, 0.0), vb_r, s0, s1, cortical)
        cv.cylinder((spine_p, 0.0), (vb_r[0] - 3.0, vb_r[1] - 3.0), s0 + 2.0, s1 - 2.0, cancellous)
        s += level
    hosts["vertebra"].append(_Host("vertebra", (spine_p, 0.0, 0.5 * C),
                                   (vb_r[0] - 3.0, vb_r[1] - 3.0, 0.5 * C), (cancellous - 60, cancellous + 60)))
    canal_p = spine_p + vb_r[0] + 9.0
    cv.cylinder((canal_p, 0.0), (13.0, 14.0), 0.0, C, rng.uniform(700.0, 900.0))                # arch
    cv.cylinder((canal_p + 15.0, 0.0), (9.0, 4.0), 0.0, C, rng.uniform(700.0, 900.0))           # spinous
    cv.cylinder((canal_p, 0.0), (7.0, 8.0), 0.0, C, rng.uniform(5.0, 20.0))                     # canal

    # Ribs: arcs inside the chest wall, sloping down anteriorly; the sternum at the front.
    rib_hu = float(rng.uniform(700.0, 950.0))
    rib_a, rib_b = A_in - 3.0, B_in - 3.0
    theta = np.arctan2(cv.p[:, None], cv.l[None, :])             # 0 at patient left, pi/2 posterior
    anterior = np.clip(-cv.p[:, None] / B0, 0.0, 1.0)             # (I, 1)
    keep = (np.abs(np.sin(theta) + 1.0) > 0.04) & (np.abs(np.sin(theta) - 1.0) > 0.02)
    ring_f = (cv.p[:, None] / rib_b) ** 2 + (cv.l[None, :] / rib_a) ** 2
    ring = np.clip(1.0 - np.abs(np.sqrt(ring_f) - 1.0) * min(rib_a, rib_b) / 4.5, 0.0, 1.0)
    ring = (ring * keep).astype(np.float32)                       # (I, J)
    s = float(rng.uniform(0.02, 0.05) * C)
    while s < 0.45 * C:
        centre_s = s + 30.0 * anterior                            # (I, 1) anterior ends lower
        d_s = np.abs(cv.s[None, None, :] - centre_s[:, :, None]) - 5.0
        m = ring[:, :, None] * np.clip(0.5 - d_s / spacing[2], 0.0, 1.0)
        cv.vol += m.astype(np.float32) * (np.float32(rib_hu) - cv.vol)
        s += float(rng.uniform(22.0, 27.0))
    cv.cylinder((-B_in + 8.0, 0.0), (6.0, 14.0), 0.06 * C, 0.36 * C, rng.uniform(450.0, 600.0))  # sternum

    # Pelvis: iliac wings (shell + marrow) and femoral heads.
    for side in (-1.0, 1.0):
        c, r = (0.15 * B_in, side * 0.55 * A_in), (0.35 * B_in, 0.20 * A_in)
        cv.cylinder(c, r, 0.80 * C, 0.97 * C, cortical * 0.8)
        cv.cylinder(c, (r[0] - 5.0, r[1] - 5.0), 0.80 * C, 0.97 * C, cancellous)
        cv.ellipsoid((0.0, side * 0.50 * A_in, 0.99 * C), (22.0, 22.0, 22.0), cortical * 0.7)
        cv.ellipsoid((0.0, side * 0.50 * A_in, 0.99 * C), (17.0, 17.0, 17.0), cancellous)

    lesions = _add_lesions(cv, hosts, rng)

    noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(rng.uniform(6.0, 12.0))
    cv.vol += noise
    hu = np.clip(np.rint(cv.vol), -1024, 3071).astype(np.int16)
    return hu, tuple(float(v) for v in spacing), lesions


def _add_lesions(cv: _Canvas, hosts: dict[str, list[_Host]], rng: np.random.Generator) -> list[Lesion]:
    """Paint 2-4 lesions into host tissue (checked on the canvas) and describe them."""
    kinds = list(_LESION_KINDS)
    weights = np.array([_LESION_KINDS[k][3] for k in kinds])
    count = int(rng.integers(2, 5))
    C = cv.s[-1] + cv.spacing[2] / 2.0
    min_r = float(max(cv.spacing[0], cv.spacing[1]))   # a lesion is at least ~2 voxels across
    lesions: list[Lesion] = []
    for _try in range(6 * count):
        if len(lesions) == count:
            break
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        group, hu_rng, r_rng, _w = _LESION_KINDS[kind]
        host = hosts[group][int(rng.integers(len(hosts[group])))]
        r_mm = float(max(rng.uniform(*r_rng), min_r))
        # Jittered semi-axes, at least one voxel each so the centre voxel is lesion tissue.
        radii = tuple(float(max(r_mm * rng.uniform(0.85, 1.15), cv.spacing[a])) for a in range(3))
        hu = float(rng.uniform(*hu_rng))
        for _attempt in range(40):
            u = rng.normal(size=3)
            u *= rng.uniform() ** (1 / 3) / max(np.linalg.norm(u), 1e-9)
            c = tuple(float(host.center[a] + 0.75 * u[a] * max(host.radii[a] - radii[a], 0.0))
                      for a in range(3))
            bg = cv.value_at(*c)
            clear = all(np.linalg.norm((np.array(c) - np.array(_mm(cv, les))) /
                                       (np.array(radii) + np.array(_radii_mm(cv, les)))) > 1.2
                        for les in lesions)
            if host.hu_band[0] <= bg <= host.hu_band[1] and clear:
                break
        else:
            continue  # no room for this lesion here: draw another kind
        cv.ellipsoid(c, radii, hu)
        f = c[2] / C
        if group == "lung":
            zone = "upper" if f < 0.15 else ("middle" if f < 0.28 else "lower")
            location = f"{host.organ}, {zone} zone"
        elif group == "liver":
            left = c[1] > host.center[1] + 0.5 * host.radii[1]
            location = "liver, " + ("left lobe" if left else "right lobe")
        elif group == "vertebra":
            location = f"{_vertebral_level(f)} vertebral body"
        else:
            location = host.organ
        lesions.append(Lesion(
            kind=kind, organ=host.organ, location=location,
            center_ijk=cv.to_index(*c),
            radii_ijk=tuple(float(radii[a] / cv.spacing[a]) for a in range(3)),
            radius_mm=float(np.mean(radii)), hu=hu, background_hu=bg))
    return lesions


def _mm(cv: _Canvas, les: Lesion) -> tuple[float, float, float]:
    I, J, K = cv.shape
    si, sj, sk = cv.spacing
    i, j, k = les.center_ijk
    return ((i + 0.5) * si - I * si / 2.0, (j + 0.5) * sj - J * sj / 2.0, (k + 0.5) * sk)


def _radii_mm(cv: _Canvas, les: Lesion) -> tuple[float, float, float]:
    return tuple(float(les.radii_ijk[a] * cv.spacing[a]) for a in range(3))


def make_report(lesions: Sequence[Lesion]) -> str:
    """A short radiology-report-like text naming the lesions (sizes are diameters in mm)."""
    if not lesions:
        return "CT chest, abdomen and pelvis. Findings: no focal lesion. Impression: normal study."
    found = "; ".join(f"{2 * les.radius_mm:.0f} mm {les.kind} ({les.location})" for les in lesions)
    n = len(lesions)
    return (f"CT chest, abdomen and pelvis. Findings: {found}. "
            f"Impression: {n} focal lesion{'s' if n != 1 else ''} as described.")


# ----------------------------------------------------------------------------------------------
# Readers and scanpaths
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ReaderStyle:
    """How one reader reads (fixed across CTs). Probabilities are per search fixation."""

    subject: int
    thoroughness: float          # 0 fast ... 1 thorough; every trait below follows from it
    count_level: float           # fixation count: min * (max/min) ** count_level, before noise
    p_stay: float                # stay on the slice (in-plane search)
    p_back: float                # scroll back (backtrack)
    back_scale: float            # mean backtrack size, in units of the mean forward step
    spread: float                # in-plane spread around the slice centre (1 = whole body)
    p_jump: float                # jump to a new in-plane region (else look near the last point)
    local_sd_px: float           # in-plane step when looking nearby, 512-frame pixels
    duration_median_s: float     # median search-fixation duration, seconds
    duration_sigma: float        # log-normal sigma of durations
    dwell_scale: float           # lesion-fixation duration / search-fixation duration
    dwell_fixations: float       # mean extra fixations on a detected lesion
    sensitivity: float           # detection probability of a large, high-contrast lesion
    p_revisit: float             # probability of coming back to a detected lesion later


def reader_style(seed: int, subject: int) -> ReaderStyle:
    """The style of reader `subject` (1-based) for a dataset seed.

    Thoroughness follows the golden-ratio sequence over subjects (0.5, 0.12, 0.74, 0.36, ...), so
    readers differ systematically for every seed; the seed adds a small jitter to each trait.
    """
    a = (0.5 + (subject - 1) * 0.6180339887498949) % 1.0
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_READER, subject]))

    def j(v: float) -> float:
        return float(v * rng.uniform(0.95, 1.05))

    return ReaderStyle(
        subject=subject, thoroughness=a,
        count_level=float(np.clip(j(0.1 + 0.8 * a), 0.0, 1.0)),
        p_stay=j(0.15 + 0.25 * a), p_back=j(0.05 + 0.07 * a), back_scale=j(2.0 + 2.0 * a),
        spread=float(np.clip(j(0.65 + 0.3 * a), 0.3, 1.0)), p_jump=j(0.5 - 0.2 * a),
        local_sd_px=j(12.0 + 12.0 * a), duration_median_s=j(0.21 + 0.06 * a),
        duration_sigma=j(0.45), dwell_scale=j(1.7 + 1.0 * a), dwell_fixations=j(3.0 + 5.0 * a),
        sensitivity=float(np.clip(j(0.85 + 0.13 * a), 0.0, 0.99)), p_revisit=j(0.2 + 0.45 * a))


class GazeSequence(NamedTuple):
    """One scanpath: x, y (512-frame pixels), z (slice numbers), t (seconds); each (n,) float64."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    t: np.ndarray


def _conspicuity(les: Lesion) -> float:
    """0..1: how easily a lesion is seen (size and contrast)."""
    size = 1.0 - math.exp(-les.radius_mm / 5.0)
    contrast = min(1.0, abs(les.contrast_hu) / 50.0) ** 0.25
    return size * contrast


def make_scanpath(hu: np.ndarray, lesions: Sequence[Lesion], style: ReaderStyle,
                  rng: np.random.Generator, *, min_fixations: int = 50,
                  max_fixations: int = 400) -> GazeSequence:
    """One reader's scanpath over one volume (see the module docstring for the model).

    hu: (I, J, K) Hounsfield units (any dtype). Returns rounded values exactly as written to
    the dataset: X, Y in [1, 512] (2 decimals), Z integer slice numbers in [1, K], T >= 0.05 s.
    """
    if not 1 <= min_fixations <= max_fixations:
        raise ConfigError(f"min_fixations ({min_fixations}) and max_fixations ({max_fixations}) "
                          f"must satisfy 1 <= min <= max")
    I, J, K = hu.shape
    lo, hi = float(min_fixations), float(max_fixations)
    base = lo * (hi / lo) ** style.count_level
    n_total = int(np.clip(round(base * math.exp(0.15 * rng.standard_normal())
                                * (1.0 + 0.05 * len(lesions))), min_fixations, max_fixations))

    # Lesion episodes: (lesion index, number of fixations, is_revisit).
    order = sorted(range(len(lesions)), key=lambda q: lesions[q].center_ijk[2])
    episodes: list[list[int]] = []
    for q in order:
        les = lesions[q]
        p_detect = style.sensitivity * (0.4 + 0.6 * _conspicuity(les))
        detected = rng.uniform() < p_detect
        size = min(2.0, les.radius_mm / 10.0)
        m = 2 + int(rng.poisson(style.dwell_fixations * (0.6 + 0.4 * size)))
        revisit = rng.uniform() < style.p_revisit
        m2 = 1 + int(rng.poisson(0.4 * style.dwell_fixations))
        if detected:
            episodes.append([q, m, 0])
            if revisit:
                episodes.append([q, m2, 1])
    cap = n_total // 2                     # at least half the fixations are search
    total = sum(e[1] for e in episodes)
    if total > cap:
        for e in episodes:
            e[1] = int(e[1] * cap / total)
        episodes = [e for e in episodes if e[1] >= 1]
    n_search = n_total - sum(e[1] for e in episodes)

    # Drilling: slice position of each search fixation (continuous, 0-based k).
    u = rng.uniform(size=n_search)
    steps = np.where(u < style.p_back, -rng.exponential(style.back_scale, n_search),
                     np.where(u < style.p_back + style.p_stay, 0.0, rng.exponential(1.0, n_search)))
    steps[0] = 0.0
    c = np.cumsum(steps)
    k_start = rng.uniform(0.0, 0.03) * (K - 1)
    k_end = (K - 1) - rng.uniform(0.0, 0.03) * (K - 1)
    span = c.max() - c.min()
    kz = k_start + (k_end - k_start) * ((c - c.min()) / span if span > 0 else np.zeros_like(c))
    ks = np.clip(np.rint(kz), 0, K - 1).astype(np.int64)

    # In-plane search: tissue voxels of the current slice (a strided grid keeps memory small).
    stride = max(1, int(math.ceil(max(I, J) / 128)))
    sub = np.asarray(hu[::stride, ::stride, :]) > -950
    kk, ii, jj = np.nonzero(np.moveaxis(sub, 2, 0))        # sorted by slice
    counts = np.bincount(kk, minlength=K)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cen_i = np.bincount(kk, weights=ii, minlength=K) / np.maximum(counts, 1) * stride
    cen_j = np.bincount(kk, weights=jj, minlength=K) / np.maximum(counts, 1) * stride
    cen_i = np.where(counts > 0, cen_i, (I - 1) / 2.0)
    cen_j = np.where(counts > 0, cen_j, (J - 1) / 2.0)
    pick = offsets[ks] + np.floor(rng.uniform(size=n_search) * np.maximum(counts[ks], 1)).astype(np.int64)
    pick = np.minimum(pick, max(len(kk) - 1, 0))
    if len(kk):
        vi = np.where(counts[ks] > 0, ii[pick] * stride, cen_i[ks]) + rng.uniform(-0.5, stride - 0.5, n_search)
        vj = np.where(counts[ks] > 0, jj[pick] * stride, cen_j[ks]) + rng.uniform(-0.5, stride - 0.5, n_search)
    else:
        vi, vj = np.full(n_search, cen_i[0]), np.full(n_search, cen_j[0])
    vi = cen_i[ks] + style.spread * (vi - cen_i[ks])
    vj = cen_j[ks] + style.spread * (vj - cen_j[ks])
    anchors = voxel_to_gaze(np.stack([vi, vj, kz], axis=-1), hu.shape)
    jump = rng.uniform(size=n_search) < style.p_jump
    jump[0] = True
    held = np.maximum.accumulate(np.where(jump, np.arange(n_search), 0))   # last jump index
    sx = anchors[held, 0] + rng.normal(0.0, style.local_sd_px, n_search) * ~jump
    sy = anchors[held, 1] + rng.normal(0.0, style.local_sd_px, n_search) * ~jump
    mu = math.log(style.duration_median_s)
    st = np.exp(mu + style.duration_sigma * rng.standard_normal(n_search))

    # Lesion fixations, keyed so that a stable sort slots them into the search sequence.
    keys = [np.arange(n_search, dtype=np.float64)]
    xs, ys, zs, ts = [sx], [sy], [kz + 1.0], [st]
    first_visit: dict[int, int] = {}
    for e_idx, (q, m, is_revisit) in enumerate(episodes):
        les = lesions[q]
        ci, cj, ck = les.center_ijk
        ri, rj, rk = les.radii_ijk
        if not is_revisit:
            reach = int(np.searchsorted(np.maximum.accumulate(kz), ck - rk))
            at = min(n_search, reach + int(rng.integers(0, 3)))
            first_visit[q] = at
        else:
            at = int(rng.integers(min(first_visit.get(q, 0) + 1, n_search), n_search + 1))
        li = ci + rng.normal(0.0, 0.45, m) * ri
        lj = cj + rng.normal(0.0, 0.45, m) * rj
        lk = np.clip(ck + rng.normal(0.0, 0.5, m) * rk, ck - rk, ck + rk)
        g = voxel_to_gaze(np.stack([li, lj, lk], axis=-1), hu.shape)
        xs.append(g[:, 0] + rng.normal(0.0, 3.0, m))
        ys.append(g[:, 1] + rng.normal(0.0, 3.0, m))
        zs.append(g[:, 2])
        ts.append(np.exp(mu + math.log(style.dwell_scale) + style.duration_sigma * rng.standard_normal(m)))
        keys.append(at - 0.5 + 1e-3 * e_idx + 1e-6 * np.arange(m))
    order_idx = np.argsort(np.concatenate(keys), kind="stable")
    x = np.concatenate(xs)[order_idx]
    y = np.concatenate(ys)[order_idx]
    z = np.concatenate(zs)[order_idx]
    t = np.concatenate(ts)[order_idx]
    return GazeSequence(
        x=np.round(np.clip(x, 1.0, GAZE_FRAME), 2),
        y=np.round(np.clip(y, 1.0, GAZE_FRAME), 2),
        z=np.clip(np.rint(z), 1, K).astype(np.float64),
        t=np.round(np.clip(t, 0.05, 4.0), 3))


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

def nifti_gz_bytes(hu: np.ndarray, spacing: Sequence[float]) -> bytes:
    """A gzipped NIfTI-1 file of an int16 HU volume, byte-identical for identical inputs.

    Stored value = HU + 1024 with scl_slope 1, scl_inter -1024 (readers must apply the scaling,
    as nibabel's `get_fdata` does). The gzip header carries mtime 0 and no file name.
    """
    import nibabel as nib

    hu = np.asarray(hu)
    stored = (hu.astype(np.int32) - int(HU_INTERCEPT)).astype(np.int16)
    affine = phantom_affine(hu.shape, spacing)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    img = nib.Nifti1Image(stored, affine, hdr)
    img.header.set_zooms(tuple(float(s) for s in spacing))
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_slope_inter(1.0, HU_INTERCEPT)
    img.header["descrip"] = b"ctsearcher-jax synthetic CT phantom"
    img.header["cal_min"] = -1024
    img.header["cal_max"] = 3071
    raw = img.to_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(raw)
    return buf.getvalue()


@dataclasses.dataclass(frozen=True)
class SynthSummary:
    """What `synthesize` wrote."""

    out_dir: Path
    dataset_json: Path
    meta_json: Path
    ct_paths: tuple[Path, ...]
    shape: tuple[int, int, int]
    num_cts: int
    num_readers: int
    num_scanpaths: int
    num_fixations: int
    num_lesions: int
    splits: dict[str, int]        # CTs per split

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        split = ", ".join(f"{k} {v}" for k, v in self.splits.items())
        return [f"{self.num_cts} CTs of shape {self.shape} ({split}), {self.num_readers} readers, "
                f"{self.num_scanpaths} scanpaths, {self.num_fixations} fixations, "
                f"{self.num_lesions} lesions",
                f"dataset: {self.dataset_json}",
                f"volumes: {self.out_dir / CT_DIR}",
                f"lesions: {self.meta_json}"]


def _check_shape(shape: Sequence[int]) -> None:
    if len(shape) != 3 or any(int(v) < m for v, m in zip(shape, MIN_SHAPE)):
        raise ConfigError(f"--shape {tuple(shape)}: need three sizes I J K with I, J >= {MIN_SHAPE[0]} "
                          f"and K >= {MIN_SHAPE[2]}")


def split_of_cts(num_cts: int, seed: int) -> list[str]:
    """Deterministic split per CT: about 25 % test, at least one train and one test when >= 2 CTs."""
    n_test = 0 if num_cts < 2 else min(num_cts - 1, max(1, round(TEST_FRACTION * num_cts)))
    perm = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_SPLIT])).permutation(num_cts)
    splits = ["train"] * num_cts
    for idx in perm[:n_test]:
        splits[int(idx)] = "test"
    return splits


def ct_name(index: int) -> str:
    """File stem and record name of CT `index` (0-based)."""
    return f"synth_{index:04d}"


def synthesize(out_dir: str | os.PathLike[str], *, num_cts: int, num_readers: int, seed: int,
               shape: Sequence[int] = DEFAULT_SHAPE, min_fixations: int = 50,
               max_fixations: int = 400, force: bool = False) -> SynthSummary:
    """Write a synthetic CT-ScanGaze dataset into `out_dir` (see the module docstring).

    Refuses a non-empty `out_dir` unless `force`; with `force`, files of the same names are
    replaced and nothing else is touched. Each file is written atomically, the dataset JSON last.
    """
    shape = tuple(int(v) for v in shape)
    _check_shape(shape)
    if num_cts < 1 or num_readers < 1:
        raise ConfigError(f"--cts {num_cts} --readers {num_readers}: both must be >= 1")
    if not 1 <= min_fixations <= max_fixations:
        raise ConfigError(f"--min-fixations {min_fixations} --max-fixations {max_fixations}: "
                          f"need 1 <= min <= max")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DataError(f"{out}: folder exists and is not empty; choose another --out, or pass "
                        f"--force to replace the synthetic files in it")
    (out / CT_DIR).mkdir(parents=True, exist_ok=True)

    splits = split_of_cts(num_cts, seed)
    styles = [reader_style(seed, r) for r in range(1, num_readers + 1)]
    records: list[dict[str, Any]] = []
    ct_meta: list[dict[str, Any]] = []
    ct_paths: list[Path] = []
    num_lesions = 0
    for c in range(num_cts):
        name = ct_name(c)
        hu, spacing, lesions = make_phantom(
            shape, np.random.default_rng(np.random.SeedSequence([seed, _STREAM_CT, c])))
        path = out / CT_DIR / f"{name}.nii.gz"
        data = nifti_gz_bytes(hu, spacing)
        atomic_write(path, lambda f, d=data: f.write(d))
        ct_paths.append(path)
        report = make_report(lesions)
        num_lesions += len(lesions)
        for style in styles:
            rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_SCANPATH, c, style.subject]))
            g = make_scanpath(hu, lesions, style, rng, min_fixations=min_fixations,
                              max_fixations=max_fixations)
            records.append({
                "name": name, "subject": style.subject, "task": TASK,
                "X": g.x.tolist(), "Y": g.y.tolist(), "Z": [int(v) for v in g.z], "T": g.t.tolist(),
                "length": int(g.x.shape[0]), "split": splits[c], "report": report})
        ct_meta.append({"name": name, "split": splits[c], "file": f"{CT_DIR}/{name}.nii.gz",
                        "shape": list(shape), "spacing_mm": [round(s, 6) for s in spacing],
                        "lesions": [les.to_json(shape) for les in lesions]})

    meta = {
        "generator": "ctsearcher_jax.data.synthetic", "version": GENERATOR_VERSION, "seed": int(seed),
        "shape": list(shape), "gaze_frame": GAZE_FRAME,
        "gaze_mapping": "X = (j + 0.5) * 512 / J + 0.5, Y = (i + 0.5) * 512 / I + 0.5, Z = k + 1 "
                        "for voxel indices (i, j, k), 0-based",
        "hu_storage": "int16 stored = HU + 1024; scl_slope 1, scl_inter -1024",
        "readers": [{k: (round(v, 6) if isinstance(v, float) else v)
                     for k, v in dataclasses.asdict(s).items()} for s in styles],
        "cts": ct_meta,
    }
    meta_path = out / META_JSON
    atomic_write_text(meta_path, json.dumps(meta, indent=1, allow_nan=False) + "\n")
    json_path = out / DATASET_JSON
    atomic_write_text(json_path, json.dumps(records, indent=None, allow_nan=False,
                                            separators=(",", ":")) + "\n")
    counts = {s: splits.count(s) for s in ("train", "test") if splits.count(s)}
    return SynthSummary(out_dir=out, dataset_json=json_path, meta_json=meta_path,
                        ct_paths=tuple(ct_paths), shape=shape, num_cts=num_cts,
                        num_readers=num_readers, num_scanpaths=len(records),
                        num_fixations=sum(r["length"] for r in records), num_lesions=num_lesions,
                        splits=counts)
