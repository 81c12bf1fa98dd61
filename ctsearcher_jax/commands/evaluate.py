"""`ctsearcher evaluate --pred PRED.json --data DATA`: score predicted scanpaths against the readers."""

from __future__ import annotations

import argparse
import json
import logging
import math

from ctsearcher_jax.metrics.registry import DEFAULT_FAMILIES, FAMILIES, PROTOCOLS

HELP = "score predicted scanpaths (dataset record format) against the readers' scanpaths"

COMPILES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctsearcher_jax.flags import ListAction, alias

    parser.add_argument("--pred", metavar="FILE",
                        help="predictions JSON (records: name, subject, X, Y, Z, T, length); not "
                             "needed with --protocol human (default: none)")
    data = parser.add_argument("--data", required=True, metavar="DIR",
                               help="dataset folder or its JSON (the ground truth)")
    alias(parser, "--gt", data)
    parser.add_argument("--split", default="test", metavar="SPLIT",
                        help="ground-truth split to score ('all' = every split)")
    parser.add_argument("--metrics", action=ListAction, default=list(DEFAULT_FAMILIES),
                        metavar="FAMILY",
                        help=f"metric families, any of {' '.join(FAMILIES)} (default: "
                             f"{' '.join(DEFAULT_FAMILIES)}, the original's)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="original",
                        help="original: prediction vs the reader with the same subject (the paper's "
                             "protocol); all-pairs: every prediction vs every reader of the CT; "
                             "human: each reader vs the other readers (no predictions)")
    parser.add_argument("--multimatch-alignment", choices=("exact", "dp"), default="exact",
                        help="exact: scipy Dijkstra as the original; dp: jit DP, faster, may "
                             "differ where several alignments tie")
    parser.add_argument("--sed-code", choices=("legacy", "bijective"), default="legacy",
                        help="SED character code: legacy (the original's) or bijective")
    parser.add_argument("--out", metavar="PATH",
                        help="write the report (summary and per-pair scores) as JSON here "
                             "(default: not written)")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as JSON on stdout instead of the table (per-pair "
                             "scores: --out)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress lines (they appear when scoring takes over a few seconds)")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit 2) when a CT or reader of the split is not scored (no "
                             "prediction for it; a single-reader CT under --protocol human) "
                             "instead of reporting it")


def run(args: argparse.Namespace) -> int:
    from ctsearcher_jax.data.schema import find_dataset_json
    from ctsearcher_jax.evaluation import evaluate
    from ctsearcher_jax.paths import check_output_file

    if args.out:  # before any scoring; never over the predictions or the ground truth
        check_output_file(args.out, inputs=[args.pred, find_dataset_json(args.data)])
    report = evaluate(args.pred, args.data, split=args.split, metrics=args.metrics,
                      protocol=args.protocol, multimatch_alignment=args.multimatch_alignment,
                      sed_code=args.sed_code, strict=args.strict, progress=not args.no_progress)
    if args.json:
        data = report.to_json()
        print(json.dumps({k: v for k, v in data.items() if k not in ("pairs", "original_layout")},
                         indent=2))
    else:
        print(f"{report.protocol} protocol, split {report.split}: {report.num_cts} CTs, "
              f"{report.num_pairs} pairs")
        print(f"{'metric':<28} {'mean':>10} {'std':>10} {'n':>6}  better")
        no_std = []
        for name, st in report.summary.items():
            arrow = "higher" if st["higher_is_better"] else "lower"
            std = f"{st['std']:>10.4f}" if math.isfinite(st["std"]) else f"{'-':>10}"
            mean = f"{st['mean']:>10.4f}" if math.isfinite(st["mean"]) else f"{'n/a':>10}"
            if math.isfinite(st["mean"]) and not math.isfinite(st["std"]):
                no_std.append(name)
            print(f"{name:<28} {mean} {std} {st['n']:>6}  {arrow}")
        if no_std:
            print(f"- no std for {', '.join(no_std)}: a mean of per-metric means has no per-pair "
                  f"values to spread")
    if args.out:
        report.save(args.out)
        logging.getLogger(__name__).info(f"wrote {args.out}")
    return 0
