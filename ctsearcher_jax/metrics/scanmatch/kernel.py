"""Which ScanMatch kernel runs, and where: `choose_kernel`, the one place that decides it.

The rule (the package docstring explains the kernels):

- gap != 0: the masked whole-matrix kernel (`masked.py`), the only one for other gaps.
- The evaluation (`step=False`: host arrays in, host arrays out; the metric places the DP
  itself): the native kernel on this process's own CPU device, on GPU/TPU machines too (these
  DPs are sequential, and the host's cores beat the card at them), when the process has a CPU
  backend and the library builds; else the stripe kernel on the default device. kernel="stripe"
  keeps the DP on the default device (the card on an accelerator machine).
- Inside a compiled step (`step=True`: the reward in the fine-tuning step): the DP runs where the
  step runs, which is the devices of its shardings or mesh (`devices`), not
  `jax.default_backend()`: the native kernel only when that is one CPU device and the library
  builds; the jnp stripe kernel on an accelerator (the custom call exists for CPU only) and on
  several devices (a custom call would gather the sharded batch onto every device). Without
  `devices` the step may be sharded over any device of the default backend, so "one CPU device"
  means the process has exactly one device and it is a CPU.
- kernel="native" or "stripe" forces that kernel (native without the library: the call raises
  and says why).

The scores never depend on the choice (float64: bit for bit; float32: within rounding).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from ctsearcher_jax.metrics._batch import host_cpu
from ctsearcher_jax.metrics.scanmatch import native

KERNELS = ("auto", "native", "stripe")  # the `kernel` argument of the ScanMatch entry points


def check_kernel(kernel: str) -> str:
    """`kernel` if it is one of KERNELS, else a ValueError naming them."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    return kernel


@dataclasses.dataclass(frozen=True)
class KernelChoice:
    """What `choose_kernel` decided."""

    # "native" (C++ on a CPU device), "stripe" (jnp, anywhere) or "masked" (jnp, gap != 0).
    name: str
    # Where it runs: "cpu", "gpu" or "tpu" (the stripe kernel's tuning follows it).
    platform: str
    # The computation spans several devices (a sharded step): keep the batch in one call.
    sharded: bool = False
    # The evaluation's device for the DP's arrays (the host CPU for the native kernel); None:
    # the default device, or, inside a step, wherever the step runs.
    device: Any = None


def devices_of(placement) -> tuple:
    """The devices of a placement, each once: a device, a `jax.sharding.Mesh`, a sharding, an
    array of devices, or any pytree of these (e.g. a train state's shardings; None skipped)."""
    is_leaf = lambda x: isinstance(x, (jax.sharding.Mesh, jax.sharding.Sharding))  # noqa: E731
    found: list = []
    for leaf in jax.tree.leaves(placement, is_leaf=is_leaf):
        if isinstance(leaf, jax.sharding.Mesh):
            found += list(leaf.devices.flat)
        elif isinstance(leaf, jax.sharding.Sharding):
            found += sorted(leaf.device_set, key=lambda d: d.id)
        elif isinstance(leaf, np.ndarray) and leaf.dtype == object:
            found += list(leaf.flat)
        elif hasattr(leaf, "platform"):
            found.append(leaf)
        else:
            raise TypeError(f"devices_of: {leaf!r} is not a device, mesh or sharding")
    return tuple(dict.fromkeys(found))


def _for_evaluation(kernel: str) -> KernelChoice:
    default = jax.default_backend()
    if kernel != "stripe":
        cpu = host_cpu()
        if cpu is not None and native.available():
            return KernelChoice("native", "cpu", device=cpu)
        if kernel == "native":  # asked for without it: the call says why
            return KernelChoice("native", "cpu" if cpu is not None else default, device=cpu)
    return KernelChoice("stripe", default)


def _for_step(kernel: str, devices) -> KernelChoice:
    devices = devices_of(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("choose_kernel: the step's placement names no device")
    platforms = {d.platform for d in devices}
    platform = platforms.pop() if len(platforms) == 1 else "mixed"
    sharded = len(devices) > 1
    if kernel == "auto":
        one_cpu = platform == "cpu" and not sharded
        kernel = "native" if one_cpu and native.available() else "stripe"
    return KernelChoice(kernel, platform, sharded)


def choose_kernel(kernel: str = "auto", *, gap: float = 0.0, step: bool = False,
                  devices=None) -> KernelChoice:
    """The ScanMatch kernel for a batch of pairs, and where it runs (the module docstring's rule).

    kernel: "auto", "native" or "stripe" (KERNELS). gap: the alignment's gap value. step: the DP
    runs inside a compiled step on `devices` (anything `devices_of` reads: the step's shardings,
    its mesh, a list of devices; None: every device of the default backend); otherwise it is
    the evaluation, placed here. Builds the native library on first use (a failed build warns
    once and the choice falls back to the stripe kernel).
    """
    check_kernel(kernel)
    if devices is not None and not step:
        raise ValueError("choose_kernel: devices describe a compiled step (step=True)")
    if gap != 0:
        if step:
            raise ValueError("the jit ScanMatch supports gap 0 only (the evaluation's setting)")
        return KernelChoice("masked", jax.default_backend())
    return _for_step(kernel, devices) if step else _for_evaluation(kernel)
