"""Evaluation as a library call: predicted scanpaths against the readers, one `EvalReport`.

    import ctsearcher_jax as cs
    report = cs.evaluate("runs/paper/predictions/predictions.json", "/data/CTScanGaze", split="test")
    report.mean("scanmatch_with_duration"), report.summary["sed"]["std"], report.not_scored
    report.save("runs/paper/evaluation/model.json")            # what `evaluate --out` writes

`evaluate` is what `ctsearcher evaluate` runs (the command only parses flags and prints) and what
the training evaluator runs on sampled scanpaths, so a number is computed the same way wherever
it appears. Protocols (`metrics/protocol.py`):

- "original": each prediction against the reader of its CT with the same subject (the paper's);
- "all-pairs": every prediction of a CT against every reader of that CT;
- "human": each reader against the other readers of its CT (no predictions).

A CT of the split without any prediction, or a reader without a prediction of its subject, is not
scored: it is listed in `not_scored` and logged as a warning (`strict=True` makes it a DataError).
Nothing to score at all is always a DataError.

The report (`EvalReport.to_json`, the `--out` file) is:
    {"protocol", "split", "gt", "pred", "metrics" (families), "multimatch_alignment", "sed_code",
     "num_cts", "num_pairs", "not_scored": {...},
     "summary": {metric: {"mean", "std", "n", "higher_is_better"}},      (NaN as null)
     "original_layout": {"cur_metrics", "cur_metrics_std"},               (the original's nesting)
     "pairs": [{"ct", "gt_subject", "pred_record", "pred_subject", metric: value, ...}]}
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence, Union

from ctsearcher_jax.data.schema import CTItem, Scanpath, find_dataset_json, group_by_ct, load_records
from ctsearcher_jax.errors import DataError
from ctsearcher_jax.io import atomic_write_json, read_json
from ctsearcher_jax.metrics import protocol as proto
from ctsearcher_jax.metrics.registry import DEFAULT_FAMILIES, FAMILIES, FAMILY, METRICS, PROTOCOLS

_log = logging.getLogger(__name__)

Protocol = Literal["original", "all-pairs", "human"]
# Predictions: a records file, or scanpaths in memory (`load_records`, `records_to_scanpaths`).
Predictions = Union[str, os.PathLike, Sequence[Scanpath], None]
# Ground truth: a dataset folder or its JSON, or CTs in memory (`load_dataset`).
GroundTruth = Union[str, os.PathLike, Sequence[CTItem]]


@dataclasses.dataclass
class EvalReport:
    """The outcome of `evaluate` (module docstring); `to_json` / `from_json` round-trip it."""

    protocol: str
    split: str
    metrics: list[str]  # the families scored
    summary: dict[str, dict[str, Any]]  # metric -> {"mean", "std", "n", "higher_is_better"}
    pairs: list[dict[str, Any]]  # one row per scored pair: who vs whom, then each pair metric
    not_scored: dict[str, list]
    num_cts: int
    multimatch_alignment: str = "exact"
    sed_code: str = "legacy"
    gt: str | None = None  # where the ground truth came from (None: in memory)
    pred: str | None = None  # where the predictions came from (None: in memory or human)
    original_layout: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_pairs(self) -> int:
        return len(self.pairs)

    def mean(self, metric: str) -> float:
        """The mean of `metric` (NaN when it has no value); KeyError when it was not scored."""
        value = self.summary[metric]["mean"]
        return math.nan if value is None else float(value)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (NaN as null), as `evaluate --out` writes it."""
        return {"protocol": self.protocol, "split": self.split, "gt": self.gt, "pred": self.pred,
                "metrics": list(self.metrics), "multimatch_alignment": self.multimatch_alignment,
                "sed_code": self.sed_code, "num_cts": self.num_cts, "num_pairs": self.num_pairs,
                "not_scored": self.not_scored, "summary": _nan_to_none(self.summary),
                "original_layout": _nan_to_none(self.original_layout),
                "pairs": _nan_to_none(self.pairs)}

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "<report>") -> EvalReport:
        """A report from `to_json`'s data (DataError naming `source` when it is not one)."""
        try:
            return cls(protocol=data["protocol"], split=data["split"], metrics=list(data["metrics"]),
                       summary=dict(data["summary"]), pairs=list(data.get("pairs", [])),
                       not_scored=dict(data.get("not_scored", {})), num_cts=int(data["num_cts"]),
                       multimatch_alignment=data.get("multimatch_alignment", "exact"),
                       sed_code=data.get("sed_code", "legacy"), gt=data.get("gt"),
                       pred=data.get("pred"), original_layout=dict(data.get("original_layout", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{source}: not a report of `ctsearcher evaluate --out` ({exc!r}); "
                            "re-run evaluate") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the report atomically (the `evaluate --out` file)."""
        return atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EvalReport:
        return cls.from_json(read_json(path), str(path))


class ScoringProgress:
    """`progress(done, total)` for `metrics.protocol.run_pairs`: a log line with pairs done,
    elapsed time and ETA, written only once scoring has run for `after_s` seconds and then at
    most every `every_s` seconds (and at the end), so short runs stay silent."""

    def __init__(self, after_s: float = 3.0, every_s: float = 10.0):
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
            _log.info(f"scored {done}/{total} pairs in {elapsed:.0f} s" +
                      (f", ETA {eta:.0f} s" if done < total else ""))


def evaluate(predictions: Predictions, ground_truth: GroundTruth, *, split: str | None = "test",
             metrics: Sequence[str] = DEFAULT_FAMILIES, protocol: Protocol = "original",
             multimatch_alignment: str = "exact", sed_code: str = "legacy", strict: bool = False,
             progress: bool | Callable[[int, int], None] = False) -> EvalReport:
    """Score `predictions` against the readers of `ground_truth` (module docstring).

    predictions: a predictions file (records: name, subject, X, Y, Z, T, length) or `Scanpath`s;
      None with `protocol="human"`.
    ground_truth: a dataset folder or its JSON, or `CTItem`s.
    split: the ground-truth split to score; "all" or None = every CT given.
    metrics: metric families (`metrics/registry.py`); default the original's three.
    progress: True = log lines once scoring takes more than a few seconds; or a callable
      `progress(done, total)`.
    Raises DataError (naming the file, record or CT) for bad input, nothing to score, or (with
    `strict`) anything not scored.
    """
    families = list(dict.fromkeys(metrics))
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise DataError(f"metrics: unknown families {unknown}; choose from {list(FAMILIES)}")
    if protocol not in PROTOCOLS:
        raise DataError(f"protocol: unknown {protocol!r}; choose from {list(PROTOCOLS)}")
    split_name = "all" if split is None else split
    items, gt_source = _ground_truth(ground_truth, split_name)
    options: dict[str, Any] = dict(multimatch_alignment=multimatch_alignment, sed_code=sed_code)
    if progress:
        options["progress"] = progress if callable(progress) else ScoringProgress()
    if protocol == "human":
        scored = _score_human(items, families, split_name, gt_source, strict, options)
        pred_source = None
    else:
        if predictions is None:
            raise DataError("no predictions given: they are needed unless the protocol is 'human'")
        preds, pred_source = _predictions(predictions)
        scored = _score_predictions(items, preds, pred_source, protocol, families, split_name,
                                    gt_source, strict, options)
    result, rows, not_scored, num_cts = scored
    pair_metrics = [n for n in result.scores if FAMILY[METRICS[n].family].unit == "pair"]
    for k, row in enumerate(rows):
        for n in pair_metrics:
            row[n] = float(result.scores[n][k])
    summary = {n: {"mean": s["mean"], "std": s["std"], "n": s["n"],
                   "higher_is_better": METRICS[n].higher_is_better}
               for n, s in result.summary.items()}
    cur, cur_std = proto.to_original_layout(result.summary)
    return EvalReport(protocol=protocol, split=split_name, metrics=families, summary=summary,
                      pairs=rows, not_scored=not_scored, num_cts=num_cts,
                      multimatch_alignment=multimatch_alignment, sed_code=sed_code, gt=gt_source,
                      pred=pred_source, original_layout={"cur_metrics": cur, "cur_metrics_std": cur_std})


# ----------------------------------------------------------------------------- inputs

def _ground_truth(ground_truth: GroundTruth, split: str) -> tuple[list[CTItem], str | None]:
    if isinstance(ground_truth, (str, os.PathLike)):
        gt_path = find_dataset_json(ground_truth)
        # scoring accepts [0, frame]: 0-based exports exist and the original's metrics score them
        items, source = group_by_ct(load_records(gt_path, lowest=0), gt_path), str(gt_path)
    else:
        items, source = list(ground_truth), None
    if split != "all":
        items = [it for it in items if it.split == split]
        if not items:
            raise DataError(f"{source or 'ground truth'}: no CT in split {split!r}")
    return items, source


def _predictions(predictions: Predictions) -> tuple[list[Scanpath], str | None]:
    if isinstance(predictions, (str, os.PathLike)):
        return load_records(predictions, require_split=False, lowest=0), str(predictions)
    return list(predictions), None


def group_predictions(gt_items: Sequence[CTItem], pred_scanpaths: Iterable[Scanpath],
                      pred_source: str):
    """Predictions by CT, in record order: (pred arrays per CT, [(CT index, subject)] per
    record, [{"record", "subject"}] per CT). A record of a CT not in `gt_items` is a DataError."""
    by_name = {it.name: k for k, it in enumerate(gt_items)}
    pred_cts: list[list] = [[] for _ in gt_items]
    labels: list[list] = [[] for _ in gt_items]
    order = []
    for k, sp in enumerate(pred_scanpaths):
        c = by_name.get(sp.name)
        record = sp.index if sp.index >= 0 else k
        if c is None:
            raise DataError(f"{pred_source}: record {record}, CT {sp.name!r}: not in the ground "
                            f"truth of the selected split; check the ground truth (dataset) and the split")
        pred_cts[c].append(sp.as_array())
        labels[c].append({"record": record, "subject": sp.subject})
        order.append((c, sp.subject))
    return pred_cts, order, labels


# ----------------------------------------------------------------------------- scoring

def _score_predictions(items, preds, pred_source, protocol, families, split, gt_source, strict,
                       options):
    """(ProtocolResult, pair rows, not_scored, number of CTs scored) of a predictions protocol."""
    where = pred_source or "predictions"
    pred_cts, order, labels = group_predictions(items, preds, where)
    gt_cts = [[r.as_array() for r in it.readers] for it in items]
    records = [sp.index if sp.index >= 0 else k for k, sp in enumerate(preds)]
    if protocol == "original":
        pairs = proto.pairs_by_subject(
            [[r.subject for r in it.readers] for it in items], order,
            describe=lambda k: f"{where}: record {records[k]}, CT {items[order[k][0]].name!r}")
    else:
        pairs = proto.pairs_all([len(it.readers) for it in items], [c for c, _ in order])
    not_scored: dict[str, list] = {}
    missing_cts = [it.name for c, it in enumerate(items) if not pred_cts[c]]
    if missing_cts:
        not_scored["cts_without_predictions"] = missing_cts
    paired = {(p.ct, p.gt_index) for p in pairs}
    missing_readers = [{"ct": it.name, "subject": r.subject} for c, it in enumerate(items)
                       if pred_cts[c] for g, r in enumerate(it.readers) if (c, g) not in paired]
    if missing_readers:
        not_scored["readers_without_predictions"] = missing_readers
    _check_scored(not_scored, split, gt_source, where, strict, scored_pairs=len(pairs))

    def describe(k: int) -> str:
        p = pairs[k]
        return (f"CT {items[p.ct].name!r}, reader {items[p.ct].readers[p.gt_index].subject!r} "
                f"vs {where} record {labels[p.ct][p.pred_index]['record']}")

    result = proto.run_pairs(pairs, gt_cts, pred_cts, families, describe=describe, **options)
    rows = [{"ct": items[p.ct].name, "gt_subject": items[p.ct].readers[p.gt_index].subject,
             "pred_record": labels[p.ct][p.pred_index]["record"],
             "pred_subject": labels[p.ct][p.pred_index]["subject"]} for p in pairs]
    return result, rows, not_scored, sum(1 for preds_of_ct in pred_cts if preds_of_ct)


def _score_human(items, families, split, gt_source, strict, options):
    """(ProtocolResult, pair rows, not_scored, number of CTs scored) of the human protocol."""
    not_scored: dict[str, list] = {}
    single = [it.name for it in items if len(it.readers) < 2]
    if single:
        not_scored["single_reader_cts"] = single
    _check_scored(not_scored, split, gt_source, None, strict, scored_pairs=sum(
        len(it.readers) * (len(it.readers) - 1) for it in items))
    human_pairs = proto.pairs_human([len(it.readers) for it in items])  # as scored below

    def describe(k: int) -> str:
        p = human_pairs[k]
        it = items[p.ct]
        return (f"CT {it.name!r}, reader {it.readers[p.gt_index].subject!r} vs reader "
                f"{it.readers[p.pred_index].subject!r}")

    result = proto.human_consistency([[r.as_array() for r in it.readers] for it in items],
                                     families, describe=describe, **options)
    rows = [{"ct": items[p.ct].name, "gt_subject": items[p.ct].readers[p.gt_index].subject,
             "pred_subject": items[p.ct].readers[p.pred_index].subject} for p in result.pairs]
    return result, rows, not_scored, sum(1 for it in items if len(it.readers) > 1)


def _check_scored(not_scored: dict[str, list], split: str, gt_source: str | None,
                  pred_source: str | None, strict: bool, scored_pairs: int) -> None:
    """Say (a warning) what will not be scored; refuse zero pairs, and anything unscored with
    `strict` (a partial evaluation must never look like a complete one)."""

    def shown(names: list) -> str:
        return ", ".join(map(str, names[:5])) + (f", ... ({len(names)})" if len(names) > 5 else "")

    lines = []
    if "cts_without_predictions" in not_scored:
        cts = not_scored["cts_without_predictions"]
        lines.append(f"{len(cts)} CT(s) of split {split!r} have no prediction in "
                     f"{pred_source or 'the predictions'}: {shown(cts)}")
    if "readers_without_predictions" in not_scored:
        readers = not_scored["readers_without_predictions"]
        lines.append(f"{len(readers)} reader(s) have no prediction with their subject: "
                     f"{shown([str(r['ct']) + '/' + str(r['subject']) for r in readers])}")
    if "single_reader_cts" in not_scored:
        cts = not_scored["single_reader_cts"]
        lines.append(f"{len(cts)} CT(s) have a single reader (no other reader to compare with): "
                     f"{shown(cts)}")
    if scored_pairs == 0:
        raise DataError(f"{gt_source or 'ground truth'}: nothing to score in split {split!r}"
                        + (f": {'; '.join(lines)}" if lines else ""))
    if lines and strict:
        raise DataError(f"strict: not everything is scored: {'; '.join(lines)}")
    for line in lines:
        _log.warning(f"not scored: {line}")


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
