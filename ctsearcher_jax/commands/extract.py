"""`ctsearcher extract`: Swin UNETR features for a directory of NIfTI CTs.

`ctsearcher extract --ct-dir DIR --swin-weights W --out FEATURES`.

Writes `<name>.npy` (dec4) and `<name>_hidden_states_out_4.npy`, `(16*feature_size, gi, gj, gk)`
float32, plus `manifest.json`, into `--out`. Exit code 0 when every file was extracted or already up
to date, 1 when some files failed (each is reported with its name), 2 on a usage error (missing
directory, no CTs, unreadable weights).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

HELP = "extract Swin UNETR features from a folder of NIfTI CT volumes"


COMPILES = True
EXTRACTS = True  # Swin UNETR extraction: on a CPU-only host, runtime/allocator.py


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctsearcher_jax.flags import ListAction, alias, config_default

    cts = parser.add_argument("--ct-dir", required=True, metavar="DIR",
                              help="folder of .nii/.nii.gz CT volumes")
    alias(parser, "--cts", cts)
    weights = parser.add_argument("--swin-weights", required=True, metavar="FILE",
                                  help="converted weights (`ctsearcher convert-monai`), or 'random' "
                                       "for a seeded random-initialised encoder (testing only)")
    alias(parser, "--weights", weights)
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="feature folder to write (created if needed)")
    parser.add_argument("--config", metavar="CONFIG",
                        help="YAML config (file or bundled name: paper, tiny) whose `extract` "
                             "section gives the defaults below (default: none: the paper values)")
    parser.add_argument("--set", dest="overrides", action=ListAction, default=[],
                        metavar="KEY=VALUE",
                        help="override config keys, e.g. --set extract.hu_min=-200")
    parser.add_argument("--overlap", type=float, metavar="F",
                        help=f"window overlap in [0, 1) ({config_default('extract.overlap')})")
    parser.add_argument("--batch", type=int, metavar="N",
                        help=f"windows per device per step ({config_default('extract.batch')})")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"),
                        help=f"encoder compute dtype ({config_default('extract.dtype')})")
    parser.add_argument("--feature-size", type=int, metavar="N",
                        help="Swin UNETR width for --swin-weights random (48 = BTCV); must match a "
                             f"file ({config_default('extract.feature_size')})")
    parser.add_argument("--merge", choices=("original", "gaussian", "constant"),
                        help=f"how window features are combined "
                             f"({config_default('extract.merge')})")
    parser.add_argument("--canonical", action="store_true", default=None,
                        help="reorient volumes to RAS first (default: extract.canonical of "
                             "--config; off = stored voxel order, as the original)")
    limit = parser.add_argument("--max-cts", type=int, metavar="N",
                                help="only the first N volumes, sorted by file name (default: all)")
    alias(parser, "--limit", limit)
    parser.add_argument("--seed", type=int, default=0, metavar="SEED",
                        help="seed of --swin-weights random")
    recompute = parser.add_argument("--recompute", action="store_true",
                                    help="re-extract volumes whose features are up to date")
    alias(parser, "--force", recompute)
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars: a plain line per CT (what a non-terminal stderr "
                             "gets anyway)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="loader threads that read and decode NIfTI volumes ahead of the device "
                             "(default: half the CPU cores, 1 to 8)")
    parser.add_argument("--max-voxels", type=int, metavar="N",
                        help="refuse volumes whose header claims more voxels, unread (default "
                             "2^30; extract.max_voxels)")
    parser.add_argument("--memory-budget", type=float, metavar="GB",
                        help="decoded volumes the loader threads may hold at once, in GB (default: "
                             "half the machine's memory; extract.memory_budget_gb); the peak is "
                             "in the summary")
    parser.add_argument("--summary-json", metavar="FILE",
                        help="also write the run summary (per-CT encode time and device wait on "
                             "input, failures) as JSON here (default: not written)")
    _multiprocess_flags(parser)


def _multiprocess_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coordinator", metavar="HOST:PORT",
                        help="process 0 of a multi-host run without SLURM/TPU auto-detection; "
                             "each process takes its share of CTs (default: auto-detected)")
    parser.add_argument("--num-processes", type=int, metavar="N",
                        help="number of processes, with --coordinator (default: auto-detected)")
    parser.add_argument("--process-id", type=int, metavar="I",
                        help="this process's index, with --coordinator (default: auto-detected)")


def run(args: argparse.Namespace) -> int:
    from ctsearcher_jax.config import load
    from ctsearcher_jax.errors import ConfigError
    from ctsearcher_jax.paths import check_output_dir

    check_output_dir(args.out)  # before the encoder compiles

    config = load(args.config, args.overrides).extract
    flags = {"overlap": args.overlap, "batch": args.batch, "dtype": args.dtype,
             "feature_size": args.feature_size, "merge": args.merge, "canonical": args.canonical,
             "max_voxels": args.max_voxels, "memory_budget_gb": args.memory_budget}
    changes = {k: v for k, v in flags.items() if v is not None}
    try:
        config = dataclasses.replace(config, **changes)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (from the command-line flags)") from None
    if args.max_cts is not None and args.max_cts < 1:
        raise ConfigError("--max-cts must be >= 1")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.feature_size is not None and args.swin_weights != "random":
        _check_file_feature_size(args.swin_weights, args.feature_size)

    from ctsearcher_jax.train.distributed import maybe_initialize

    maybe_initialize(coordinator=args.coordinator, num_processes=args.num_processes,
                     process_id=args.process_id)
    from ctsearcher_jax.runtime.devices import startup_line

    # every process: a host that sees no accelerator stands out
    logging.getLogger(__name__).info(startup_line())

    import jax

    from ctsearcher_jax.runtime.folder_lock import locked
    from feature_extraction.directory import extract_directory

    # one run per feature folder (its processes share it: only process 0 locks)
    with locked(args.out, command="extract", writer=jax.process_index() == 0):
        summary = extract_directory(args.ct_dir, args.out, args.swin_weights, config,
                                    limit=args.max_cts, seed=args.seed, force=args.recompute,
                                    progress=not args.no_progress, workers=args.workers)

    if jax.process_index() == 0 or summary.failed:
        for line in summary.lines():
            print(line)
    if args.summary_json:
        from ctsearcher_jax.io import atomic_write_json

        path = args.summary_json
        if jax.process_count() > 1:  # one file per process: each has its own share of CTs
            path = f"{path}.process{jax.process_index()}"
        atomic_write_json(path, summary.to_dict())
    return 0 if summary.ok else 1


def _check_file_feature_size(path: str, wanted: int) -> None:
    """Refuse an explicit --feature-size that contradicts the weights file (reads its header only)."""
    import json

    from ctsearcher_jax.errors import WeightsError

    try:
        from safetensors import safe_open

        with safe_open(path, framework="numpy") as f:
            have = json.loads((f.metadata() or {})["config"])["feature_size"]
    except Exception:
        return  # unreadable: the weights loader reports it with the full reason
    if have != wanted:
        raise WeightsError(f"{path}: holds feature_size {have} but --feature-size is {wanted}; "
                           "drop the flag (a weights file sets its own width)")
