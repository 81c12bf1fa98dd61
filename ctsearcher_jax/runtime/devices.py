"""What JAX sees on this process: backend, device kind and count, process index/count, versions.

`describe()` returns it as a dict (for `ctsearcher devices --json`, manifests and benchmarks);
`startup_line()` is the one line `train`, `extract` and `predict` print at start-up, e.g.

    JAX 0.10.2 (jaxlib 0.10.2): backend gpu, 8 x NVIDIA H100 80GB HBM3 (8 local), process 0/1

Both start the JAX backend, so call them after `jax.distributed.initialize()` (multi-host).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jaxlib

from ctsearcher_jax import installation
from ctsearcher_jax.errors import ConfigError

# What `require()` accepts: JAX's platform names.
BACKENDS = ("cpu", "gpu", "tpu")

def install_hint(backend: str) -> str:
    """How to get `backend`'s build of jaxlib, as a command for the way this package was
    installed (`installation.install_hint`; README "Running on GPUs and TPUs")."""
    if backend == "gpu":
        return (f"install the CUDA build: {installation.install_hint('cuda')} (CUDA 12 wheels; "
                f"the extra cuda13 for CUDA 13)")
    if backend == "tpu":
        return f"install the TPU build: {installation.install_hint('tpu')}"
    return "set JAX_PLATFORMS=cpu"


def usable_cores() -> int:
    """CPU cores this process may use (its affinity mask; all cores where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def describe() -> dict[str, Any]:
    """Backend, devices and versions of this process (starts the backend)."""
    devices = jax.devices()
    local = jax.local_devices()
    kinds = sorted({d.device_kind for d in devices})
    info: dict[str, Any] = {
        "backend": jax.default_backend(),
        "device_kind": kinds[0] if len(kinds) == 1 else kinds,
        "device_count": len(devices),
        "local_device_count": len(local),
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
    }
    if info["backend"] == "gpu":
        info["cuda"] = _cuda_versions()
    return info


def startup_line(info: dict[str, Any] | None = None) -> str:
    """One line naming the JAX version, backend, device kind and count, and process index/count."""
    info = describe() if info is None else info
    kind = info["device_kind"]
    kind = kind if isinstance(kind, str) else " + ".join(kind)
    line = (f"JAX {info['jax']} (jaxlib {info['jaxlib']}): backend {info['backend']}, "
            f"{info['device_count']} x {kind} ({info['local_device_count']} local), "
            f"process {info['process_index']}/{info['process_count']}")
    if info.get("cuda"):
        line += f", {info['cuda']}"
    return line


def require(backend: str) -> dict[str, Any]:
    """Raise ConfigError (with the install command) unless JAX's default backend is `backend`."""
    if backend not in BACKENDS:
        raise ConfigError(f"--require must be one of {', '.join(BACKENDS)}, got {backend!r}")
    try:
        info = describe()
    except RuntimeError as exc:  # e.g. JAX_PLATFORMS=cuda without a CUDA plugin or driver
        raise ConfigError(f"JAX could not start a backend ({str(exc).splitlines()[0]}); "
                          f"{install_hint(backend)}") from None
    if info["backend"] != backend:
        raise ConfigError(f"JAX's backend is {info['backend']} ({startup_line(info)}), not "
                          f"{backend}; {install_hint(backend)}")
    return info


def _cuda_versions() -> str | None:
    """'CUDA runtime X, cuDNN Y' as the CUDA plugin reports them (None when it does not say)."""
    try:
        from jax._src.lib import cuda_versions  # noqa: PLC0415 (private; absent in some jaxlib builds)
    except ImportError:
        return None
    if cuda_versions is None:
        return None
    parts = []
    for label, fn in (("CUDA runtime", "cuda_runtime_get_version"), ("cuDNN", "cudnn_get_version")):
        try:
            parts.append(f"{label} {getattr(cuda_versions, fn)()}")
        except Exception:  # noqa: BLE001 - versions are informative only
            pass
    return ", ".join(parts) or None
