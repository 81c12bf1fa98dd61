"""`ctsearcher demo`: the whole pipeline on the embedded synthetic dataset, on a CPU.

Every stage listed here is real; a stage joins the list when its module exists.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "run the pipeline on a small synthetic dataset and print where everything is"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    parser.add_argument("--cts", type=int, default=4, help="synthetic CTs (default 4)")
    parser.add_argument("--readers", type=int, default=2, help="readers per CT (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--force", action="store_true", help="replace an existing demo run directory")


def run(args: argparse.Namespace) -> int:
    from ctsearcher_jax.data.inspect import validate_dataset
    from ctsearcher_jax.data.synthetic import synthesize
    from ctsearcher_jax.errors import DataError

    out = Path(args.out)
    data_dir = out / "data"
    if data_dir.exists() and any(data_dir.iterdir()) and not args.force:
        raise DataError(f"{data_dir} already exists; pass --force to replace the demo run or "
                        f"choose another --out")
    t0 = time.perf_counter()
    print(f"[1/2] synth: {args.cts} CTs x {args.readers} readers -> {data_dir}")
    synthesize(data_dir, num_cts=args.cts, num_readers=args.readers, seed=args.seed,
               force=args.force)
    print("[2/2] validate-data")
    report = validate_dataset(data_dir)
    for line in report.summary_lines():
        print(f"      {line}")
    if not report.ok:
        for p in report.problems:
            print(f"      problem: {p}")
        raise DataError(f"{data_dir}: the synthetic dataset failed validation (a bug: please report)")
    print(f"\ndemo finished in {time.perf_counter() - t0:.1f} s")
    print(f"  dataset: {report.json_path}")
    print(f"  volumes: {data_dir / 'cts'}")
    return 0
