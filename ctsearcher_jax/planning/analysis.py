"""Compile one program for its devices and read what the compiler says about it.

`analyse(program, chip)` lowers and compiles the program (the real TPU compiler for a TPU
topology) and returns a `ProgramPlan`: per-chip memory from `compiled.memory_analysis()`
(arguments, temporaries, outputs, generated code, minus what outputs alias of donated
arguments) against the chip's HBM, FLOPs and bytes accessed from `compiled.cost_analysis()`
and the matrix FLOPs of the program's jaxpr (loops by trip count, `planning/flops.py`),
the collectives of the compiled HLO, the CPU-only custom calls of the lowered and compiled text
(there must be none), the roofline estimate and the seconds lowering and compiling took.

A program that does not fit fails to compile on TPU (RESOURCE_EXHAUSTED); the plan then says so
with the compiler's required and available bytes. The persistent compilation cache is off while
compiling, so every compile second is a real compilation (a cache hit would hide a regression).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from typing import Any, Iterator

import jax

from ctsearcher_jax.planning import hlo
from ctsearcher_jax.planning.chips import Chip
from ctsearcher_jax.planning.estimate import Estimate, estimate
from ctsearcher_jax.planning.flops import matmul_flops
from ctsearcher_jax.planning.programs import Program

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
_PAREN_SIZES = re.compile(r"\(([\d.]+)([KMGT]?)B?\)")
_USED_OF = re.compile(r"Used ([\d.]+)([KMGT]?)B? of ([\d.]+)([KMGT]?)B?")


@dataclasses.dataclass(frozen=True)
class Memory:
    """Per-chip bytes of a compiled program (`compiled.memory_analysis()`)."""

    arguments: int
    temporaries: int
    outputs: int
    aliased: int  # outputs written in place of donated arguments (counted once)
    code: int

    @property
    def total(self) -> int:
        return self.arguments + self.temporaries + self.outputs - self.aliased + self.code


@dataclasses.dataclass(frozen=True)
class ProgramPlan:
    """What one program needs per chip, by the compiler, on one chip generation."""

    program: Program
    chip: Chip
    lower_seconds: float
    compile_seconds: float
    fits: bool
    memory: Memory | None  # None when the compiler ran out of memory
    required_bytes: int | None  # the compiler's requirement when out of memory
    available_bytes: int  # HBM per chip (the compiler's figure when it gave one)
    flops: float  # XLA's cost analysis (a loop body counted once)
    matmul_flops: float  # matrix products of the jaxpr, loops by trip count, per chip
    bytes_accessed: float
    collectives: tuple[hlo.Collective, ...]
    cpu_only_calls: tuple[str, ...]
    estimate: Estimate | None
    error: str | None = None  # the compiler's out-of-memory message
    loops: int = 0  # while loops in the compiled program: XLA counted each body once, so its
    # FLOPs and bytes (and the estimate's memory time) are lower bounds


    @property
    def collective_bytes(self) -> int:
        return sum(c.bytes for c in self.collectives)

    @property
    def shortfall_bytes(self) -> int:
        """Bytes over the HBM (0 when it fits)."""
        used = self.memory.total if self.memory else (self.required_bytes or 0)
        return max(0, used - self.available_bytes)


@contextlib.contextmanager
def no_persistent_cache() -> Iterator[None]:
    """Compile without reading or writing JAX's persistent compilation cache."""
    previous = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", previous)


def _bytes(number: str, unit: str) -> int:
    return int(float(number) * _UNITS[unit])


def parse_out_of_memory(message: str) -> tuple[int | None, int | None]:
    """(required, available) bytes from the TPU compiler's RESOURCE_EXHAUSTED message."""
    used = _USED_OF.search(message)
    if used:
        return _bytes(*used.group(1, 2)), _bytes(*used.group(3, 4))
    sizes = _PAREN_SIZES.findall(message)
    if len(sizes) >= 2:
        return _bytes(*sizes[0]), _bytes(*sizes[1])
    return None, None


def lower(program: Program, platforms: tuple[str, ...] | None = None) -> Any:
    """`jit(f).trace(*args).lower(...)`; platforms: e.g. ("cuda",) to lower for another one."""
    traced = program.jitted.trace(*program.args)
    return traced.lower(lowering_platforms=platforms) if platforms else traced.lower()


def analyse(program: Program, chip: Chip) -> ProgramPlan:
    """Compile `program` for its devices (the chips of `chip`) and read the compiler's numbers."""
    t0 = time.perf_counter()
    traced = program.jitted.trace(*program.args)
    matmul = matmul_flops(traced).flops / program.chips
    lowered = traced.lower()
    t1 = time.perf_counter()
    calls = set(hlo.custom_call_targets(lowered.as_text()))
    try:
        with no_persistent_cache():
            compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as exc:
        message = str(exc)
        if "RESOURCE_EXHAUSTED" not in message:
            raise
        required, available = parse_out_of_memory(message)
        return ProgramPlan(program, chip, t1 - t0, time.perf_counter() - t1, False, None, required,
                           available or chip.hbm_bytes, 0.0, matmul, 0.0, (),
                           tuple(hlo.cpu_only_calls(calls)), None,
                           error=" ".join(message.split())[:300])
    seconds = time.perf_counter() - t1
    stats = compiled.memory_analysis()
    memory = Memory(stats.argument_size_in_bytes, stats.temp_size_in_bytes,
                    stats.output_size_in_bytes, stats.alias_size_in_bytes,
                    stats.generated_code_size_in_bytes)
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):  # older JAX: one dict per program
        cost = cost[0] if cost else {}
    text = compiled.as_text()
    found = tuple(hlo.collectives(text))
    calls |= hlo.custom_call_targets(text)
    flops, accessed = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    total_collective = sum(c.bytes for c in found)
    return ProgramPlan(program, chip, t1 - t0, seconds, memory.total <= chip.hbm_bytes, memory,
                       None, chip.hbm_bytes, flops, matmul, accessed, found,
                       tuple(hlo.cpu_only_calls(calls)),
                       estimate(flops, matmul, accessed, total_collective, chip),
                       loops=hlo.while_loops(text))
