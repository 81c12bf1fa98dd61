"""Device mesh, batch and parameter shardings.

The mesh has two axes, `data` x `fsdp` (every device of every process). Batches are split over
both (each device gets B / num_devices CTs); parameters and optimizer moments are replicated
when `train.fsdp == 1`, otherwise each array is split over `fsdp` along its largest axis that
divides (small or indivisible arrays stay replicated). XLA inserts the all-gathers.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ctsearcher_jax.config import TrainConfig
from ctsearcher_jax.errors import ConfigError

BATCH_AXES = ("data", "fsdp")


def make_mesh(train: TrainConfig, devices: list | None = None):
    """A (data, fsdp) mesh over all devices; ConfigError when fsdp does not divide them."""
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices)
    if n % train.fsdp:
        raise ConfigError(f"train.fsdp={train.fsdp} must divide the number of devices ({n})")
    shape = (n // train.fsdp, train.fsdp)
    return jax.make_mesh(shape, BATCH_AXES, devices=devices,
                         # Auto axes: classic sharding propagation from the jit in/out shardings.
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)


def check_batch_divides(train: TrainConfig, mesh, process_count: int) -> None:
    """Startup check: the global batch splits evenly over micro-batches, devices and processes."""
    devices = int(np.prod(list(mesh.shape.values())))
    b, a = train.batch_size, train.grad_accum_steps
    if b % a:
        raise ConfigError(f"train.batch_size={b} must be divisible by train.grad_accum_steps={a}")
    if (b // a) % devices:
        raise ConfigError(
            f"train.batch_size={b} / train.grad_accum_steps={a} = {b // a} CTs per micro-batch must "
            f"be divisible by the {devices} devices ({process_count} process(es)); use a batch size "
            f"that is a multiple of {devices * a}")
    if b % process_count:
        raise ConfigError(f"train.batch_size={b} must be divisible by the {process_count} processes")


def batch_sharding(mesh):
    """Leading (batch) axis split over every device."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh):
    return NamedSharding(mesh, P())


def param_sharding(mesh, shape: tuple[int, ...]):
    """Sharding of one parameter-shaped array: split its largest fsdp-divisible axis, else replicate."""
    fsdp = mesh.shape["fsdp"]
    if fsdp == 1 or not shape:
        return NamedSharding(mesh, P())
    candidates = [i for i, d in enumerate(shape) if d % fsdp == 0]
    if not candidates:
        return NamedSharding(mesh, P())
    axis = max(candidates, key=lambda i: (shape[i], -i))
    spec = [None] * len(shape)
    spec[axis] = "fsdp"
    return NamedSharding(mesh, P(*spec))


def state_shardings(mesh, abstract_state: Any) -> Any:
    """Shardings for a pytree of arrays / ShapeDtypeStructs (train state)."""
    return jax.tree.map(lambda x: param_sharding(mesh, tuple(x.shape)), abstract_state)


def global_batch(mesh, local: dict[str, np.ndarray]) -> dict[str, Any]:
    """Assemble this process's rows into global arrays sharded over the batch axis."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local.items()}
