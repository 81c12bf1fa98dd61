"""Protocols against the original's aggregate (tests/fixtures/metrics/evaluation_aggregate.json)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ctsearcher_jax.errors import DataError
from ctsearcher_jax.metrics import protocol as proto
from ctsearcher_jax.metrics.registry import METRICS, is_better, metrics_of

PAIR_ORDER = ["multimatch_vector", "multimatch_direction", "multimatch_length", "multimatch_position",
              "multimatch_duration", "scanmatch_with_duration", "scanmatch_without_duration", "sed"]


@pytest.fixture(scope="module")
def agg(fixtures_dir):
    data = json.loads((fixtures_dir / "metrics" / "evaluation_aggregate.json").read_text())

    def arrays(cts):
        return [[np.asarray(s, np.float64).reshape(-1, 4) for s in ct] for ct in cts]

    return data, arrays(data["inputs"]["gt_fix_vectors"]), arrays(data["inputs"]["predict_fix_vectors"])


@pytest.fixture(scope="module")
def all_pairs(agg):
    """Every (pred, gt) pair of every CT, scored once; the protocols below reuse these scores."""
    _, gt, pred = agg
    return proto.all_pairs_protocol(gt, pred)


def _assert_nested_close(got, ref, path=""):
    if isinstance(ref, dict):
        assert set(ref) <= set(got), f"{path}: missing {set(ref) - set(got)}"
        for k in ref:
            _assert_nested_close(got[k], ref[k], f"{path}/{k}")
    else:
        assert got == pytest.approx(ref, abs=1e-9, rel=0), path


def test_all_pairs_equal_scores_of_each_image(agg, all_pairs):
    data, _, _ = agg
    ref = np.asarray(data["outputs"]["scores_of_each_images"])
    for k, p in enumerate(all_pairs.pairs):
        got = [all_pairs.scores[n][k] for n in PAIR_ORDER]
        np.testing.assert_allclose(got, ref[p.ct, p.pred_index, p.gt_index, :8], rtol=0, atol=1e-6)


def test_original_protocol_equals_aggregate(agg):
    data, gt, pred = agg
    result = proto.original_protocol(gt, pred)
    assert [(p.ct, p.gt_index, p.pred_index) for p in result.pairs] == \
        [(c, i, i) for c in range(4) for i in range(3)]
    cur, std = proto.to_original_layout(result.summary)
    _assert_nested_close(cur, data["outputs"]["cur_metrics"])
    _assert_nested_close(std, data["outputs"]["cur_metrics_std"])


@pytest.mark.parametrize("run,families", [("eval_metrics=multimatch", ["multimatch"]),
                                          ("eval_metrics=scanmatch", ["scanmatch"]),
                                          ("eval_metrics=sed", ["sed"])])
def test_original_protocol_single_family_runs(agg, run, families):
    data, gt, pred = agg
    # Score only the diagonal pairs, the ones the aggregate uses.
    result = proto.original_protocol(gt, pred, families)
    cur, std = proto.to_original_layout(result.summary)
    ref = data["extra_runs"][run]
    assert set(cur) == set(ref["cur_metrics"])
    _assert_nested_close(cur, ref["cur_metrics"])
    _assert_nested_close(std, ref["cur_metrics_std"])


def test_original_protocol_ragged_readers(agg):
    data, gt, pred = agg
    gt = [list(ct) for ct in gt]
    gt[1] = gt[1][:2]  # CT 1 has only 2 readers: its 3rd prediction has no partner and is skipped
    result = proto.original_protocol(gt, pred)
    assert len(result.pairs) == 11
    cur, std = proto.to_original_layout(result.summary)
    ref = data["extra_runs"]["ragged_ct1_has_2_gt"]
    _assert_nested_close(cur, ref["cur_metrics"])
    _assert_nested_close(std, ref["cur_metrics_std"])


def test_repeats_pair_each_block_with_the_readers(agg):
    _, gt, pred = agg
    doubled = [list(p) + list(p) for p in pred]
    once = proto.original_protocol(gt, pred, ["sed"])
    twice = proto.original_protocol(gt, doubled, ["sed"], repeats=2)
    assert len(twice.pairs) == 2 * len(once.pairs)
    assert twice.summary["sed"]["mean"] == pytest.approx(once.summary["sed"]["mean"])
    assert twice.summary["sed"]["std"] == pytest.approx(once.summary["sed"]["std"])


def test_human_consistency_never_scores_a_reader_against_itself(agg):
    _, gt, _ = agg
    result = proto.human_consistency(gt, ["sed", "scanmatch"])
    assert len(result.pairs) == 4 * 3 * 2
    assert all(p.gt_index != p.pred_index for p in result.pairs)
    # SED is symmetric, so (i vs j) and (j vs i) agree.
    key = {(p.ct, p.gt_index, p.pred_index): result.scores["sed"][k] for k, p in enumerate(result.pairs)}
    assert all(key[(c, g, q)] == key[(c, q, g)] for (c, g, q) in key)


def test_empty_or_nan_prediction_is_a_clear_error(agg):
    _, gt, pred = agg
    bad = [list(p) for p in pred]
    bad[2][1] = np.zeros((0, 4))
    with pytest.raises(DataError, match="CT 2, scanpath 1.*empty"):
        proto.original_protocol(gt, bad, ["sed"])
    bad[2][1] = np.array([[1.0, np.nan, 3.0, 0.2]])
    with pytest.raises(DataError, match="NaN"):
        proto.original_protocol(gt, bad, ["sed"])


def test_multimatch_nan_rows_are_dropped_scanmatch_nan_propagates():
    scores = {f"multimatch_{n}": np.array([0.5, np.nan, 0.7]) for n in
              ("vector", "direction", "length", "position", "duration")}
    scores["scanmatch_with_duration"] = np.array([0.5, np.nan])
    agg = proto.aggregate(scores)
    assert agg["multimatch_vector"]["mean"] == pytest.approx(0.6)
    assert agg["multimatch_vector"]["std"] == pytest.approx(0.1)  # population std
    assert agg["multimatch_vector"]["n"] == 2
    assert math.isnan(agg["scanmatch_with_duration"]["mean"])


def test_registry_directions():
    assert METRICS["sed"].higher_is_better is False
    assert METRICS["saliency_kld"].higher_is_better is False
    assert METRICS["scanmatch_with_duration"].higher_is_better is True
    assert is_better("sed", 3.0, 4.0) and not is_better("sed", 5.0, 4.0)
    assert is_better("multimatch_mean", 0.9, 0.8) and not is_better("multimatch_mean", math.nan, 0.1)
    assert metrics_of(["sed"]) == ["sed"]
    with pytest.raises(KeyError):
        metrics_of(["nope"])


def test_metrics_import_no_model_code_and_keep_x64_scoped():
    import subprocess
    import sys

    code = ("import sys, numpy as np, jax.numpy as jnp\n"
            "from ctsearcher_jax.metrics import protocol\n"
            "g = [np.array([[1., 2., 3., .2], [40., 50., 60., .3], [9., 9., 9., .1]])]\n"
            "protocol.score_pairs(g, g, ['sed', 'multimatch'])\n"
            "assert not [m for m in sys.modules if m.startswith('ctsearcher_jax.model')]\n"
            "assert jnp.zeros(1).dtype == jnp.float32\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr


def test_pairs_are_scored_in_bounded_chunks_with_the_same_values(monkeypatch):
    """Issue 16.5: memory grows with the largest pair, not the number of pairs."""
    from ctsearcher_jax.metrics import protocol as proto_mod

    rng = np.random.default_rng(5)

    def sp(n):
        return np.column_stack([rng.uniform(1, 512, (n, 3)), rng.uniform(0.1, 0.5, n)])

    gt = [sp(n) for n in (3, 7, 4, 9, 5)]
    pred = [sp(n) for n in (6, 3, 8, 4, 5)]
    whole = proto_mod.score_pairs(gt, pred, ["sed", "scanmatch"])
    calls = []
    real = proto_mod.score_pairs
    monkeypatch.setattr(proto_mod, "score_pairs", lambda g, p, *a, **k: calls.append(len(g))
                        or real(g, p, *a, **k))
    monkeypatch.setattr(proto_mod, "PAIR_CHUNK_PAIRS", 2)
    chunked = proto_mod.score_pairs_chunked(gt, pred, ["sed", "scanmatch"])
    assert calls == [2, 2, 1]
    monkeypatch.setattr(proto_mod, "PAIR_CHUNK_PAIRS", 100)
    monkeypatch.setattr(proto_mod, "PAIR_CHUNK_CELLS", 30)  # cells: 18, 21, 32, 36, 25
    calls.clear()
    assert proto_mod._chunks(gt, pred) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    for name in whole:
        np.testing.assert_array_equal(chunked[name], whole[name])


def test_pairs_beyond_the_documented_size_are_refused_by_name(monkeypatch):
    from ctsearcher_jax.errors import DataError
    from ctsearcher_jax.metrics import protocol as proto_mod

    big = np.column_stack([np.linspace(1, 500, 30)] * 3 + [np.full(30, 0.2)])
    monkeypatch.setattr(proto_mod, "EXACT_MAX_CELLS", 400)
    with pytest.raises(DataError, match=r"CT 0, reader 0 vs prediction 0: 30 x 30 fixations is "
                                        r"beyond MultiMatch exact's limit .*--multimatch-alignment dp"):
        proto_mod.all_pairs_protocol([[big]], [[big]], ["multimatch"])
    monkeypatch.setattr(proto_mod, "MAX_PAIR_CELLS", 800)
    with pytest.raises(DataError, match=r"30 x 30 fixations \(900 alignment cells\) is beyond"):
        proto_mod.all_pairs_protocol([[big]], [[big]], ["sed"])
