"""`ctsearcher synth`: write a synthetic CT-ScanGaze dataset (CT phantoms + reader scanpaths)."""

from __future__ import annotations

import argparse

HELP = "write a synthetic CT-ScanGaze dataset (NIfTI phantoms with lesions and reader scanpaths)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctsearcher_jax.data.synthetic import DEFAULT_SHAPE

    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (must be empty or missing unless --force)")
    parser.add_argument("--cts", type=int, default=4, metavar="N", help="number of CTs (default 4)")
    parser.add_argument("--readers", type=int, default=2, metavar="R",
                        help="readers per CT, one scanpath each (default 2)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed; the same seed gives byte-identical files (default 0)")
    parser.add_argument("--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE),
                        metavar=("I", "J", "K"),
                        help="volume shape: rows, columns, slices (default %(default)s)")
    parser.add_argument("--min-fixations", type=int, default=50,
                        help="fewest fixations per scanpath (default 50)")
    parser.add_argument("--max-fixations", type=int, default=400,
                        help="most fixations per scanpath (default 400)")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty folder, replacing synthetic files of the same "
                             "names (other files are left alone)")


def run(args: argparse.Namespace) -> int:
    from ctsearcher_jax.data.synthetic import synthesize
    from ctsearcher_jax.paths import check_output_dir

    check_output_dir(args.out)
    summary = synthesize(args.out, num_cts=args.cts, num_readers=args.readers, seed=args.seed,
                         shape=tuple(args.shape), min_fixations=args.min_fixations,
                         max_fixations=args.max_fixations, force=args.force)
    for line in summary.lines():
        print(line)
    return 0
