"""A plan as one Markdown table (what `ctsearcher plan` prints) or as JSON.

Sizes in GiB (MiB below 0.1 GiB), FLOPs in GFLOP (XLA's cost analysis, which counts a loop
body once, and the matrix FLOPs of the jaxpr with loops by trip count), seconds as s or ms;
every number is per chip and per call of the program (one optimizer step for train and finetune, one chunk of CTs
for predict, one batch of windows for extract).
"""

from __future__ import annotations

from typing import Any

from ctsearcher_jax.planning.analysis import ProgramPlan
from ctsearcher_jax.planning.chips import GIB
from ctsearcher_jax.planning.planner import Plan

# The CT-ScanGaze extraction workload the README estimates: 1,045 CTs of about 150 windows.
DATASET_CTS = 1045
WINDOWS_PER_CT = 150

COLUMNS = ("program", "batch (per chip)", "mesh", "compile s", "arguments", "temporaries",
           "outputs", "code", "total / HBM", "fits", "GFLOP XLA / matmul", "GB accessed",
           "collectives", "est. step", "MFU", "throughput")


def size(n: float) -> str:
    """Bytes as GiB (or MiB below 0.1 GiB)."""
    return f"{n / GIB:.2f} GiB" if n >= 0.1 * GIB else f"{n / 2**20:.1f} MiB"


def seconds(s: float) -> str:
    return f"{s:.2f} s" if s >= 1 else f"{s * 1e3:.1f} ms"


def fits_cell(p: ProgramPlan) -> str:
    if p.fits:
        return "fits"
    return f"does not fit by {p.shortfall_bytes / GIB:.2f} GiB"


def collectives_cell(p: ProgramPlan) -> str:
    if not p.collectives:
        return "none"
    return "; ".join(f"{c.kind} {c.count}x {size(c.bytes)}" for c in p.collectives)


def throughput(p: ProgramPlan) -> str:
    """Items per second by the estimate: CTs/s over the program's chips, windows/s per chip."""
    if p.estimate is None or p.estimate.step_s <= 0:
        return "-"
    prog = p.program
    if prog.unit == "windows":
        return f"{prog.per_chip / p.estimate.step_s:.2f} windows/s/chip"
    return f"{prog.global_batch / p.estimate.step_s:.1f} CTs/s"


def row(p: ProgramPlan) -> list[str]:
    prog, m, e = p.program, p.memory, p.estimate
    mesh = " x ".join(f"{k} {v}" for k, v in prog.mesh.items())
    used = m.total if m else (p.required_bytes or 0)
    cells = [prog.name, f"{prog.global_batch} {prog.unit} ({prog.per_chip})", mesh,
             f"{p.lower_seconds + p.compile_seconds:.1f}"]
    cells += [size(x) for x in (m.arguments, m.temporaries, m.outputs, m.code)] if m else ["-"] * 4
    cells += [f"{size(used)} / {size(p.available_bytes)}", fits_cell(p)]
    if e is None:
        return cells + ["-"] * 6
    low = ">= " if p.loops else ""  # loop bodies counted once: a lower bound
    return cells + [f"{p.flops / 1e9:.1f} / {p.matmul_flops / 1e9:.1f}",
                    f"{low}{p.bytes_accessed / 1e9:.2f}", collectives_cell(p),
                    f"{low}{seconds(e.step_s)} ({e.bound})", f"{100 * e.mfu:.1f} %",
                    ("<= " if p.loops else "") + throughput(p)]


def search_verdict(search) -> str:
    """What a `--largest-batch` search proved: the bracket, or only a batch that fits."""
    failed = [b for b, ok, _ in search.tried if not ok and b > search.per_chip]
    if failed:
        return (f"the largest per-chip batch is between {search.per_chip} (fits) and "
                f"{min(failed)} (does not)")
    # e.g. the compiler rematerialised near the HBM limit, so memory stopped being affine
    return (f"no larger batch was tried and failed, so {search.per_chip} is a batch that fits, "
            "not a proven maximum")


def extraction_hours(p: ProgramPlan, chips: int) -> float | None:
    """Hours for the CT-ScanGaze extraction (DATASET_CTS x WINDOWS_PER_CT) on `chips` chips."""
    if p.program.name != "extract" or p.estimate is None or p.estimate.step_s <= 0:
        return None
    per_chip = p.program.per_chip / p.estimate.step_s
    return DATASET_CTS * WINDOWS_PER_CT / (per_chip * chips) / 3600


def markdown(plan: Plan) -> str:
    """Header lines, the table, then the batch searches and the extraction estimate."""
    t, c = plan.topology, plan.topology.chip
    lines = [f"{t.name}: {t.chips} x {c.device_kind} ({c.name}); per chip {size(c.hbm_bytes)} HBM, "
             f"{c.bf16_flops / 1e12:.0f} TFLOP/s bf16, {c.hbm_bandwidth / 1e9:.0f} GB/s HBM, "
             f"{c.ici_bandwidth / 1e9:.0f} GB/s ICI. Config {plan.config_name or '(given)'}.",
             "Compiler numbers for one call per chip (memory_analysis, cost_analysis), not "
             "measurements on a card; step time is a roofline estimate.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(p)) + " |" for p in plan.plans]
    lines += [""] + [f"{p.program.name}: {p.program.note}" for p in plan.plans]
    for name, search in plan.searches.items():
        tried = ", ".join(f"{b} {'fits' if ok else 'no'} ({size(used)})"
                          for b, ok, used in search.tried)
        lines.append(f"\n{name} --largest-batch: largest per-chip batch that fits: {search.per_chip} "
                     f"({search.compilations} compilations: {tried})")
        if search.per_chip:
            lines.append(f"{name}: {search_verdict(search)}")
    for p in plan.plans:
        hours = extraction_hours(p, t.chips)
        if hours is not None:
            lines.append(f"\nextract: {DATASET_CTS} CTs x {WINDOWS_PER_CT} windows on the "
                         f"{t.chips} chips: about {hours:.2f} h by the estimate")
    looped = [p.program.name for p in plan.plans if p.loops]
    if looped:
        lines.append(f"\n{', '.join(looped)}: the compiled program loops; XLA's cost analysis "
                     "counts a loop body once, so its bytes and the step time are lower bounds "
                     "(the TPU compiler adds loops of its own, e.g. over Swin UNETR's windows)")
    bad = [f"{p.program.name}: {', '.join(p.cpu_only_calls)}" for p in plan.plans
           if p.cpu_only_calls]
    if bad:
        lines.append("\nCPU-only custom calls (cannot run on TPU): " + "; ".join(bad))
    return "\n".join(lines)


def to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as plain data (bytes, FLOPs and seconds unrounded)."""
    t, c = plan.topology, plan.topology.chip
    out: dict[str, Any] = {
        "topology": t.name, "chips": t.chips, "config": plan.config_name,
        "chip": {"name": c.name, "device_kind": c.device_kind, "hbm_bytes": c.hbm_bytes,
                 "bf16_flops": c.bf16_flops, "hbm_bandwidth": c.hbm_bandwidth,
                 "ici_bandwidth": c.ici_bandwidth, "source": c.source},
        "programs": [], "searches": {}}
    for p in plan.plans:
        prog, m, e = p.program, p.memory, p.estimate
        out["programs"].append({
            "program": prog.name, "global_batch": prog.global_batch, "per_chip": prog.per_chip,
            "chips": prog.chips, "unit": prog.unit, "mesh": prog.mesh, "note": prog.note,
            "lower_seconds": p.lower_seconds, "compile_seconds": p.compile_seconds,
            "fits": p.fits, "shortfall_bytes": p.shortfall_bytes,
            "memory": None if m is None else {
                "arguments": m.arguments, "temporaries": m.temporaries, "outputs": m.outputs,
                "aliased": m.aliased, "code": m.code, "total": m.total},
            "required_bytes": p.required_bytes, "available_bytes": p.available_bytes,
            "flops": p.flops, "matmul_flops": p.matmul_flops,
            "bytes_accessed": p.bytes_accessed,
            "collectives": [{"kind": x.kind, "count": x.count, "bytes": x.bytes}
                            for x in p.collectives],
            "cpu_only_calls": list(p.cpu_only_calls), "error": p.error, "loops": p.loops,
            "estimate": None if e is None else {
                "compute_s": e.compute_s, "memory_s": e.memory_s, "ici_s": e.ici_s,
                "step_s": e.step_s, "mfu": e.mfu, "bound": e.bound},
            "extraction_hours": extraction_hours(p, t.chips)})
    for name, s in plan.searches.items():
        out["searches"][name] = {"per_chip": s.per_chip, "compilations": s.compilations,
                                 "tried": [{"per_chip": b, "fits": ok, "bytes": used}
                                           for b, ok, used in s.tried]}
    return out
