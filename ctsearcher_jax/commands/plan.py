"""`ctsearcher plan --topology v5e:2x2 --config paper [--program P ...] [--largest-batch] [--json]`:
compile the programs for a TPU topology on this machine (no TPU needed) and say what fits."""

from __future__ import annotations

import argparse
import json
import logging

HELP = ("compile train/finetune/predict/extract for a TPU topology on any machine (libtpu, no "
        "TPU needed): per-chip memory against HBM, FLOPs, collectives, estimated step time")

_log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctsearcher_jax.flags import ListAction

    parser.add_argument("--topology", required=True, metavar="TOPOLOGY",
                        help="TPU slice as chip:shape, e.g. v5e:2x2, v5e:8x8, v5p:2x2x1, "
                             "v5p:4x4x4, v6e:4x4, v4:2x2x1")
    parser.add_argument("--config", default="paper", metavar="CONFIG",
                        help="YAML config file or bundled config name (paper, tiny)")
    parser.add_argument("--set", dest="overrides", action=ListAction, default=[],
                        metavar="KEY=VALUE",
                        help="override config keys, e.g. --set model.compute_dtype=bfloat16")
    parser.add_argument("--program", dest="programs", action=ListAction, default=None,
                        metavar="PROGRAM",
                        choices=("train", "finetune", "predict", "extract", "all"),
                        help="programs to compile: train, finetune, predict, extract, all (default: train)")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--global-batch", type=int, metavar="N",
                       help="global batch per call (CTs; windows for extract) of every chosen "
                            "program; must divide over its chips (default: what the command "
                            "would use, e.g. train.batch_size rounded up to the chips)")
    sizes.add_argument("--chip-batch", type=int, metavar="N",
                       help="batch per chip instead (e.g. 1: extract without its per-window "
                            "attention loop, whose cost analysis is then complete; default: none)")
    parser.add_argument("--largest-batch", action="store_true",
                        help="find the largest batch that fits instead (memory is close to "
                             "affine in the batch: 2 compilations give the line, a 3rd confirms)")
    parser.add_argument("--num-readers", type=int, default=2, metavar="N",
                        help="readers per CT: the reader slots of a batch (CT-ScanGaze has 2)")
    parser.add_argument("--samples", type=int, default=1, metavar="N",
                        help="predict's --samples: scanpaths per reader")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args: argparse.Namespace) -> int:
    from ctsearcher_jax.config import load
    from ctsearcher_jax.errors import ConfigError

    if args.num_readers < 1 or args.samples < 1:
        raise ConfigError("--num-readers and --samples must be >= 1")
    config = load(args.config, args.overrides)
    # Fail on a bad topology or a missing libtpu before importing the model code.
    from ctsearcher_jax.planning.chips import parse_topology
    from ctsearcher_jax.planning.topology import require_libtpu

    parse_topology(args.topology)
    require_libtpu()
    from ctsearcher_jax.planning import report
    from ctsearcher_jax.planning.planner import plan

    def progress(p) -> None:
        _log.info(f"{p.program.name}: batch {p.program.global_batch} compiled in "
                  f"{p.lower_seconds + p.compile_seconds:.1f} s: "
                  f"{'fits' if p.fits else 'does not fit'}")

    result = plan(args.topology, config, args.programs or ["train"], batch=args.global_batch,
                  per_chip=args.chip_batch, max_batch=args.largest_batch,
                  readers=args.num_readers, samples=args.samples, config_name=str(args.config),
                  on_plan=progress)
    if args.json:
        print(json.dumps(report.to_dict(result), indent=2))
    else:
        print(report.markdown(result))
    return 0
