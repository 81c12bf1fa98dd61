"""The phantom: a chest-abdomen-pelvis CT in Hounsfield units with 2-4 lesions.

Built in millimetres so that any array shape renders the same anatomy: air (-1000) around an
elliptic body with subcutaneous fat (about -100), a muscle wall (about 45 HU), lungs (about
-850), heart, aorta, IVC, liver, spleen, stomach (with a gas cap), kidneys, bowel loops with gas,
bladder, vertebrae (cortical shell about 1000 HU, cancellous about 300 HU, discs, canal,
posterior arch), ribs, sternum, iliac bones and femoral heads (400-1500 HU), then lesions of
varying size and contrast (solid and ground-glass lung nodules, hypo- and hyperdense liver
lesions, renal cysts, splenic lesions, lytic and sclerotic vertebral lesions), and mild Gaussian
noise. Every edge is partial-volume blended over about one voxel (`soft_edge`), so a lesion
never falls between voxels. Field of view 320-420 mm in-plane and 330-420 mm along the body:
spacing `fov / shape`, about 0.7 mm in-plane and 1.5-2 mm per slice at 512 x 512 x 200-250.

Axes: i anterior -> posterior (image rows), j patient right -> left (columns, radiological
display), k superior -> inferior (slice 1 = top of the chest).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from ctsearcher_jax.config import GAZE_FRAME
from ctsearcher_jax.data.coordinates import voxel_to_gaze
from ctsearcher_jax.errors import ConfigError

# Small enough for CPU tests and the demo; the feature extractor pads to 96 anyway.
DEFAULT_SHAPE: tuple[int, int, int] = (64, 64, 48)
MIN_SHAPE: tuple[int, int, int] = (16, 16, 8)
# Largest phantom: 512 x 512 x 512 voxels (the generator needs ~25 bytes per voxel, ~3.4 GB).
MAX_VOXELS = 1 << 27
AIR_HU = -1000.0


def soft_edge(distance: np.ndarray) -> np.ndarray:
    """Partial-volume weight of a voxel whose centre is `distance` voxels outside a surface
    (negative inside): 1 inside, 0 outside, a linear ramp one voxel wide across the surface."""
    return np.clip(0.5 - distance, 0.0, 1.0)


def soft_ellipse(offsets: Sequence[np.ndarray], radii: Sequence[Any],
                 spacing: Sequence[Any]) -> np.ndarray:
    """`soft_edge` of the ellipse / ellipsoid sum((d_a / r_a)^2) = 1 (offsets d_a and radii r_a in
    mm, spacing in mm per voxel, one entry per axis); the distance is the first-order (Sampson)
    distance f / |grad f| in voxels."""
    f = sum((d / r) ** 2 for d, r in zip(offsets, radii)) - 1.0
    grad = 2.0 * np.sqrt(sum((d * s / r ** 2) ** 2 for d, r, s in zip(offsets, radii, spacing)))
    return soft_edge(f / np.maximum(grad, 1e-6))


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
        return tuple(float(v) for v in voxel_to_gaze(*self.center_ijk, shape))

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
        """Soft mask (float32) of an ellipsoid: center (p, l, s) mm, radii (rp, rl, rs) mm."""
        offsets = (P - center[0]), (L - center[1]), (S - center[2])
        return soft_ellipse(offsets, radii, self.spacing).astype(np.float32)

    def ellipsoid(self, center, radii, hu: float) -> None:
        """Paint an ellipsoid: center (p, l, s) mm, radii (rp, rl, rs) mm."""
        box = self._box(center, radii)
        if box is None:
            return
        sl, P, L, S = box
        self._blend(sl, self.ellipsoid_mask(center, radii, P, L, S), hu)

    def cylinder_mask(self, center_pl, radii_pl, s0, s1, P, L, S) -> np.ndarray:
        """Soft mask (float32) of an elliptic cylinder: in-plane ellipse times the slab [s0, s1]."""
        sp = self.spacing
        m_in = soft_ellipse((P - center_pl[0], L - center_pl[1]), radii_pl, sp)
        m_s = soft_edge(np.maximum(s0 - S, S - s1) / sp[2])
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


@dataclasses.dataclass(frozen=True)
class _Body:
    """The body outline a phantom's organs are placed in (mm): outer half width `A0` and half
    depth `B0`, the same inside the muscle wall (`A_in`, `B_in`), the scan length `C`."""

    A0: float
    B0: float
    A_in: float
    B_in: float
    C: float


def make_phantom(shape: Sequence[int] = DEFAULT_SHAPE, rng: np.random.Generator | None = None
                 ) -> tuple[np.ndarray, tuple[float, float, float], list[Lesion]]:
    """A chest-abdomen-pelvis CT phantom with lesions.

    Returns (hu, spacing, lesions): hu is an (I, J, K) int16 array of Hounsfield units (axes as in
    the module docstring), spacing (si, sj, sk) in mm, lesions a list of `Lesion`. The steps
    below draw from `rng` in a fixed order, so a seed always gives the same phantom.
    """
    shape = tuple(int(v) for v in shape)
    check_shape(shape)
    rng = np.random.default_rng(0) if rng is None else rng
    I, J, K = shape
    fov = float(rng.uniform(320.0, 420.0))            # square in-plane field of view, mm
    length = float(rng.uniform(330.0, 420.0))         # scan length (top of chest to pelvis), mm
    spacing = (fov / I, fov / J, length / K)
    cv = _Canvas(shape, spacing)
    body = _paint_body(cv, rng, fov, length)
    _paint_bowel(cv, rng, body)
    hosts = _paint_organs(cv, rng, body)
    cortical, cancellous = _paint_spine(cv, rng, body, hosts)
    _paint_ribs(cv, rng, body)
    _paint_pelvis(cv, body, cortical, cancellous)
    lesions = _add_lesions(cv, hosts, rng)

    noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(rng.uniform(6.0, 12.0))
    cv.vol += noise
    hu = np.clip(np.rint(cv.vol), -1024, 3071).astype(np.int16)
    return hu, tuple(float(v) for v in spacing), lesions


def _jitter(rng: np.random.Generator, v: float, rel: float = 0.06) -> float:
    """v scaled by a random factor in [1 - rel, 1 + rel] (anatomy varies between CTs)."""
    return float(v * (1.0 + rng.uniform(-rel, rel)))


def _paint_body(cv: _Canvas, rng: np.random.Generator, fov: float, length: float) -> _Body:
    """Subcutaneous fat, the muscle wall, the mediastinum and the visceral fat: an outer
    ellipse (A: half width, B: half depth) tapering slightly along s, shrunk layer by layer."""
    spacing = tuple(float(v) for v in cv.spacing)
    C = length
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
        return soft_ellipse((P, L), (b, a), spacing).astype(np.float32)

    def blend_full(mask: np.ndarray, hu: float, s_lo: float = -1e9, s_hi: float = 1e9) -> None:
        m_s = soft_edge(np.maximum(s_lo - cv.s, cv.s - s_hi) / spacing[2])
        mask = mask * m_s[None, None, :].astype(np.float32)
        cv.vol += mask * (np.float32(hu) - cv.vol)

    blend_full(body_mask(0.0), rng.uniform(-110.0, -90.0))                  # subcutaneous fat
    blend_full(body_mask(fat), rng.uniform(40.0, 55.0))                     # muscle wall
    cavity = fat + wall
    cavity_mask = body_mask(cavity)
    blend_full(cavity_mask, rng.uniform(15.0, 35.0), s_hi=0.42 * C)         # mediastinum
    blend_full(cavity_mask, rng.uniform(-100.0, -80.0), s_lo=0.42 * C)      # visceral fat
    return _Body(A0, B0, float(A0 - cavity), float(B0 - cavity), C)


def _paint_bowel(cv: _Canvas, rng: np.random.Generator, body: _Body) -> None:
    """Bowel loops (soft tissue) with gas, in the lower abdomen."""
    A_in, B_in, C = body.A_in, body.B_in, body.C
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


def _paint_organs(cv: _Canvas, rng: np.random.Generator, body: _Body) -> dict[str, list[_Host]]:
    """Lungs, heart, aorta, IVC, liver, spleen, stomach, kidneys and bladder; the organs lesions
    may grow in, by kind (the vertebra is added by `_paint_spine`)."""
    A_in, B_in, C = body.A_in, body.B_in, body.C

    def jitter(v: float) -> float:
        return _jitter(rng, v)

    hosts: dict[str, list[_Host]] = {"lung": [], "liver": [], "kidney": [], "spleen": [], "vertebra": []}
    lung_hu = float(rng.uniform(-870.0, -830.0))
    for side, name in ((-1.0, "right lung"), (1.0, "left lung")):
        c = (jitter(0.05 * B_in), side * jitter(0.47 * A_in), jitter(0.22 * C))
        r = (jitter(0.78 * B_in), jitter(0.42 * A_in), jitter(0.21 * C))
        cv.ellipsoid(c, r, lung_hu)
        hosts["lung"].append(_Host(name, c, r, (-950.0, -700.0)))

    cv.ellipsoid((jitter(-0.25 * B_in), jitter(0.15 * A_in), jitter(0.33 * C)),
                 (jitter(0.45 * B_in), jitter(0.33 * A_in), jitter(0.09 * C)), rng.uniform(35.0, 45.0))  # heart
    spine_p = 0.42 * B_in
    cv.cylinder((spine_p - 30.0, 0.12 * A_in), (jitter(12.0), jitter(12.0)), 0.08 * C, 0.82 * C,
                rng.uniform(38.0, 46.0))                                                         # aorta
    cv.cylinder((spine_p - 28.0, -0.14 * A_in), (jitter(10.0), jitter(12.0)), 0.40 * C, 0.82 * C,
                rng.uniform(34.0, 42.0))                                                         # IVC
    liver_hu = float(rng.uniform(55.0, 65.0))
    c, r = (jitter(-0.05 * B_in), jitter(-0.35 * A_in), jitter(0.50 * C)), (jitter(0.70 * B_in), jitter(0.50 * A_in), jitter(0.14 * C))
    cv.ellipsoid(c, r, liver_hu)
    hosts["liver"].append(_Host("liver", c, r, (liver_hu - 8, liver_hu + 8)))
    spleen_hu = float(rng.uniform(44.0, 50.0))
    c, r = (jitter(0.35 * B_in), jitter(0.62 * A_in), jitter(0.45 * C)), (jitter(0.30 * B_in), jitter(0.16 * A_in), jitter(0.06 * C))
    cv.ellipsoid(c, r, spleen_hu)
    hosts["spleen"].append(_Host("spleen", c, r, (spleen_hu - 8, spleen_hu + 8)))
    c = (jitter(-0.30 * B_in), jitter(0.33 * A_in), jitter(0.46 * C))
    cv.ellipsoid(c, (jitter(0.30 * B_in), jitter(0.22 * A_in), jitter(0.06 * C)), rng.uniform(15.0, 30.0))  # stomach
    cv.ellipsoid((c[0] - 0.18 * B_in, c[1], c[2] - 0.02 * C), (0.10 * B_in, 0.12 * A_in, 0.03 * C),
                 rng.uniform(-990.0, -950.0))                                                  # gastric gas
    kidney_hu = float(rng.uniform(28.0, 36.0))
    for side, name, drop in ((-1.0, "right kidney", 0.02), (1.0, "left kidney", 0.0)):
        c = (jitter(0.50 * B_in), side * jitter(0.40 * A_in), jitter((0.60 + drop) * C))
        r = (jitter(0.20 * B_in), jitter(0.11 * A_in), jitter(0.07 * C))
        cv.ellipsoid(c, r, kidney_hu)
        hosts["kidney"].append(_Host(name, c, r, (kidney_hu - 8, kidney_hu + 8)))
    cv.ellipsoid((jitter(-0.35 * B_in), 0.0, jitter(0.93 * C)), (jitter(0.25 * B_in), jitter(0.22 * A_in), jitter(0.06 * C)),
                 rng.uniform(2.0, 12.0))                                                       # bladder
    return hosts


def _paint_spine(cv: _Canvas, rng: np.random.Generator, body: _Body,
                 hosts: dict[str, list[_Host]]) -> tuple[float, float]:
    """Discs, vertebral bodies (cortical shell + cancellous core), canal, posterior arch; adds
    the vertebra host; returns the (cortical, cancellous) bone HU the pelvis reuses."""
    B_in, C = body.B_in, body.C
    spine_p = 0.42 * B_in
    cortical = float(rng.uniform(950.0, 1200.0))
    cancellous = float(rng.uniform(260.0, 340.0))
    vb_r = (_jitter(rng, 15.0), _jitter(rng, 19.0))
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
    return cortical, cancellous


def _paint_ribs(cv: _Canvas, rng: np.random.Generator, body: _Body) -> None:
    """Ribs: arcs inside the chest wall, sloping down anteriorly; the sternum at the front."""
    A_in, B_in, B0, C = body.A_in, body.B_in, body.B0, body.C
    spacing = cv.spacing
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
        m = ring[:, :, None] * soft_edge(d_s / spacing[2])
        cv.vol += m.astype(np.float32) * (np.float32(rib_hu) - cv.vol)
        s += float(rng.uniform(22.0, 27.0))
    cv.cylinder((-B_in + 8.0, 0.0), (6.0, 14.0), 0.06 * C, 0.36 * C, rng.uniform(450.0, 600.0))  # sternum


def _paint_pelvis(cv: _Canvas, body: _Body, cortical: float, cancellous: float) -> None:
    """Pelvis: iliac wings (shell + marrow) and femoral heads (no random draws)."""
    A_in, B_in, C = body.A_in, body.B_in, body.C
    for side in (-1.0, 1.0):
        c, r = (0.15 * B_in, side * 0.55 * A_in), (0.35 * B_in, 0.20 * A_in)
        cv.cylinder(c, r, 0.80 * C, 0.97 * C, cortical * 0.8)
        cv.cylinder(c, (r[0] - 5.0, r[1] - 5.0), 0.80 * C, 0.97 * C, cancellous)
        cv.ellipsoid((0.0, side * 0.50 * A_in, 0.99 * C), (22.0, 22.0, 22.0), cortical * 0.7)
        cv.ellipsoid((0.0, side * 0.50 * A_in, 0.99 * C), (17.0, 17.0, 17.0), cancellous)


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


def check_shape(shape: Sequence[int]) -> None:
    """ConfigError unless shape is (I, J, K) with I, J >= 16, K >= 8 and at most MAX_VOXELS."""
    if len(shape) != 3 or any(int(v) < m for v, m in zip(shape, MIN_SHAPE)):
        raise ConfigError(f"shape {tuple(shape)}: need three sizes I J K with I, J >= {MIN_SHAPE[0]} "
                          f"and K >= {MIN_SHAPE[2]}")
    voxels = int(np.prod([int(v) for v in shape], dtype=object))
    if voxels > MAX_VOXELS:
        raise ConfigError(f"--shape {' '.join(str(int(v)) for v in shape)}: {voxels:,} voxels, more "
                          f"than the {MAX_VOXELS:,} a phantom may have (e.g. 512 512 512; the "
                          f"generator needs ~25 bytes per voxel)")
