"""`ctsearcher_jax.evaluation.evaluate`: the library the `evaluate` command and training call."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import ctsearcher_jax as cs
from ctsearcher_jax.data.schema import Scanpath
from ctsearcher_jax.errors import DataError
from ctsearcher_jax.evaluation import EvalReport, evaluate
from ctsearcher_jax.metrics import protocol as proto


def _scanpath(rng, name, subject, n, split=None):
    xyz = rng.uniform(1, 512, (n, 3)).round(1)
    t = rng.uniform(0.1, 0.5, n).round(3)
    return Scanpath(name=name, subject=subject, split=split, x=xyz[:, 0], y=xyz[:, 1],
                    z=xyz[:, 2], t=t)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two test CTs and one train CT with readers 1 and 2; predictions for the test CTs."""
    rng = np.random.default_rng(3)
    gt = [_scanpath(rng, f"ct{c}", s, 5 + c, split) for c, split in enumerate(["test", "test", "train"])
          for s in (1, 2)]
    pred = [_scanpath(rng, f"ct{c}", s, 4 + s) for c in (0, 1) for s in (2, 1)]
    root = tmp_path_factory.mktemp("evaluation")
    (root / "data_simplified_split_matched_pt.json").write_text(json.dumps([{**sp.to_record(), "task": "t", "report": ""}
                                              for sp in gt]))
    (root / "pred.json").write_text(json.dumps([sp.to_record() for sp in pred]))
    return root, gt, pred


FAMILIES = ["scanmatch", "sed"]  # quick families; the protocol tests cover every family


def test_files_and_memory_give_the_same_report_and_json_round_trips(data, tmp_path):
    root, gt, pred = data
    from_files = evaluate(root / "pred.json", root, metrics=FAMILIES)
    items = cs.load_dataset(root)
    in_memory = evaluate(pred, items, metrics=FAMILIES)
    assert from_files.summary == in_memory.summary
    assert from_files.num_cts == 2 and from_files.num_pairs == 4 and from_files.not_scored == {}
    assert from_files.gt == str(root / "data_simplified_split_matched_pt.json") and in_memory.gt is None
    # the pairs follow the subjects (prediction k of CT c has subject 2, then 1)
    assert [(r["ct"], r["gt_subject"], r["pred_subject"]) for r in from_files.pairs] == [
        ("ct0", 2, 2), ("ct0", 1, 1), ("ct1", 2, 2), ("ct1", 1, 1)]
    # the same numbers as the protocol called directly
    direct = proto.original_protocol(
        [[sp.as_array() for sp in gt[2 * c:2 * c + 2]] for c in (0, 1)],
        [[sp.as_array() for sp in pred[2 * c:2 * c + 2]] for c in (0, 1)], FAMILIES,
        gt_subjects=[[1, 2], [1, 2]], pred_subjects=[[2, 1], [2, 1]])
    for name, stats in direct.summary.items():
        assert from_files.mean(name) == stats["mean"]
    path = from_files.save(tmp_path / "report.json")
    assert EvalReport.load(path).to_json() == from_files.to_json()
    assert json.loads(path.read_text())["num_pairs"] == 4


def test_unscored_readers_are_reported_and_strict_refuses(data, caplog):
    root, gt, pred = data
    with caplog.at_level(logging.WARNING, logger="ctsearcher_jax.evaluation"):
        report = evaluate(pred[:1], root, metrics=["sed"])  # ct0 reader 2 only
    assert report.not_scored == {"cts_without_predictions": ["ct1"],
                                 "readers_without_predictions": [{"ct": "ct0", "subject": 1}]}
    assert any("not scored" in r.message for r in caplog.records)
    with pytest.raises(DataError, match="^strict: not everything is scored"):
        evaluate(pred[:1], root, metrics=["sed"], strict=True)
    with pytest.raises(DataError, match="no CT in split 'validation'"):
        evaluate(pred, root, split="validation")
    with pytest.raises(DataError, match="unknown families"):
        evaluate(pred, root, metrics=["nope"])


def test_human_protocol_needs_no_predictions(data):
    root, *_ = data
    report = evaluate(None, root, split="all", metrics=["sed"], protocol="human")
    assert report.protocol == "human" and report.num_cts == 3 and report.num_pairs == 6
    assert report.pred is None and "sed" in report.summary
