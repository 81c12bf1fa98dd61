"""README "Planned on TPU without a TPU": the paper config compiled for TPU topologies.

For each topology: train in bfloat16 at the largest global batch that fits (`--largest-batch`), and
the paper config as it is (float32) for train, finetune, predict and extract at each command's
default batch. Each run is one `ctsearcher plan ... --json` in its own process (a compilation of
the paper step peaks at several GiB of host memory, which a long-lived process would keep),
written to `OUT/<topology>__<run>.json` when it ends; the README table is printed at the end and
written to `OUT/table.md`. Every compilation is real (`plan` turns the persistent cache off: a
cached executable would hide a regression). The paper config takes 10-40 minutes per
compilation on a loaded 2-core machine: run it in the background, with `nice`:

    nice -n 19 python scripts/plan_tpu_table.py --out runs/plan_tpu > runs/plan_tpu.log 2>&1 &

`--resume` keeps the runs already in OUT (off by default); `--table-only` prints the table of
what OUT holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TOPOLOGIES = ("v5e:2x2", "v5p:2x2x1", "v6e:2x2", "v5p:4x4x4")
BF16 = ["--set", "model.compute_dtype=bfloat16"]
RUNS = (("train_f32", "train float32", ["--program", "train"]),
        ("finetune", "finetune float32", ["--program", "finetune"]),
        ("predict", "predict float32", ["--program", "predict"]),
        ("extract", "extract float32", ["--program", "extract"]),
        ("train_bf16_max", "train bfloat16, largest batch", [*BF16, "--program", "train",
                                                            "--largest-batch"]))
GIB = 1024 ** 3


def run_one(topology: str, config: str, args: list[str], path: Path) -> bool:
    """One `ctsearcher plan --json` in a fresh process; its JSON to `path`. True on success."""
    command = [sys.executable, "-m", "ctsearcher_jax.cli", "plan", "--topology", topology,
               "--config", config, *args, "--json"]
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    t0 = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    print(f"{time.strftime('%H:%M:%S')} {topology} {' '.join(args)}: exit {out.returncode} after "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    sys.stderr.write(out.stderr)
    if out.returncode != 0:
        return False
    tmp = path.with_suffix(".tmp")
    tmp.write_text(out.stdout)
    tmp.replace(path)
    return True


def _row(topology: str, label: str, d: dict) -> str:
    p = d["programs"][0]
    mem, est = p["memory"], p["estimate"]
    gib = (mem["total"] if mem else p["required_bytes"] or 0) / GIB
    coll = sum(c["bytes"] for c in p["collectives"]) / 2**20
    search = d["searches"].get(p["program"])
    if search:
        label += f" ({search['compilations']} compilations)"
    cells = [topology, label, f"{p['global_batch']} ({p['per_chip']})",
             f"{gib:.2f} / {d['chip']['hbm_bytes'] / GIB:.0f}",
             "yes" if p["fits"] else f"no (+{p['shortfall_bytes'] / GIB:.1f})",
             f"{p['flops'] / 1e9:.0f} / {p['matmul_flops'] / 1e9:.0f}", f"{coll:.1f}"]
    low = ">= " if p.get("loops") else ""  # XLA counted each loop body once
    if est:
        cells += [f"{low}{est['step_s'] * 1e3:.1f} ({est['bound']})", f"{100 * est['mfu']:.1f}"]
    else:
        cells += ["-", "-"]
    cells.append(f"{p['lower_seconds'] + p['compile_seconds']:.0f}")
    if p["program"] == "extract" and est:
        wps = p["per_chip"] / est["step_s"]
        bound = "<= " if low else ""
        cells[1] += (f": {bound}{wps:.1f} windows/s/chip, {low}{p['extraction_hours']:.2f} h "
                     f"for 1,045 CTs")
    return "| " + " | ".join(cells) + " |"


def table(out: Path, topologies: list[str]) -> str:
    """The README table: one row per (topology, run) found in `out`."""
    lines = ["| topology | program | global batch (per chip) | GiB per chip / HBM | fits | "
             "GFLOP per chip XLA / matmul | collective MiB per chip | est. step ms (bound) | "
             "MFU % | compile s |", "|" + "---|" * 10]
    for topology in topologies:
        for key, label, _ in RUNS:
            path = out / f"{topology.replace(':', '_')}__{key}.json"
            if path.exists():
                lines.append(_row(topology, label, json.loads(path.read_text())))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/plan_tpu"))
    parser.add_argument("--config", default="paper")
    parser.add_argument("--topology", action="append", help=f"default: {', '.join(TOPOLOGIES)}")
    parser.add_argument("--run", action="append", choices=[k for k, _, _ in RUNS],
                        help="default: every run")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in OUT")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    topologies = args.topology or list(TOPOLOGIES)
    failed = 0
    for topology in [] if args.table_only else topologies:
        for key, _, run_args in RUNS:
            path = args.out / f"{topology.replace(':', '_')}__{key}.json"
            if (args.run and key not in args.run) or (args.resume and path.exists()):
                continue
            failed += not run_one(topology, args.config, run_args, path)
    text = table(args.out, topologies)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
