"""`ctsearcher evaluate --pred PRED.json --gt DATA`: score predicted scanpaths against the readers."""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

from ctsearcher_jax.metrics.registry import DEFAULT_FAMILIES, FAMILIES

HELP = "score predicted scanpaths (dataset record format) against the readers' scanpaths"

PROTOCOLS = ("original", "all-pairs", "human")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", help="predictions JSON (records: name, subject, X, Y, Z, T, length); "
                                       "not needed with --protocol human")
    parser.add_argument("--gt", required=True, help="dataset folder or its JSON (ground truth)")
    parser.add_argument("--split", default="test", help="ground-truth split to score (default test; "
                                                        "'all' = every split)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_FAMILIES),
                        help=f"metric families: {' '.join(FAMILIES)} (default: "
                             f"{' '.join(DEFAULT_FAMILIES)}, the original's)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="original",
                        help="original: prediction vs the reader with the same subject (the paper's "
                             "protocol); all-pairs: every prediction vs every reader of the CT; "
                             "human: each reader vs the other readers (no predictions)")
    parser.add_argument("--multimatch-alignment", choices=("exact", "dp"), default="exact",
                        help="exact: scipy Dijkstra as the original (default); dp: jit DP, faster, "
                             "may differ where several alignments tie")
    parser.add_argument("--sed-code", choices=("legacy", "bijective"), default="legacy",
                        help="SED character code: legacy (the original's, default) or bijective")
    parser.add_argument("--out", help="write the report (summary and per-pair scores) as JSON here")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as JSON on stdout instead of the table (per-pair "
                             "scores: --out)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress lines (they appear when scoring takes over a few seconds)")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit 2) when a CT or reader of the split is not scored (no "
                             "prediction for it; a single-reader CT under --protocol human) "
                             "instead of reporting it")


class ScoringProgress:
    """`progress(done, total)` for `metrics.protocol.run_pairs`: a log line with pairs done,
    elapsed time and ETA, written only once scoring has run for `after_s` seconds and then at
    most every `every_s` seconds (and at the end), so short runs stay silent."""

    def __init__(self, after_s: float = 3.0, every_s: float = 10.0):
        import time

        self._clock = time.perf_counter
        self.start = self._clock()
        self.after_s, self.every_s = after_s, every_s
        self.last: float | None = None

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        elapsed = now - self.start
        if done == 0:
            self.start, self.last = now, None
            return
        due = elapsed >= self.after_s and (
            done == total or self.last is None or now - self.last >= self.every_s)
        if due:
            self.last = now
            eta = elapsed / done * (total - done)
            logging.getLogger(__name__).info(
                f"scored {done}/{total} pairs in {elapsed:.0f} s" +
                (f", ETA {eta:.0f} s" if done < total else ""))


def _finite(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def group_predictions(gt_items: list, pred_scanpaths: list, pred_source: str):
    """Predictions by CT, in record order: (pred arrays per CT, [(CT index, subject)] per
    record, [{"record", "subject"}] per CT). A record of a CT not in `gt_items` is a DataError."""
    from ctsearcher_jax.errors import DataError

    by_name = {it.name: k for k, it in enumerate(gt_items)}
    pred_cts: list[list] = [[] for _ in gt_items]
    labels: list[list] = [[] for _ in gt_items]
    order = []
    for sp in pred_scanpaths:
        c = by_name.get(sp.name)
        if c is None:
            raise DataError(f"{pred_source}: record {sp.index}, CT {sp.name!r}: not in the ground "
                            f"truth of the selected split; check --gt and --split")
        pred_cts[c].append(sp.as_array())
        labels[c].append({"record": sp.index, "subject": sp.subject})
        order.append((c, sp.subject))
    return pred_cts, order, labels


def run(args: argparse.Namespace) -> int:
    from ctsearcher_jax.data.schema import find_dataset_json, group_by_ct, load_records
    from ctsearcher_jax.errors import DataError
    from ctsearcher_jax.io import atomic_write_json
    from ctsearcher_jax.metrics import protocol as proto
    from ctsearcher_jax.metrics.registry import FAMILY, METRICS

    from ctsearcher_jax.paths import check_output_file

    if args.out:  # before any scoring; never over the predictions or the ground truth
        check_output_file(args.out, inputs=[args.pred, find_dataset_json(args.gt)])
    families = list(dict.fromkeys(args.metrics))
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise DataError(f"--metrics: unknown families {unknown}; choose from {list(FAMILIES)}")
    gt_path = find_dataset_json(args.gt)
    # scoring accepts [0, frame]: 0-based exports exist and the original's metrics score them
    items = group_by_ct(load_records(gt_path, lowest=0), gt_path)
    if args.split != "all":
        items = [it for it in items if it.split == args.split]
        if not items:
            raise DataError(f"{gt_path}: no CT in split {args.split!r}")
    kwargs = dict(multimatch_alignment=args.multimatch_alignment, sed_code=args.sed_code)
    if not args.no_progress:
        kwargs["progress"] = ScoringProgress()

    not_scored: dict[str, list] = {}
    if args.protocol == "human":
        single = [it.name for it in items if len(it.readers) < 2]
        if single:
            not_scored["single_reader_cts"] = single
        _check_scored(not_scored, args, gt_path, scored_pairs=sum(
            len(it.readers) * (len(it.readers) - 1) for it in items))
        human_pairs = proto.pairs_human([len(it.readers) for it in items])  # as scored below
        result = proto.human_consistency(
            [[r.as_array() for r in it.readers] for it in items], families,
            describe=lambda k: _human_pair(items, human_pairs[k]), **kwargs)
        names = [it.name for it in items]
        pair_rows = [{"ct": names[p.ct], "gt_subject": items[p.ct].readers[p.gt_index].subject,
                      "pred_subject": items[p.ct].readers[p.pred_index].subject} for p in result.pairs]
        n_cts = sum(1 for it in items if len(it.readers) > 1)
    else:
        if not args.pred:
            raise DataError("--pred is required unless --protocol human")
        pred_path = Path(args.pred)
        preds = load_records(pred_path, require_split=False, lowest=0)
        pred_cts, order, labels = group_predictions(items, preds, str(pred_path))
        gt_cts = [[r.as_array() for r in it.readers] for it in items]
        if args.protocol == "original":
            records = [sp.index for sp in preds]
            pairs = proto.pairs_by_subject(
                [[r.subject for r in it.readers] for it in items], order,
                describe=lambda k: f"{pred_path}: record {records[k]}, CT {items[order[k][0]].name!r}")
        else:
            pairs = proto.pairs_all([len(it.readers) for it in items], [c for c, _ in order])
        missing_cts = [it.name for c, it in enumerate(items) if not pred_cts[c]]
        if missing_cts:
            not_scored["cts_without_predictions"] = missing_cts
        paired = {(p.ct, p.gt_index) for p in pairs}
        missing_readers = [{"ct": it.name, "subject": r.subject} for c, it in enumerate(items)
                           if pred_cts[c] for g, r in enumerate(it.readers) if (c, g) not in paired]
        if missing_readers:
            not_scored["readers_without_predictions"] = missing_readers
        _check_scored(not_scored, args, gt_path, scored_pairs=len(pairs))

        def describe(k: int) -> str:
            p = pairs[k]
            return (f"CT {items[p.ct].name!r}, reader {items[p.ct].readers[p.gt_index].subject!r} "
                    f"vs {pred_path} record {labels[p.ct][p.pred_index]['record']}")

        result = proto.run_pairs(pairs, gt_cts, pred_cts, families, describe=describe, **kwargs)
        pair_rows = [{"ct": items[p.ct].name, "gt_subject": items[p.ct].readers[p.gt_index].subject,
                      "pred_record": labels[p.ct][p.pred_index]["record"],
                      "pred_subject": labels[p.ct][p.pred_index]["subject"]} for p in pairs]
        n_cts = sum(1 for preds_of_ct in pred_cts if preds_of_ct)

    pair_metrics = [n for n in result.scores if FAMILY[METRICS[n].family].unit == "pair"]
    for k, row in enumerate(pair_rows):
        for n in pair_metrics:
            row[n] = _finite(float(result.scores[n][k]))

    summary = {n: {"mean": _finite(s["mean"]), "std": _finite(s["std"]), "n": s["n"],
                   "higher_is_better": METRICS[n].higher_is_better}
               for n, s in result.summary.items()}
    header = {"protocol": args.protocol, "split": args.split, "gt": str(gt_path), "pred": args.pred,
              "metrics": families, "multimatch_alignment": args.multimatch_alignment,
              "sed_code": args.sed_code, "num_cts": n_cts, "num_pairs": len(pair_rows),
              "not_scored": not_scored}
    if args.json:
        print(json.dumps({**header, "summary": summary}, indent=2))
    else:
        print(f"{args.protocol} protocol, split {args.split}: {n_cts} CTs, {len(pair_rows)} pairs")
        print(f"{'metric':<28} {'mean':>10} {'std':>10} {'n':>6}  better")
        for name, st in result.summary.items():
            arrow = "higher" if METRICS[name].higher_is_better else "lower"
            print(f"{name:<28} {st['mean']:>10.4f} {st['std']:>10.4f} {st['n']:>6}  {arrow}")
    if args.out:
        cur, cur_std = proto.to_original_layout(result.summary)
        report: dict[str, Any] = {
            **header, "summary": summary,
            "original_layout": {"cur_metrics": _nan_to_none(cur), "cur_metrics_std": _nan_to_none(cur_std)},
            "pairs": pair_rows,
        }
        atomic_write_json(args.out, report)
        logging.getLogger(__name__).info(f"wrote {args.out}")
    return 0


def _human_pair(items: list, pair: Any) -> str:
    it = items[pair.ct]
    return (f"CT {it.name!r}, reader {it.readers[pair.gt_index].subject!r} vs reader "
            f"{it.readers[pair.pred_index].subject!r}")


def _check_scored(not_scored: dict[str, list], args: argparse.Namespace, gt_path: Any,
                  scored_pairs: int) -> None:
    """Say on stderr what will not be scored; refuse zero pairs, and anything unscored with
    --strict (a partial evaluation must never look like a complete one)."""
    from ctsearcher_jax.errors import DataError

    def shown(names: list) -> str:
        return ", ".join(map(str, names[:5])) + (f", ... ({len(names)})" if len(names) > 5 else "")

    lines = []
    if "cts_without_predictions" in not_scored:
        cts = not_scored["cts_without_predictions"]
        lines.append(f"{len(cts)} CT(s) of split {args.split!r} have no prediction in {args.pred}: "
                     f"{shown(cts)}")
    if "readers_without_predictions" in not_scored:
        readers = not_scored["readers_without_predictions"]
        lines.append(f"{len(readers)} reader(s) have no prediction with their subject: "
                     f"{shown([str(r['ct']) + '/' + str(r['subject']) for r in readers])}")
    if "single_reader_cts" in not_scored:
        cts = not_scored["single_reader_cts"]
        lines.append(f"{len(cts)} CT(s) have a single reader (no other reader to compare with): "
                     f"{shown(cts)}")
    if scored_pairs == 0:
        raise DataError(f"{gt_path}: nothing to score in split {args.split!r}"
                        + (f": {'; '.join(lines)}" if lines else ""))
    if lines and args.strict:
        raise DataError(f"--strict: not everything is scored: {'; '.join(lines)}")
    for line in lines:
        logging.getLogger(__name__).warning(f"not scored: {line}")


def _nan_to_none(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _nan_to_none(v) for k, v in d.items()}
    if isinstance(d, float) and math.isnan(d):
        return None
    return d
