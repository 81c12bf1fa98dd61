"""Multi-process start-up: `jax.distributed.initialize()` when the launch needs it.

Detected launches:
  * explicit flags (`--coordinator HOST:PORT --num-processes N --process-id I`), e.g. localhost
    tests or hand-made clusters;
  * SLURM with more than one task (`SLURM_NTASKS > 1`): JAX reads the coordinator, process count
    and id from the SLURM variables itself;
  * a multi-host TPU slice (`TPU_WORKER_HOSTNAMES` lists several hosts, or a Megascale
    coordinator is set): JAX reads the TPU metadata itself;
  * `--distributed` (force): call `jax.distributed.initialize()` and let JAX detect the cluster
    (what scripts/train_tpu_pod.sh passes, whatever the environment of the ssh session holds).
Otherwise it does nothing (one process sees all local devices). On CPU the cross-process
collectives use gloo.
"""

from __future__ import annotations

import os
from typing import Mapping

import jax

from ctsearcher_jax import logs
from ctsearcher_jax.errors import ConfigError


def detect_launcher(env: Mapping[str, str] | None = None) -> str | None:
    """'slurm', 'tpu_pod' or None (single process) from the environment."""
    env = os.environ if env is None else env
    try:
        if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
            return "slurm"
    except ValueError:
        pass
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "tpu_pod"
    return None


def maybe_initialize(*, coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, force: bool = False,
                     env: Mapping[str, str] | None = None) -> str | None:
    """Initialise jax.distributed if the launch is multi-process; return how it was launched."""
    explicit = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(explicit) and not all(explicit):
        raise ConfigError("--coordinator, --num-processes and --process-id must be given together")
    launcher = "flags" if all(explicit) else detect_launcher(env)
    if launcher is None and force:
        launcher = "auto"
    if launcher is None:
        return None

    if launcher == "flags" and not (0 <= process_id < num_processes):
        raise ConfigError(f"--process-id {process_id} must be in [0, --num-processes {num_processes})")
    # Must be set before the backend starts; only CPU reads it (GPU uses NCCL, TPU ICI/DCN).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if launcher == "flags":
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    else:
        jax.distributed.initialize()

    logs.set_process(jax.process_index(), jax.process_count())
    return launcher
