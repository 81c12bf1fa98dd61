"""DTW scanpath distance: a written-out reference DP, hand-computed cases, the registry, evaluate."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from ctsearcher_jax.metrics import dtw as dtw_mod
from ctsearcher_jax.metrics import protocol as proto
from ctsearcher_jax.metrics.registry import FAMILY, METRICS, metrics_of


def reference_dtw(gt, pred) -> float:
    """The definition in metrics/dtw.py, cell by cell in plain Python."""
    a = [tuple(map(float, r[:3])) for r in gt]
    b = [tuple(map(float, r[:3])) for r in pred]
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return math.nan
    big = math.inf
    d = [[big] * (m + 1) for _ in range(n + 1)]
    d[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost = math.dist(a[i - 1], b[j - 1])
            d[i][j] = cost + min(d[i - 1][j], d[i][j - 1], d[i - 1][j - 1])
    return d[n][m]


def _path(points, durations=None):
    points = np.asarray(points, np.float64).reshape(-1, 3)
    t = np.full(len(points), 0.25) if durations is None else np.asarray(durations, np.float64)
    return np.column_stack([points, t])


def test_hand_computed_cases():
    p = _path([[1, 2, 3], [40, 50, 6], [7, 8, 90]])
    assert dtw_mod.dtw(p, p) == 0.0
    assert dtw_mod.dtw(_path([[0, 0, 1]]), _path([[3, 4, 1]])) == 5.0
    # Z is in slices, unscaled: 3 slices apart = 3 units
    assert dtw_mod.dtw(_path([[10, 10, 1]]), _path([[10, 10, 4]])) == 3.0
    # (0)-(10) against (0)-(5)-(10) on x: the middle fixation is matched at cost 5 once
    assert dtw_mod.dtw(_path([[0, 0, 0], [10, 0, 0]]),
                       _path([[0, 0, 0], [5, 0, 0], [10, 0, 0]])) == 5.0
    # one fixation against three: every one is matched to it, 1 + 2 + 3
    assert dtw_mod.dtw(_path([[0, 0, 0]]), _path([[1, 0, 0], [0, 2, 0], [0, 0, 3]])) == 6.0
    # durations do not enter
    assert dtw_mod.dtw(p, _path(p[:, :3], [1.0, 2.0, 3.0])) == 0.0
    assert math.isnan(dtw_mod.dtw_batch([np.zeros((0, 4))], [p])[0])


def test_equals_reference_dp_on_random_pairs():
    rng = np.random.default_rng(0)
    lengths = [(1, 1), (1, 7), (9, 1), (2, 3), (17, 5), (33, 40), (64, 64), (120, 75)]
    lengths += [tuple(rng.integers(1, 60, 2)) for _ in range(24)]
    gt, pred = [], []
    for n, m in lengths:
        gt.append(np.column_stack([rng.uniform(1, 512, (n, 2)), rng.integers(1, 300, n),
                                   rng.uniform(0.1, 1, n)]))
        pred.append(np.column_stack([rng.uniform(1, 512, (m, 2)), rng.integers(1, 300, m),
                                     rng.uniform(0.1, 1, m)]))
    got = dtw_mod.dtw_batch(gt, pred)
    ref = np.array([reference_dtw(g, p) for g, p in zip(gt, pred)])
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)
    # symmetric, and a pair scores the same alone as in a batch
    np.testing.assert_allclose(dtw_mod.dtw_batch(pred, gt), got, rtol=1e-12)
    assert dtw_mod.dtw(gt[5], pred[5]) == pytest.approx(got[5], rel=1e-12)


def test_registered_family_is_scored_by_the_protocols(tmp_path):
    assert metrics_of(["dtw"]) == ["dtw"] and METRICS["dtw"].higher_is_better is False
    assert not FAMILY["dtw"].default
    rng = np.random.default_rng(1)
    gt = [[_path(rng.uniform(1, 512, (n, 3))) for n in (4, 6)]]
    pred = [[_path(rng.uniform(1, 512, (n, 3))) for n in (5, 3)]]
    result = proto.original_protocol(gt, pred, ["sed", "dtw"])
    ref = [reference_dtw(gt[0][i], pred[0][i]) for i in range(2)]
    np.testing.assert_allclose(result.scores["dtw"], ref, rtol=1e-12)
    assert result.summary["dtw"]["mean"] == pytest.approx(np.mean(ref), rel=1e-12)
    assert list(result.summary) == ["sed", "dtw"]

    # `ctsearcher evaluate --metrics ... dtw` (in process): the report gains the dtw key only
    from ctsearcher_jax.commands import evaluate

    records = [{"name": "ct", "subject": s + 1, "split": "test", "task": "t", "report": "",
                "X": g[:, 0].tolist(), "Y": g[:, 1].tolist(), "Z": g[:, 2].tolist(),
                "T": g[:, 3].tolist(), "length": len(g)} for s, g in enumerate(gt[0])]
    preds = [{**r, "X": p[:, 0].tolist(), "Y": p[:, 1].tolist(), "Z": p[:, 2].tolist(),
              "T": p[:, 3].tolist(), "length": len(p)} for r, p in zip(records, pred[0])]
    (tmp_path / "gt.json").write_text(json.dumps(records))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    reports = {}
    for families in (["sed"], ["sed", "dtw"]):
        out = tmp_path / f"{len(families)}.json"
        args = parser.parse_args(["--pred", str(tmp_path / "pred.json"), "--data", str(tmp_path / "gt.json"),
                                  "--metrics", *families, "--out", str(out)])
        assert evaluate.run(args) == 0
        reports[len(families)] = json.loads(out.read_text())
    one, two = reports[1], reports[2]
    assert two["summary"]["dtw"]["higher_is_better"] is False
    assert two["summary"]["dtw"]["mean"] == pytest.approx(np.mean(ref), rel=1e-12)
    assert [row["dtw"] for row in two["pairs"]] == pytest.approx(ref, rel=1e-12)
    assert {k: v for k, v in two["summary"].items() if k != "dtw"} == one["summary"]
    assert parser.parse_args(["--data", "x"]).metrics == ["scanmatch", "multimatch", "sed"]
