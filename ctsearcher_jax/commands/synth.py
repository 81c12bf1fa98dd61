"""`ctsearcher synth`: write a synthetic CT-ScanGaze dataset (CT phantoms + reader scanpaths)."""

from __future__ import annotations

import argparse

HELP = "write a synthetic CT-ScanGaze dataset (NIfTI phantoms with lesions and reader scanpaths)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctsearcher_jax.data.synthetic import DEFAULT_SHAPE
    from ctsearcher_jax.flags import alias

    parser.add_argument("--out", required=True, metavar="PATH",
                        help="output folder (must be empty or missing unless --force)")
    cts = parser.add_argument("--num-cts", type=int, default=4, metavar="N",
                              help="number of CTs")
    alias(parser, "--cts", cts)
    readers = parser.add_argument("--num-readers", type=int, default=2, metavar="N",
                                  help="readers per CT, one scanpath each")
    alias(parser, "--readers", readers)
    parser.add_argument("--seed", type=int, default=0, metavar="SEED",
                        help="seed; the same seed gives byte-identical files")
    parser.add_argument("--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE),
                        metavar=("I", "J", "K"), help="volume shape: rows, columns, slices")
    parser.add_argument("--min-fixations", type=int, default=50, metavar="N",
                        help="fewest fixations per scanpath")
    parser.add_argument("--max-fixations", type=int, default=400, metavar="N",
                        help="most fixations per scanpath")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty folder, replacing synthetic files of the same "
                             "names (other files are left alone)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ctsearcher_jax.data.synthetic import synthesize
    from ctsearcher_jax.errors import ConfigError, DataError
    from ctsearcher_jax.paths import check_output_dir

    # The library speaks Python (num_cts=, force=True); the command checks in its own words first.
    if args.num_cts < 1 or args.num_readers < 1:
        raise ConfigError(f"--num-cts {args.num_cts} --num-readers {args.num_readers}: both must "
                          f"be >= 1")
    if not 1 <= args.min_fixations <= args.max_fixations:
        raise ConfigError(f"--min-fixations {args.min_fixations} --max-fixations "
                          f"{args.max_fixations}: need 1 <= min <= max")
    out = check_output_dir(args.out)
    if Path(out).is_dir() and any(Path(out).iterdir()) and not args.force:
        raise DataError(f"{out}: folder exists and is not empty; choose another --out, or pass "
                        f"--force to replace the synthetic files in it")
    summary = synthesize(args.out, num_cts=args.num_cts, num_readers=args.num_readers,
                         seed=args.seed, shape=tuple(args.shape), min_fixations=args.min_fixations,
                         max_fixations=args.max_fixations, force=args.force)
    for line in summary.lines():
        print(line)
    return 0
