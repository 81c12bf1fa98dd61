"""`ctsearcher validate-data DIR`: check a CT-ScanGaze dataset and summarise it."""

from __future__ import annotations

import argparse
import sys

HELP = ("check a dataset folder (or its JSON): every problem, then a summary; exit 0 only when "
        "clean (warnings, e.g. coordinates at 0, do not fail it)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="DATA",
                        help="dataset folder (with data_simplified_split_matched_pt.json and cts/) "
                             "or the JSON file")
    parser.add_argument("--no-volumes", action="store_true",
                        help="do not check cts/ volumes (Z is then bounded by 512)")
    parser.add_argument("--headers-only", action="store_true",
                        help="check the volumes' headers but do not read their voxels (faster; "
                             "truncated files and NaN/inf voxels then go unnoticed)")
    parser.add_argument("--max-voxels", type=int, default=None, metavar="N",
                        help="refuse volumes whose header claims more voxels (default 2^30)")
    parser.add_argument("--max-problems", type=int, default=50, metavar="N",
                        help="print at most this many problems (all are counted)")


def run(args: argparse.Namespace) -> int:
    from ctsearcher_jax.data.inspect import validate_dataset
    from ctsearcher_jax.data.nifti import max_voxels_flag

    report = validate_dataset(args.path, check_volumes=not args.no_volumes,
                              max_voxels=max_voxels_flag(args.max_voxels),
                              read_voxels=not args.headers_only)
    for line in report.summary_lines():
        print(line)
    if report.warnings:
        shown_w = report.warnings[: args.max_problems]
        print(f"\n{len(report.warnings)} warning(s):", file=sys.stderr)
        for w in shown_w:
            print(f"  warning: {w}", file=sys.stderr)
        if len(report.warnings) > len(shown_w):
            print(f"  ... and {len(report.warnings) - len(shown_w)} more (--max-problems)",
                  file=sys.stderr)
    if report.ok:
        print("OK: no problems found")
        return 0
    shown = report.problems[: args.max_problems]
    print(f"\n{len(report.problems)} problem(s):", file=sys.stderr)
    for p in shown:
        print(f"  {p}", file=sys.stderr)
    if len(report.problems) > len(shown):
        print(f"  ... and {len(report.problems) - len(shown)} more (--max-problems)", file=sys.stderr)
    return 2
