"""Sliding-window placement and the batched, sharded window encoder.

Placement reproduces MONAI's `sliding_window_inference` as the original extraction used it:
every axis shorter than the window is padded with zeros, `diff // 2` before and the rest after
(the extra voxel of an odd difference goes to the end, as `torch.nn.functional.pad` with MONAI's
pad list does); windows start every `int(roi * (1 - overlap))` voxels (MONAI's `_get_scan_interval`)
and the last one is clamped to the border (`dense_patch_slices`), enumerated in C order (k fastest).

Encoding: the padded volume is put on the local devices once; each fixed-size batch of windows is
cut on device (`dynamic_slice`) and sent through one jit-compiled encoder call whose input shape is
always `(batch, roi, roi, roi, 1)`. The last batch is padded with copies of the first window and the
extra rows are dropped, so the encoder compiles once per (batch, roi, dtype) and never per volume
size (only the tiny window-cutting gather is specialised to the padded volume shape). Batches are
sharded over all local devices with `NamedSharding(mesh, P("data"))`; parameters are replicated.
Across hosts, each process encodes its own share of the volume list (`process_share`), so processes
never wait for each other.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

T = TypeVar("T")

# The Swin UNETR encoder reduces each spatial axis by this factor (96^3 window -> 3^3 cells).
CELL = 32


def scan_interval(image_size: Sequence[int], roi: Sequence[int], overlap: float) -> tuple[int, ...]:
    """Window stride per axis: `int(roi * (1 - overlap))` (at least 1), or `roi` where the axis equals roi.

    Same arithmetic as MONAI's `monai.inferers.utils._get_scan_interval` (float product, then int()).
    """
    out = []
    for size, r in zip(image_size, roi):
        if r == size:
            out.append(int(r))
        else:
            interval = int(r * (1 - overlap))
            out.append(interval if interval > 0 else 1)
    return tuple(out)


def axis_starts(size: int, roi: int, interval: int) -> list[int]:
    """Window starts along one axis of length `size >= roi` (MONAI `dense_patch_slices`, last clamped)."""
    # Number of windows: the first index d with d * interval + roi >= size, plus one.
    count = max(0, -(-(size - roi) // interval)) + 1
    return [i * interval - max(i * interval + roi - size, 0) for i in range(count)]


def pad_amounts(shape: Sequence[int], roi: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Zero padding (before, after) per axis so that every axis is at least `roi` long."""
    out = []
    for size, r in zip(shape, roi):
        diff = max(r - size, 0)
        out.append((diff // 2, diff - diff // 2))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class WindowPlan:
    """Where the windows of one volume go.

    Attributes:
      shape: `(I, J, K)` of the volume as loaded.
      pad: `((before, after),) * 3` zero padding applied first.
      padded_shape: shape after padding (every axis >= roi).
      roi: window edge in voxels.
      starts: `(W, 3)` int window corners in padded coordinates, MONAI order (last axis fastest).
    """

    shape: tuple[int, int, int]
    pad: tuple[tuple[int, int], ...]
    padded_shape: tuple[int, int, int]
    roi: int
    starts: np.ndarray

    @property
    def num_windows(self) -> int:
        return int(self.starts.shape[0])

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """Merged feature grid: `floor(padded_size / 32)` cells per axis (the original's merge)."""
        return tuple(s // CELL for s in self.padded_shape)  # type: ignore[return-value]


def plan_windows(shape: Sequence[int], roi: int = 96, overlap: float = 0.0) -> WindowPlan:
    """Padding and window corners for a volume of `shape` (3 axes), identical to MONAI's placement."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    shape = tuple(int(s) for s in shape)
    rois = (roi,) * len(shape)
    pad = pad_amounts(shape, rois)
    padded = tuple(s + a + b for s, (a, b) in zip(shape, pad))
    intervals = scan_interval(padded, rois, overlap)
    per_axis = [axis_starts(s, roi, i) for s, i in zip(padded, intervals)]
    grids = np.meshgrid(*per_axis, indexing="ij")
    starts = np.stack([g.ravel() for g in grids], axis=1).astype(np.int64)
    return WindowPlan(shape=shape, pad=pad, padded_shape=padded, roi=roi, starts=starts)  # type: ignore[arg-type]


def pad_volume(volume: np.ndarray, plan: WindowPlan) -> np.ndarray:
    """Zero-pad `(I, J, K)` to `plan.padded_shape` (float32)."""
    if any(a or b for a, b in plan.pad):
        return np.pad(volume, plan.pad, mode="constant", constant_values=0.0)
    return volume


def process_share(items: Sequence[T], process_index: int | None = None,
                  process_count: int | None = None) -> list[T]:
    """This process's share of `items` (round robin), so hosts split a volume list without talking."""
    if process_index is None or process_count is None:
        process_index, process_count = jax.process_index(), jax.process_count()
    return list(items[process_index::process_count])


# ----------------------------------------------------------------------------- device side

EncodeFn = Callable[[Any, Any], tuple[Any, Any]]


def jit_encoder(apply: EncodeFn, mesh: Any) -> Any:
    """`encode(params, windows) -> (dec4, hidden4)` float32, jit-compiled for `mesh` (one axis,
    "data"): parameters replicated, windows and both outputs split along the batch over "data".

    The program `WindowEncoder` runs; `ctsearcher plan` compiles the same one for TPU topologies.
    """
    replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

    def encode(params: Any, windows: Any) -> tuple[Any, Any]:
        dec4, hidden4 = apply(params, windows)
        return dec4.astype(jnp.float32), hidden4.astype(jnp.float32)

    # Each device encodes its own windows with the whole (replicated) encoder: windows never
    # interact, so the per-device program is the one-device program and has no collective.
    # (Left to the SPMD partitioner, the window partition, which folds the batch into the
    # window axis, made it all-gather activations across the devices.)
    per_device = jax.shard_map(encode, mesh=mesh, in_specs=(P(), P("data")),
                               out_specs=(P("data"), P("data")), check_vma=False)
    return jax.jit(per_device, in_shardings=(replicated, data), out_shardings=(data, data))


class WindowEncoder:
    """Encodes the windows of volumes in fixed-size batches sharded over local devices.

    Args:
      apply: `apply(params, windows (B, roi, roi, roi, 1)) -> (dec4, hidden4)`, each
        `(B, g, g, g, C)` channels-last with `g = roi // 32`. It is jit-compiled here.
      params: pytree of arrays passed to `apply` (replicated over the devices).
      roi: window edge in voxels.
      batch_per_device: windows per device per call; the global batch is this times the device count.
      devices: devices to shard over (default: this process's local devices).
    """

    def __init__(self, apply: EncodeFn, params: Any, *, roi: int = 96, batch_per_device: int = 4,
                 devices: Sequence[Any] | None = None) -> None:
        devices = list(devices) if devices is not None else jax.local_devices()
        self.mesh = Mesh(np.array(devices), ("data",))
        self.roi = roi
        self.batch = batch_per_device * len(devices)
        self._replicated = NamedSharding(self.mesh, P())
        self._data = NamedSharding(self.mesh, P("data"))
        self._params = jax.device_put(params, self._replicated)

        def cut(volume: Any, starts: Any) -> Any:
            # One dynamic_slice per window; the starts are data, so the same program serves every
            # placement of a volume of this padded shape.
            def one(start: Any) -> Any:
                return jax.lax.dynamic_slice(volume, (start[0], start[1], start[2]), (roi, roi, roi))

            return jax.vmap(one)(starts)[..., None]

        self._encode = jit_encoder(apply, self.mesh)
        self._cut = jax.jit(cut, in_shardings=(self._replicated, self._data),
                            out_shardings=self._data)

    def compile(self) -> float:
        """Compile the encoder for its one input shape ahead of time; returns the seconds it took.

        The first `encode_volume` call then reuses the executable (no batch is run to warm up).
        """
        windows = jax.ShapeDtypeStruct((self.batch, self.roi, self.roi, self.roi, 1), jnp.float32,
                                       sharding=self._data)
        t0 = time.perf_counter()
        self._encode.lower(self._params, windows).compile()
        return time.perf_counter() - t0

    def encode_compilations(self) -> int:
        """How many programs the encoder has compiled (1 after any number of volumes)."""
        return int(self._encode._cache_size())

    def encode_volume(self, padded: np.ndarray, starts: np.ndarray,
                      on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Encode every window of one padded volume.

        Args:
          padded: `(I, J, K)` float32 padded volume (every axis >= roi).
          starts: `(W, 3)` window corners.
          on_batch: called with the number of real windows after each batch finishes (progress).
        Returns:
          `(dec4, hidden4)`, each `(W, g, g, g, C)` float32 numpy, in window order.
        """
        volume = jax.device_put(np.asarray(padded, dtype=np.float32), self._replicated)
        starts = np.asarray(starts, dtype=np.int32)
        dec4_parts: list[np.ndarray] = []
        hidden_parts: list[np.ndarray] = []
        pending: tuple[Any, int] | None = None

        def finish(item: tuple[Any, int]) -> None:
            (dec4, hidden4), n = item
            dec4_parts.append(np.asarray(jax.device_get(dec4))[:n])
            hidden_parts.append(np.asarray(jax.device_get(hidden4))[:n])
            if on_batch is not None:
                on_batch(n)

        for b0 in range(0, len(starts), self.batch):
            chunk = starts[b0:b0 + self.batch]
            n = len(chunk)
            if n < self.batch:  # pad the last batch with copies of a real window; rows dropped later
                chunk = np.concatenate([chunk, np.repeat(chunk[:1], self.batch - n, axis=0)])
            windows = self._cut(volume, jax.device_put(chunk, self._data))
            out = self._encode(self._params, windows)
            # Keep one batch in flight: copy the previous result back while this one computes.
            if pending is not None:
                finish(pending)
            pending = (out, n)
        if pending is not None:
            finish(pending)
        return np.concatenate(dec4_parts), np.concatenate(hidden_parts)
