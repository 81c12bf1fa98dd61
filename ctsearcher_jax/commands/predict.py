"""`ctsearcher predict`: sample scanpaths for CT volumes with a trained CT-Searcher."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "predict scanpaths for CT volumes (a file, a folder, or a dataset split): JSON + figures"


COMPILES = True
EXTRACTS = True  # Swin UNETR extraction: on a CPU-only host, runtime/allocator.py


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctsearcher_jax.commands.extract import _multiprocess_flags
    from ctsearcher_jax.flags import ListAction, alias

    parser.add_argument("cts", nargs="?", metavar="CT_OR_DIR",
                        help="a CT (.nii/.nii.gz) or a folder of CTs (or use --data)")
    parser.add_argument("--data", metavar="DIR",
                        help="a dataset folder: predict its CTs (cts/<name>.nii.gz) with one "
                             "sample per reader per --samples, and show ground truth "
                             "(default: none: predict the CT or folder given)")
    parser.add_argument("--split", metavar="SPLIT",
                        help="with --data: only this split, e.g. test (default: every split)")
    model = parser.add_argument("--model", required=True, metavar="PATH",
                                help="the model to use: a training run folder (its model/) or a "
                                     "model folder")
    alias(parser, "--checkpoint", model)
    parser.add_argument("--swin-weights", metavar="FILE",
                        help="converted Swin UNETR weights (`ctsearcher convert-monai`) to extract "
                             "features the cache lacks, or 'random' (random-initialised encoder, "
                             "for testing: features carry no pretrained meaning). Default: reuse "
                             "the cached features only (--features). Features made with other "
                             "weights are never replaced")
    parser.add_argument("--samples", type=int, default=1, metavar="N",
                        help="scanpaths per CT (per reader with --data)")
    parser.add_argument("--seed", type=int, default=0, metavar="SEED", help="sampling seed")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="output folder: predictions.json, figures/")
    parser.add_argument("--features", metavar="DIR",
                        help="feature cache folder (default: OUT/features); reused when up to date")
    figures = parser.add_argument("--max-figure-cts", type=int, default=4, metavar="N",
                                  help="draw figures for the first N CTs (0 = none)")
    alias(parser, "--figure-cts", figures)
    parser.add_argument("--no-progress", action="store_true",
                        help="no per-CT progress lines")
    parser.add_argument("--reader", dest="readers", action=ListAction, metavar="ID",
                        help="reader-conditioned models: predict as these readers (subject ids). "
                             "Default: every reader (the ground-truth readers with --data, else "
                             "all the model was trained on)")
    parser.add_argument("--set", dest="overrides", action=ListAction, default=[],
                        metavar="KEY=VALUE",
                        help="override eval/data settings, e.g. --set eval.min_length=50")
    parser.add_argument("--max-voxels", type=int, default=None, metavar="N",
                        help="refuse volumes whose header claims more voxels, unread (default 2^30)")
    _multiprocess_flags(parser)


def run(args: argparse.Namespace) -> int:
    from ctsearcher_jax.data.inspect import find_volumes
    from ctsearcher_jax.data.nifti import max_voxels_flag
    from ctsearcher_jax.data.schema import find_dataset_json, load_dataset
    from ctsearcher_jax.errors import DataError
    from ctsearcher_jax.paths import check_output_dir, check_output_file
    from ctsearcher_jax.predict import PREDICTIONS, predict_volumes
    from feature_extraction.directory import list_volumes

    if args.samples < 1:
        raise DataError(f"--samples must be >= 1, got {args.samples}")
    max_voxels = max_voxels_flag(args.max_voxels)
    readers = None
    if args.data:
        if args.cts:
            raise DataError("give either a CT path or --data, not both")
        items = load_dataset(args.data, split=args.split)
        cts_dir = find_dataset_json(args.data).parent / "cts"
        found = find_volumes(cts_dir) if cts_dir.is_dir() else {}
        missing = [it.name for it in items if it.name not in found]
        if missing:
            raise DataError(f"{cts_dir}: no volume for CT(s) {missing[:5]}; the dataset folder needs "
                            f"cts/<name>.nii.gz for every CT it predicts")
        volumes = [found[it.name] for it in items]
        readers = {it.name: it.readers for it in items}
    elif args.cts:
        path = Path(args.cts)
        if path.is_dir():
            volumes, bad = list_volumes(path)
            for f, m in bad:
                logging.getLogger(__name__).error(f"{f}: {m}")
        elif path.is_file():
            volumes = [path]
        else:
            raise DataError(f"{path}: no such CT file or folder")
    else:
        raise DataError("nothing to predict: give a CT file or folder, or --data DATASET_DIR")

    # Outputs checked before the model loads and features are made (minutes of work).
    out = check_output_dir(args.out)
    inputs = [*volumes, find_dataset_json(args.data) if args.data else None]
    check_output_file(out / PREDICTIONS, inputs=inputs)
    if args.swin_weights is not None:  # only then may features be written
        check_output_dir(args.features or out / "features", flag="--features")
    from ctsearcher_jax.runtime.devices import startup_line
    from ctsearcher_jax.train.distributed import maybe_initialize

    maybe_initialize(coordinator=args.coordinator, num_processes=args.num_processes,
                     process_id=args.process_id)
    logging.getLogger(__name__).info(startup_line())
    import contextlib

    import jax

    from ctsearcher_jax.runtime.folder_lock import locked

    writer = jax.process_index() == 0  # the processes of one run share the folders
    with contextlib.ExitStack() as stack:  # one run per output folder and feature folder it writes
        stack.enter_context(locked(out, command="predict", writer=writer))
        if args.swin_weights is not None:
            stack.enter_context(locked(args.features or out / "features", command="predict",
                                       flag="--features", writer=writer))
        summary = predict_volumes(volumes, args.model, args.out, swin_weights=args.swin_weights,
                                  samples=args.samples, seed=args.seed, feature_dir=args.features,
                                  readers=readers, figures=args.max_figure_cts > 0,
                                  figure_limit=args.max_figure_cts, overrides=args.overrides,
                                  progress=not args.no_progress, reader_filter=args.readers,
                                  max_voxels=max_voxels)
    if summary.predictions:
        print(f"{summary.scanpaths} scanpaths for {len(summary.cts)} CT(s) -> {summary.predictions}")
    for name, figs in summary.figures.items():
        print(f"figures {name}: " + ", ".join(str(p) for p in figs.values()))
    if summary.random_features:
        print(f"note: the features of {len(summary.random_features)} CT(s) come from a "
              f"random-initialised Swin UNETR (see the manifest); these scanpaths show the "
              f"pipeline works, not what the model does on real features")
    for f, m in summary.failed:
        print(f"FAILED {f}: {m}")
    logging.getLogger(__name__).info(f"done in {summary.seconds:.1f} s")
    return 0 if summary.ok and summary.predictions else 1
