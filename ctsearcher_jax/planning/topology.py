"""Abstract TPU devices of a topology, on any machine: libtpu's compile-only devices.

`jax.experimental.topologies.get_topology_desc("v5e:2x2", "tpu")` loads libtpu and returns
devices that the TPU compiler accepts but that cannot run anything; a mesh over them and
`jit(...).lower(ShapeDtypeStructs with shardings).compile()` run the real TPU compiler. The
TPU backend itself is never started, so this works on a CPU-only host (and on a TPU VM).

libtpu prints warnings on a host without TPU chips unless it is told where it runs; on such a
host `quiet_libtpu()` sets the variables that silence it (one local worker, one host), which
change nothing in the compiled programs (checked: identical memory and cost analyses), and lets
several processes load it at once.
"""

from __future__ import annotations

import importlib.util
import os

from jax.experimental import topologies

from ctsearcher_jax.errors import ConfigError
from ctsearcher_jax.planning.chips import Topology
from ctsearcher_jax.runtime.platforms import local_tpu_chips

INSTALL_HINT = "pip install 'ctsearcher-jax[tpu]'"


def libtpu_installed() -> bool:
    """True when the `libtpu` package (the TPU compiler and runtime) can be imported, or
    $TPU_LIBRARY_PATH names a libtpu.so (as JAX accepts)."""
    path = os.environ.get("TPU_LIBRARY_PATH")
    return importlib.util.find_spec("libtpu") is not None or bool(path and os.path.isfile(path))


def require_libtpu() -> None:
    """ConfigError with the install command when libtpu is missing."""
    if not libtpu_installed():
        raise ConfigError(f"planning for TPUs needs libtpu (the TPU compiler), which is not "
                          f"installed: {INSTALL_HINT}")


def quiet_libtpu() -> None:
    """On a host without TPU chips, tell libtpu it is one worker on one host (it warns
    otherwise), and that several processes may load it: it takes /tmp/libtpu_lockfile to guard
    the chips, so a second planning process (a test beside a plan) would be refused.

    Values the user set are kept; on a TPU VM nothing is set.
    """
    if local_tpu_chips():
        return
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_HOST_BOUNDS", "1,1,1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def topology_devices(topology: Topology) -> list:
    """The compile-only devices of `topology`, one per chip, in libtpu's order.

    ConfigError when libtpu is missing or rejects the shape (its reason in one line).
    """
    require_libtpu()
    quiet_libtpu()
    options = dict(topology.chip.topology_options)
    try:
        devices = list(topologies.get_topology_desc(topology_name=topology.name, platform="tpu",
                                                    **options).devices)
    except Exception as exc:  # libtpu raises JaxRuntimeError with INVALID_ARGUMENT: ...
        reason = " ".join(str(exc).split())[:300]
        raise ConfigError(f"topology {topology.name!r}: libtpu refused it ({reason}); use a shape "
                          f"of whole hosts, e.g. {topology.chip.example}") from None
    if len(devices) != topology.chips:
        raise ConfigError(f"topology {topology.name!r}: libtpu gave {len(devices)} devices for "
                          f"{topology.chips} chips")
    return devices


def process_count(devices: list) -> int:
    """Hosts (JAX processes) of a topology: a pod's run has one process per host."""
    return len({d.process_index for d in devices})
