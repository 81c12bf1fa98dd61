"""`ctsearcher baselines --data DIR --out DIR|P.json`: baseline scanpaths as prediction files."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = ("write baseline scanpaths (uniform, centre, drilling, human) for a split, in the "
        "predictions format, to score with the same protocol as the model")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctsearcher_jax.flags import ListAction

    parser.add_argument("--data", required=True, metavar="DIR",
                        help="dataset folder (data_simplified_split_matched_pt.json [+ cts/])")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="output folder (writes <baseline>.json for each), or a .json file "
                             "when exactly one --baseline is given")
    parser.add_argument("--split", default="test", metavar="SPLIT", help="split to generate for")
    parser.add_argument("--baseline", action=ListAction, metavar="NAME",
                        help="any of uniform centre drilling human (default: all)")
    parser.add_argument("--samples", type=int, default=1, metavar="N",
                        help="scanpaths per reader for the random baselines")
    parser.add_argument("--seed", type=int, default=0, metavar="SEED", help="random seed")
    parser.add_argument("--z-extent", default="volume", metavar="K",
                        help="slice count K for Z: 'volume' (each CT's, from cts/; default) or an "
                             "integer used for every CT (the legacy frame is 512)")


def run(args: argparse.Namespace) -> int:
    from ctsearcher_jax import baselines
    from ctsearcher_jax.data.inspect import find_volumes, slice_counts
    from ctsearcher_jax.data.schema import find_dataset_json, load_dataset, scanpaths_to_records
    from ctsearcher_jax.errors import ConfigError, DataError
    from ctsearcher_jax.io import atomic_write_json
    from ctsearcher_jax.paths import check_output_dir, check_output_file

    names = args.baseline or list(baselines.BASELINES)
    bad = [n for n in names if n not in baselines.BASELINES]
    if bad:
        raise ConfigError(f"--baseline {bad}: choose from {list(baselines.BASELINES)}")
    if args.samples < 1:
        raise ConfigError(f"--samples {args.samples}: must be >= 1")
    out = Path(args.out)
    single_file = out.suffix == ".json"
    if single_file and len(names) != 1:
        raise ConfigError(f"--out {out}: a .json file takes exactly one --baseline; pass a folder "
                          f"to write all of {names}")

    json_path = find_dataset_json(args.data)
    if not single_file:
        check_output_dir(out)
    for name in names:  # before any work; never over the ground truth
        check_output_file(out if single_file else out / f"{name}.json", inputs=[json_path])
    all_items = load_dataset(json_path)
    items = [it for it in all_items if it.split == args.split]
    if not items:
        splits = sorted({str(it.split) for it in all_items})
        raise DataError(f"{json_path}: no CT in split {args.split!r}; splits present: {splits}")
    train = [it for it in all_items if it.split == "train"]
    stats = baselines.ScanpathStats.from_items(train) if train else None
    if stats is None and any(n != "human" for n in names):
        raise DataError(f"{json_path}: no CT in split 'train' to fit lengths and durations from; "
                        f"only --baseline human works without one")

    counts: dict[str, int] | None = None
    z_extent = 512
    if args.z_extent == "volume":
        cts_dir = json_path.parent / "cts"
        if not cts_dir.is_dir():
            raise DataError(f"{cts_dir}: no cts/ folder to read slice counts from; pass "
                            f"--z-extent N (e.g. 512, the legacy frame)")
        counts, problems = slice_counts(find_volumes(cts_dir))
        if problems:
            raise DataError(problems[0])
        missing = [it.name for it in items if it.name not in counts]
        if missing:
            raise DataError(f"CT {missing[0]!r}: no volume {cts_dir / (missing[0] + '.nii.gz')} "
                            f"to read its slice count from; add it or pass --z-extent N")
    else:
        try:
            z_extent = int(args.z_extent)
        except ValueError:
            raise ConfigError(f"--z-extent {args.z_extent!r}: 'volume' or a positive integer") from None
        if z_extent < 1:
            raise ConfigError(f"--z-extent {z_extent}: must be >= 1")

    for name in names:
        scanpaths = baselines.generate(name, items, seed=args.seed, stats=stats,
                                       samples_per_reader=args.samples, slice_counts=counts,
                                       z_extent=z_extent)
        path = out if single_file else out / f"{name}.json"
        if not scanpaths:
            logging.getLogger(__name__).warning(
                f"{name}: nothing to write (every CT of split {args.split!r} has one reader)")
            continue
        atomic_write_json(path, scanpaths_to_records(scanpaths), indent=None)
        note = (" (each reader's prediction = the other readers; `evaluate` scores it as "
                "`--protocol human`)" if name == "human" else "")
        print(f"{name}: {len(scanpaths)} scanpaths for {len(items)} CTs -> {path}{note}")
    return 0
