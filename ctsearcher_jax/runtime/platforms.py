"""Which JAX backends the CLI starts: no TPU backend on a host that has no TPU chips.

With libtpu installed (the test extra installs it for `ctsearcher plan`), JAX tries the TPU
backend at start-up whatever the host: libtpu loads, prints warnings about the accelerator type
and worker hostnames it cannot find, fails and JAX falls back to the CPU. JAX already skips
CUDA when no NVIDIA device is visible; `skip_absent_tpu()` does the same for TPUs before any
backend starts: on a host without TPU chips or GPUs, with JAX_PLATFORMS unset, it sets JAX's
platforms to "cpu". `ctsearcher plan` is unaffected: it compiles through libtpu's compile-only
topology, not through the TPU backend.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from pathlib import Path

import jax

# Device files of GPUs JAX could use (NVIDIA incl. WSL2, AMD ROCm).
_GPU_DEVICE_FILES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")
# PCI vendor id of Google's TPU chips (what JAX's own hardware check reads).
_GOOGLE_PCI_VENDOR = "0x1ae0"


def local_tpu_chips() -> int:
    """TPU chips attached to this host (PCI devices of Google's vendor id); 0 on other hosts."""
    count = 0
    for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            if Path(vendor).read_text().strip() == _GOOGLE_PCI_VENDOR:
                count += 1
        except OSError:
            continue
    return count


def has_gpu() -> bool:
    """True when a GPU device file JAX's GPU backends use exists on this host."""
    return any(os.path.exists(p) for p in _GPU_DEVICE_FILES) or bool(glob.glob("/dev/nvidia[0-9]*"))


def skip_absent_tpu() -> bool:
    """Keep JAX from loading libtpu on a host without TPU chips (see the module docstring).

    Returns True when it restricted JAX to the CPU. Does nothing when the user chose platforms
    (JAX_PLATFORMS), forces TPU initialisation (JAX_FORCE_TPU_INIT), libtpu is not installed,
    the host has TPU chips, or a GPU (whose backend must stay reachable).
    """
    if os.environ.get("JAX_PLATFORMS") or "JAX_FORCE_TPU_INIT" in os.environ:
        return False
    if importlib.util.find_spec("libtpu") is None or local_tpu_chips() or has_gpu():
        return False
    if jax.config.jax_platforms:  # set in code before us
        return False
    jax.config.update("jax_platforms", "cpu")
    return True


def cpu_only() -> bool:
    """Whether JAX will run on the CPU alone here: platforms "cpu" chosen (by the user, or by
    `skip_absent_tpu`), or a host with neither GPUs nor TPU chips. Starts no backend."""
    chosen = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms
    if chosen:
        return chosen.strip().lower() == "cpu"
    return not has_gpu() and not local_tpu_chips()
