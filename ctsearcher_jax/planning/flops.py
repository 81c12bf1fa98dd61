"""Matrix FLOPs of a traced program, counting loops by their trip counts.

XLA's cost analysis of a compiled TPU program counts the body of a while loop once, whatever its
trip count (measured with jax 0.10.2 / libtpu 0.0.42: a 10-step `fori_loop` of matmuls reports
the FLOPs of one). Our programs loop: the Swin UNETR window attention maps over the samples of
a batch (`lax.map`), gradient accumulation scans over micro-batches. This module counts the
FLOPs of the matrix products (`dot_general`, `conv_general_dilated`: 2 per multiply-add) in the
program's jaxpr instead, a scan's body times its length; the standard numerator of MFU.

A `while_loop` whose trip count the jaxpr does not state (e.g. the fine-tuning reward's DP,
which has no matrix products) counts once; `cond` counts its most expensive branch. The count
is of the whole (unpartitioned) program: divide by the chips that share the work.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from jax.extend import core


@dataclasses.dataclass(frozen=True)
class MatmulFlops:
    """FLOPs of the matrix products of a program; `unknown_loops`: while loops counted once."""

    flops: float
    unknown_loops: int


def _dot_flops(eqn: Any) -> float:
    (contract, _), _ = eqn.params["dimension_numbers"]  # ((lhs, rhs) contracting, batch)
    lhs = eqn.invars[0].aval.shape
    out = eqn.outvars[0].aval.shape
    return 2.0 * math.prod(out) * math.prod(lhs[d] for d in contract)


def _conv_flops(eqn: Any) -> float:
    rhs = eqn.invars[1].aval.shape
    out = eqn.outvars[0].aval.shape
    spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature dim, in feature dim, spatial)
    per_output = math.prod(rhs) / rhs[spec[0]]  # in features (per group) x kernel volume
    return 2.0 * math.prod(out) * per_output


def _sub_jaxprs(value: Any) -> list:
    if isinstance(value, core.ClosedJaxpr):
        return [value.jaxpr]
    if isinstance(value, core.Jaxpr):
        return [value]
    if isinstance(value, (tuple, list)):
        return [j for v in value for j in _sub_jaxprs(v)]
    return []


def _count(jaxpr: Any) -> tuple[float, int]:
    flops, unknown = 0.0, 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            flops += _dot_flops(eqn)
            continue
        if name == "conv_general_dilated":
            flops += _conv_flops(eqn)
            continue
        if name == "cond":
            counts = [_count(j) for j in _sub_jaxprs(eqn.params["branches"])]
            flops += max((c[0] for c in counts), default=0.0)
            unknown += sum(c[1] for c in counts)
            continue
        times = eqn.params.get("length", 1) if name == "scan" else 1
        if name == "shard_map":  # the body is one device's share: it runs on each of them
            mesh = eqn.params["mesh"]
            axes = eqn.params.get("newly_manual_axes") or mesh.axis_names
            times = math.prod(dict(mesh.shape)[a] for a in axes)
        if name == "while":
            unknown += 1
        for key, value in eqn.params.items():
            if name == "while" and key == "cond_jaxpr":
                continue
            for sub in _sub_jaxprs(value):
                f, u = _count(sub)
                flops += times * f
                unknown += u
    return flops, unknown


def matmul_flops(traced: Any) -> MatmulFlops:
    """Matrix FLOPs of `jax.jit(f).trace(...)` (its `.jaxpr`), loops by their trip counts."""
    flops, unknown = _count(traced.jaxpr.jaxpr)
    return MatmulFlops(flops, unknown)
