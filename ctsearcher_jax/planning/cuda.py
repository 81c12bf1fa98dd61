"""Lowering the programs for CUDA on a machine without a GPU.

JAX 0.10.2 has no compile-only CUDA topology (`get_topology_desc(platform="cuda")` is not
implemented), but `jit(f).trace(...).lower(lowering_platforms=("cuda",))` lowers for CUDA on
any host: it proves every operation has a CUDA lowering and shows which custom calls the GPU
program would contain. The programs are built over this host's devices (their shardings only
decide the partitioning, which the lowering does not compile) with the fine-tuning step told it
targets "cuda" (so its reward takes the jnp stripe kernel, as it does on a GPU).

Attention runs the XLA path here: `nn/attention.py` asks for cuDNN's fused kernel only when
the default backend is a GPU, and cuDNN must be present at trace time to accept it, so a CUDA
lowering on a CPU host cannot include it. On a GPU, bfloat16 attention may take cuDNN instead.
"""

from __future__ import annotations

import dataclasses

import jax

from ctsearcher_jax.config import Config
from ctsearcher_jax.nn import attention
from ctsearcher_jax.planning import hlo
from ctsearcher_jax.planning.analysis import lower
from ctsearcher_jax.planning.programs import Program, build


@dataclasses.dataclass(frozen=True)
class CudaLowering:
    """A program lowered for CUDA: its custom-call targets and the attention paths traced."""

    program: Program
    custom_calls: tuple[str, ...]
    cpu_only_calls: tuple[str, ...]
    attention: dict[str, str]


def lower_for_cuda(name: str, config: Config, per_chip: int, *, readers: int = 2,
                   samples: int = 1, devices: list | None = None) -> CudaLowering:
    """Build program `name` over `devices` (default: this host's) and lower it for CUDA."""
    devices = list(devices if devices is not None else jax.local_devices())
    program = build(name, config, devices, per_chip, readers=readers, samples=samples,
                    platform="cuda")
    attention.last_used.clear()
    text = lower(program, ("cuda",)).as_text()
    calls = hlo.custom_call_targets(text)
    return CudaLowering(program, tuple(sorted(calls)), tuple(hlo.cpu_only_calls(calls)),
                        dict(attention.last_used))
