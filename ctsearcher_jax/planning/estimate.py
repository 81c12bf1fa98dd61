"""Step time and MFU estimated from a compiled program's counts and the chip's published peaks.

    compute  = max(XLA FLOPs, matrix FLOPs) per chip / peak bf16 FLOP/s
    memory   = bytes accessed per chip / HBM bytes/s
    ici      = collective bytes per chip / bidirectional ICI bytes/s of the chip
    step     = max(compute, memory) + ici          (seconds)
    MFU      = matrix FLOPs per chip / (step * peak)

XLA FLOPs come from the compiled program's cost analysis, which counts a loop body once;
matrix FLOPs from its jaxpr with loops by their trip counts (`planning/flops.py`).

A roofline, not a measurement: it assumes compute and HBM traffic overlap perfectly, collectives
do not overlap with either and use every ICI link at full rate, and every FLOP runs on the matrix
units at the bf16 peak (XLA's default precision on TPU runs float32 matmuls as bf16 passes; a
program asking for "highest" precision, like the Swin UNETR encoder, takes several passes per
product, which this estimate does not see). The counts come from XLA's cost analysis of the
compiled program (per chip); its `optimal_seconds` is not used (it came out negative for the
paper config).
"""

from __future__ import annotations

import dataclasses

from ctsearcher_jax.planning.chips import Chip


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Seconds per call on one chip of the program, by the roofline above, and the MFU."""

    compute_s: float
    memory_s: float
    ici_s: float
    step_s: float
    mfu: float

    @property
    def bound(self) -> str:
        """What dominates: "compute", "memory" or "ici"."""
        parts = {"compute": self.compute_s, "memory": self.memory_s, "ici": self.ici_s}
        return max(parts, key=parts.get)


def estimate(flops: float, matmul_flops: float, bytes_accessed: float, collective_bytes: float,
             chip: Chip) -> Estimate:
    """The roofline estimate of one call: counts per chip (XLA FLOPs, matrix FLOPs, bytes
    accessed, collective bytes) on `chip`."""
    compute = max(flops, matmul_flops, 0.0) / chip.bf16_flops
    memory = max(bytes_accessed, 0.0) / chip.hbm_bandwidth
    ici = max(collective_bytes, 0.0) / chip.ici_bandwidth
    step = max(compute, memory) + ici
    mfu = max(matmul_flops, 0.0) / chip.bf16_flops / step if step > 0 else 0.0
    return Estimate(compute, memory, ici, step, mfu)
