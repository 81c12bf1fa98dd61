"""`ctsearcher evaluate` as a subprocess: report, exit codes; its error messages in this process
(`cli_run`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ctsearcher_jax.metrics import protocol as proto


def _record(name, subject, fix, split=None):
    rec = {"name": name, "subject": subject, "X": fix[:, 0].tolist(), "Y": fix[:, 1].tolist(),
           "Z": fix[:, 2].tolist(), "T": fix[:, 3].tolist(), "length": int(len(fix))}
    if split is not None:
        rec.update(split=split, task="read", report="")
    return rec


def _scanpath(rng, n):
    return np.column_stack([rng.uniform(1, 512, (n, 3)).round(1), rng.uniform(0.1, 0.5, n).round(3)])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("eval")
    gt, pred = [], []
    arrays = {}
    for c, split in enumerate(["test", "test", "train"]):
        for s in (1, 2):
            g = _scanpath(rng, 6 + c)
            p = _scanpath(rng, 4 + s)
            arrays[(c, s)] = (g, p)
            gt.append(_record(f"ct{c}", s, g, split))
            if split == "test":
                pred.append(_record(f"ct{c}", s, p))
    (root / "gt.json").write_text(json.dumps(gt))
    (root / "pred.json").write_text(json.dumps(pred))
    return root, arrays


def _run(*args, cwd=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "ctsearcher_jax.cli", "evaluate", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.mark.cli
def test_evaluate_writes_report_equal_to_library(files):
    root, arrays = files
    out = root / "report.json"
    res = _run("--pred", str(root / "pred.json"), "--data", str(root / "gt.json"), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "scanmatch_with_duration" in res.stdout and "lower" in res.stdout  # SED row
    report = json.loads(out.read_text())
    assert report["num_cts"] == 2 and report["num_pairs"] == 4
    gt = [[arrays[(c, 1)][0], arrays[(c, 2)][0]] for c in (0, 1)]
    pred = [[arrays[(c, 1)][1], arrays[(c, 2)][1]] for c in (0, 1)]
    ref = proto.original_protocol(gt, pred)
    for name, st in ref.summary.items():
        assert report["summary"][name]["mean"] == pytest.approx(st["mean"], abs=1e-12), name
    assert report["summary"]["sed"]["higher_is_better"] is False
    assert report["pairs"][0]["ct"] == "ct0" and report["pairs"][0]["gt_subject"] == 1


@pytest.mark.cli
def test_evaluate_errors_name_the_problem(files, cli_run):
    root, arrays = files
    preds = json.loads((root / "pred.json").read_text())
    cases = {
        "missing_ct": ([dict(preds[0], name="ct9")], "CT 'ct9': not in the ground truth"),
        "train_ct": ([_record("ct2", 1, arrays[(2, 1)][1])], "CT 'ct2': not in the ground truth"),
        "empty": ([dict(preds[0], X=[], Y=[], Z=[], T=[], length=0)], "empty"),
        "nan": ([dict(preds[0], X=[float("nan")] + preds[0]["X"][1:])], "non-finite"),
        "subject": ([dict(preds[0], subject=5)], "subject 5 is not a reader"),
    }
    for label, (records, message) in cases.items():
        path = root / f"bad_{label}.json"
        path.write_text(json.dumps(records, allow_nan=True))
        res = cli_run("evaluate", "--pred", str(path), "--data", str(root / "gt.json"), "--metrics",
                      "sed")
        assert res.returncode == 2, (label, res.stdout, res.stderr)
        assert message in res.stderr and str(path) in res.stderr, (label, res.stderr)
        assert "Traceback" not in res.stderr
    (root / "broken.json").write_text("[{")
    res = cli_run("evaluate", "--pred", str(root / "broken.json"), "--data", str(root / "gt.json"))
    assert res.returncode == 2 and "not valid JSON" in res.stderr


@pytest.mark.cli
def test_evaluate_human_consistency(files):
    root, _ = files
    res = _run("--data", str(root / "gt.json"), "--protocol", "human", "--metrics", "sed", "saliency",
               "--split", "all")
    assert res.returncode == 0, res.stderr
    assert "3 CTs, 6 pairs" in res.stdout and "saliency_auc_judd" in res.stdout


def test_scoring_progress_reports_only_runs_over_a_few_seconds(capsys):
    from ctsearcher_jax import logs
    from ctsearcher_jax.evaluation import ScoringProgress

    logs.setup(0)
    clock = iter([0.0, 1.0, 2.0, 5.0, 9.0, 30.0])
    progress = ScoringProgress(after_s=3.0, every_s=10.0)
    progress._clock = lambda: next(clock)
    progress.start = 0.0
    for done in (0, 10, 20, 30, 40, 50):  # at t = 0, 1, 2, 5, 9, 30 s of 50 pairs
        progress(done, 50)
    lines = [l for l in capsys.readouterr().err.splitlines() if "scored" in l]
    # silent for the first 3 s, then at most every 10 s, and at the end
    assert [l.split(" ", 1)[1] for l in lines] == ["scored 30/50 pairs in 5 s, ETA 3 s",
                                                    "scored 50/50 pairs in 30 s"]


def test_partial_scoring_is_said_and_strict_refuses_it(files, tmp_path, capsys):
    """Issue 16.9: CTs and readers without predictions are reported (stderr and report);
    --strict makes that an error; zero scored pairs is always an error."""
    from ctsearcher_jax import cli

    root, _ = files
    preds = [r for r in json.loads((root / "pred.json").read_text())
             if r["name"] == "ct0" and r["subject"] == 1]
    (tmp_path / "one.json").write_text(json.dumps(preds))
    argv = ["evaluate", "--pred", str(tmp_path / "one.json"), "--data", str(root / "gt.json"),
            "--split", "all", "--metrics", "sed"]
    assert cli.main(argv + ["--out", str(tmp_path / "r.json")]) == 0
    captured = capsys.readouterr()
    assert "1 CTs, 1 pairs" in captured.out
    assert "not scored: 2 CT(s) of split 'all' have no prediction" in captured.err
    assert "ct1, ct2" in captured.err and "1 reader(s) have no prediction" in captured.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["not_scored"] == {"cts_without_predictions": ["ct1", "ct2"],
                                    "readers_without_predictions": [{"ct": "ct0", "subject": 2}]}
    assert cli.main(argv + ["--strict"]) == 2
    assert "strict: not everything is scored" in capsys.readouterr().err
    single = [r for r in json.loads((root / "gt.json").read_text()) if r["subject"] == 1]
    (tmp_path / "single.json").write_text(json.dumps(single))
    assert cli.main(["evaluate", "--data", str(tmp_path / "single.json"), "--protocol", "human",
                     "--split", "all", "--metrics", "sed"]) == 2
    err = capsys.readouterr().err
    assert "nothing to score in split 'all'" in err and "3 CT(s) have a single reader" in err


@pytest.mark.cli
def test_evaluate_scores_zero_based_coordinates_and_names_records_outside(files, tmp_path):
    root, _ = files
    preds = json.loads((root / "pred.json").read_text())
    for key in ("X", "Y", "Z"):
        preds[0][key][0] = 0.0  # a fixation at X = 0, Y = 0, Z = 0
    (tmp_path / "zero.json").write_text(json.dumps(preds))
    out = tmp_path / "report.json"
    res = _run("--pred", str(tmp_path / "zero.json"), "--data", str(root / "gt.json"), "--json",
               "--out", str(out))
    assert res.returncode == 0, res.stderr
    printed = json.loads(res.stdout)  # --json: stdout is the summary JSON alone
    assert printed["summary"] == json.loads(out.read_text())["summary"] and "pairs" not in printed
    assert f"wrote {out}" in res.stderr  # diagnostics on stderr
    summary = printed["summary"]
    assert summary["sed"]["n"] == 4 and 0 <= summary["scanmatch_with_duration"]["mean"] <= 1
    assert 0 <= summary["multimatch_position"]["mean"] <= 1
    preds[1]["Z"][0] = -0.5
    (tmp_path / "negative.json").write_text(json.dumps(preds))
    res = _run("--pred", str(tmp_path / "negative.json"), "--data", str(root / "gt.json"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "record 1, CT 'ct0': field 'Z' outside the frame [0, 512]" in res.stderr
