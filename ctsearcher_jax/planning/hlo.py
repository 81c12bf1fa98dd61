"""Reading compiled and lowered program text: collectives and custom calls.

`collectives(hlo_text)` lists the cross-chip collectives of a compiled (optimised, SPMD
partitioned) HLO module: all-reduce, all-gather, reduce-scatter, all-to-all and
collective-permute, synchronous or `-start` (the matching `-done` is not counted again). Shapes
in partitioned HLO are per chip, so the bytes are per chip: the size of the collective's result
(for all-gather the gathered array, for all-reduce the reduced buffers), for reduce-scatter its
input (the result times the group size). A collective inside a while loop body counts once per
iteration where XLA knows the trip count (`known_trip_count`), else once.

`custom_call_targets(text)` finds every custom-call target in HLO (`custom_call_target="..."`)
or StableHLO (`stablehlo.custom_call @name`) text; `cpu_only_calls` keeps those that exist only
on CPU: the project's native kernels (registered for the CPU platform) and jaxlib's CPU-only
LAPACK / DUCC FFT targets. A TPU or CUDA program containing one of them cannot run there.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
# Custom-call targets that only the CPU backend implements.
CPU_ONLY_PREFIXES = ("ctsearcher_", "lapack_", "ducc_", "cpu_")

_ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
             "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
             "f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1}
_SHAPE = re.compile(r"\b(" + "|".join(sorted(_ITEMSIZE, key=len, reverse=True)) + r")\[([\d,]*)\]")
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%[\w.\-]+\s*=\s*(?P<type>.*?)\s(?P<op>" + "|".join(KINDS) +
    r")(?P<start>-start)?\(")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%(?P<name>[\w.\-]+)\s.*\{\s*$")
_WHILE = re.compile(r"\swhile\(.*?body=%(?P<body>[\w.\-]+)")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
_CALLED = re.compile(r"(?:calls|to_apply|branch_computations|body|condition)=\{?%([\w.\-]+)")
_MESH_GROUPS = re.compile(r"replica_groups=mesh\[(?P<axes>[^\]]*)\]\s*\{(?P<used>[^}]*)\}")
_LIST_GROUPS = re.compile(r"replica_groups=\{\{(?P<first>[\d,]*)\}")
_IOTA_GROUPS = re.compile(r"replica_groups=\[(?P<dims>[\d,]+)\]<=")
_CUSTOM_HLO = re.compile(r'custom_call_target="([^"]+)"')
_CUSTOM_STABLEHLO = re.compile(r"stablehlo\.custom_call\s+@([\w.\-$]+)")


@dataclasses.dataclass(frozen=True)
class Collective:
    """All collectives of one kind in a program: executions per step and bytes per chip."""

    kind: str
    count: int
    bytes: int


def shape_bytes(type_text: str) -> list[int]:
    """Bytes of every array shape in an HLO type (`(f32[2,3]{1,0}, bf16[4])` -> [24, 8])."""
    out = []
    for dtype, dims in _SHAPE.findall(type_text):
        n = 1
        for d in filter(None, dims.split(",")):
            n *= int(d)
        out.append(n * _ITEMSIZE[dtype])
    return out


def group_size(line: str) -> int:
    """Devices in each replica group of a collective instruction (1 when not stated)."""
    mesh = _MESH_GROUPS.search(line)
    if mesh:
        sizes = dict((k.strip().strip("'"), int(v)) for k, v in
                     (item.split("=") for item in mesh.group("axes").split(",") if "=" in item))
        used = [a.strip().strip("'") for a in mesh.group("used").split(",") if a.strip()]
        n = 1
        for axis in used:
            n *= sizes.get(axis, 1)
        return n
    listed = _LIST_GROUPS.search(line)
    if listed:
        return len([x for x in listed.group("first").split(",") if x])
    iota = _IOTA_GROUPS.search(line)
    if iota:
        return int(iota.group("dims").split(",")[-1])
    return 1


def _instruction_bytes(kind: str, start: bool, type_text: str, line: str) -> int:
    sizes = shape_bytes(type_text)
    if not sizes:
        return 0
    if start and kind in ("all-gather", "collective-permute", "all-to-all"):
        # (operands..., results..., [contexts]): the largest buffer is the moved result
        return max(sizes)
    if kind == "reduce-scatter":
        return sum(sizes) * group_size(line)
    return sum(sizes)


def _computations(text: str) -> tuple[dict[str, list[str]], str]:
    """(computation name -> its instruction lines, the entry computation's name)."""
    blocks: dict[str, list[str]] = {}
    entry = ""
    current: list[str] | None = None
    for line in text.splitlines():
        match = _COMPUTATION.match(line)
        if match:
            current = blocks.setdefault(match.group("name"), [])
            if line.startswith("ENTRY"):
                entry = match.group("name")
            continue
        if line.startswith("}"):
            current = None
        elif current is not None:
            current.append(line)
    return blocks, entry


def _multiplicities(blocks: dict[str, list[str]], entry: str) -> dict[str, int]:
    """How many times each computation runs per call of the entry (loops by their trip count)."""
    times: dict[str, int] = {}

    def visit(name: str, n: int, depth: int) -> None:
        if depth > 64 or name not in blocks:
            return
        times[name] = times.get(name, 0) + n
        for line in blocks[name]:
            loop = _WHILE.search(line)
            trip = _TRIP.search(line)
            for called in _CALLED.findall(line):
                body = loop is not None and called == loop.group("body")
                visit(called, n * (int(trip.group(1)) if body and trip else 1), depth + 1)

    visit(entry, 1, 0)
    return times


def collectives(hlo_text: str) -> list[Collective]:
    """The collectives of a compiled HLO module per kind (only kinds that occur), per chip."""
    blocks, entry = _computations(hlo_text)
    times = _multiplicities(blocks, entry)
    count = {k: 0 for k in KINDS}
    size = {k: 0 for k in KINDS}
    for name, lines in blocks.items():
        n = times.get(name, 0)
        for line in lines:
            match = _INSTRUCTION.match(line) if n else None
            if match:
                kind = match.group("op")
                count[kind] += n
                size[kind] += n * _instruction_bytes(kind, bool(match.group("start")),
                                                     match.group("type"), line)
    return [Collective(k, count[k], size[k]) for k in KINDS if count[k]]


def while_loops(hlo_text: str) -> int:
    """While loops in a compiled HLO module (XLA's cost analysis counts each body once)."""
    return sum(1 for line in hlo_text.splitlines() if _WHILE.search(line))


def custom_call_targets(text: str) -> set[str]:
    """Every custom-call target named in HLO or StableHLO text."""
    return set(_CUSTOM_HLO.findall(text)) | set(_CUSTOM_STABLEHLO.findall(text))


def cpu_only_calls(targets: Iterable[str]) -> list[str]:
    """The targets among `targets` that only the CPU backend implements, sorted."""
    return sorted(t for t in targets if t.startswith(CPU_ONLY_PREFIXES))
