"""`ctsearcher report`: Markdown + HTML with the metric table, curves and figures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from ctsearcher_jax.errors import DataError
from ctsearcher_jax.report import metric_table, write_report


def summary(mean, hib=True):
    return {"mean": mean, "std": 0.01, "n": 4, "higher_is_better": hib}


@pytest.fixture()
def workdir(tmp_path):
    w = tmp_path / "run"
    (w / "evaluation").mkdir(parents=True)
    (w / "config.yaml").write_text("model:\n  d_model: 32\n")
    rows = [{"step": s, "split": "train", "loss": 5.0 - 0.1 * s, "lr": 1e-3, "grad_norm": 1.0}
            for s in range(1, 11)]
    rows.append({"step": 10, "split": "eval", "loss": 4.2, "sed": 30.0})
    (w / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 11, "lo')
    for name, v in (("model", 0.5), ("uniform", 0.3), ("human", 0.55)):
        (w / "evaluation" / f"{name}.json").write_text(json.dumps({"summary": {
            "scanmatch_with_duration": summary(v), "sed": summary(30.0 - 10 * v, hib=False)}}))
    figs = w / "predictions" / "figures"
    figs.mkdir(parents=True)
    Image.new("RGB", (40, 30), "white").save(figs / "ct_a_projections.png")
    Image.new("RGB", (40, 30), "white").save(figs / "ct_a_drilling.png")
    (figs / "ct_a_viewer.html").write_text("<!doctype html><title>viewer of ct_a</title>")
    return w


def test_report_has_table_curves_figures_and_config(workdir):
    files = write_report(workdir)
    md = files.markdown.read_text()
    assert "| row | scanmatch_with_duration ↑ | sed ↓ |" in md
    lines = [l for l in md.splitlines() if l.startswith("| ")]
    assert [l.split("|")[1].strip() for l in lines[1:]] == ["model", "uniform", "human"]
    assert "0.5000 ± 0.0100" in md
    # self-contained: the figures shown are copies under report/, linked relatively
    assert "](figures/ct_a_projections.png)" in md and "../" not in md
    copied = workdir / "report" / "figures" / "ct_a_projections.png"
    assert copied.read_bytes() == (workdir / "predictions" / "figures" / copied.name).read_bytes()
    assert "src='figures/ct_a_drilling.png'" in files.html.read_text()
    assert "d_model: 32" in md
    html = files.html.read_text()
    assert "<table>" in html and "ct_a_drilling.png" in html and "curves.png" in html
    # The viewer is copied into the report folder (self-contained) and linked from both.
    copy = workdir / "report" / "viewers" / "ct_a_viewer.html"
    assert copy.read_text() == "<!doctype html><title>viewer of ct_a</title>"
    assert "[Interactive viewer](viewers/ct_a_viewer.html)" in md
    assert "href='viewers/ct_a_viewer.html'" in html
    with Image.open(files.curves) as im:
        assert im.size[0] > 300 and im.size[1] > 200


def test_metric_table_orders_metrics_and_marks_direction():
    header, rows = metric_table({"m": {"sed": summary(3.0, False),
                                       "scanmatch_with_duration": summary(0.4)}})
    assert header == ["row", "scanmatch_with_duration ↑", "sed ↓"]
    assert rows == [["m", "0.4000 ± 0.0100", "3.0000 ± 0.0100"]]


def test_errors(tmp_path, workdir):
    with pytest.raises(DataError, match="no such workdir"):
        write_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="nothing to report"):
        write_report(tmp_path / "empty")
    (workdir / "evaluation" / "bad.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"bad\.json: not a report"):
        write_report(workdir)


@pytest.mark.cli
def test_report_cli(workdir):
    out = subprocess.run([sys.executable, "-m", "ctsearcher_jax.cli", "report", "--workdir",
                          str(workdir)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "report.html" in out.stdout
    out = subprocess.run([sys.executable, "-m", "ctsearcher_jax.cli", "report", "--workdir",
                          str(workdir / "missing")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "no such workdir" in out.stderr


def test_report_says_which_model_was_exported_and_where_it_came_from(workdir):
    from ctsearcher_jax import __version__
    from ctsearcher_jax.provenance import collect, record_launch

    (workdir / "model").mkdir()
    (workdir / "model" / "export.json").write_text(json.dumps({
        "step": 8, "total_steps": 10, "selected_by": "scanmatch_with_duration", "value": 0.4321,
        "direction": "higher is better"}))
    record_launch(workdir, {**collect({"backend": "cpu"}), "startup": "JAX 0.0: backend cpu, 1 x cpu"})
    md = write_report(workdir).markdown.read_text()
    assert ("`model/` holds the weights of step 8 of 10: the best checkpoint by "
            "`scanmatch_with_duration` = 0.4321 on an evaluation split the run did not record "
            "(higher is better).") in md
    provenance = md.split("## Provenance")[1].split("## Resolved config")[0]
    assert f"ctsearcher-jax {__version__}" in provenance and "Training launch 1:" in provenance
    assert "backend cpu, 1 x cpu" in provenance
    commit = collect()["git_commit"]  # a checkout here; None when installed from a wheel
    assert commit is None or f"git {commit}" in provenance
    html = (workdir / "report" / "report.html").read_text()
    assert "<code>scanmatch_with_duration</code>" in html and "Training launch 1:" in html


def test_text_from_the_run_is_escaped_in_html_and_markdown(workdir):
    """A metrics.jsonl step, an evaluation row and a CT name with markup stay text."""
    hostile = "m$^$ <script>alert(1)</script> [x](y) a|b \u202e"
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write("\n" + json.dumps({"step": hostile, "split": "train", "loss": 1.0}) + "\n")
    (workdir / "evaluation" / "e<script>|x.json").write_text(json.dumps({"summary": {
        "sed": summary(3.0, hib=False)}}))
    Image.new("RGB", (8, 8)).save(workdir / "predictions" / "figures" / "c<b>)_drilling.png")
    files = write_report(workdir)
    html, md = files.html.read_text(), files.markdown.read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\u202e" not in html and "\\u202e" in html  # a bidi override is shown, not applied
    assert "<script>" not in md and "\\<script\\>" in md and "\\[x\\](y) a\\|b" in md
    assert "| e\\<script\\>\\|x |" in md  # still one table cell
    assert "(figures/c%3Cb%3E%29_drilling.png)" in md and "src='figures/c%3Cb%3E%29_drilling.png'" in html


def _inputs(*, eval_split="validation", source="carved", encoder="random"):
    weights = ({"kind": "random", "seed": 0, "sha256": "ef" * 32, "feature_size": 12, "cts": 6}
               if encoder == "random" else
               {"kind": "file", "path": "/w/btcv.safetensors", "sha256": "12" * 32,
                "feature_size": 48, "cts": 6})
    return {"dataset": {"path": "/d/data.json", "sha256": "ab" * 32, "cts": 8, "scanpaths": 16},
            "features": {"dir": "/f", "manifest": "/f/manifest.json", "manifest_sha256": "cd" * 32,
                         "encoders": [weights], "unrecorded_cts": 0},
            "splits": {"eval_split": eval_split, "eval_source": source, "validation_fraction": 0.1,
                       "validation_seed": 0, "evaluation_cts": ["c"],
                       "sizes": {"train": {"cts": 5, "scanpaths": 10},
                                 "evaluation": {"cts": 1, "scanpaths": 2},
                                 "test": {"cts": 2, "scanpaths": 4}}}}


def test_report_names_the_encoder_the_selection_split_and_the_table_split(workdir):
    (workdir / "inputs.json").write_text(json.dumps(_inputs()))
    (workdir / "model").mkdir()
    (workdir / "model" / "export.json").write_text(json.dumps({
        "step": 8, "total_steps": 10, "selected_by": "eval_loss", "value": 1.5,
        "direction": "lower is better"}))
    (workdir / "evaluation" / "human.json").unlink()
    for name in ("model", "uniform"):
        (workdir / "evaluation" / f"{name}.json").write_text(json.dumps({
            "split": "test", "num_cts": 2, "num_pairs": 4, "protocol": "original", "summary": {
                "scanmatch_with_duration": summary(0.5),
                "multimatch_mean": {"mean": 0.8, "std": None, "n": 4, "higher_is_better": True}}}))
    files = write_report(workdir)
    md, html = files.markdown.read_text(), files.html.read_text()
    head = md.split("Workdir:")[0]  # the first lines
    assert "random-initialised Swin UNETR (seed 0" in head and "test split" not in head
    assert ("the best checkpoint by `eval_loss` = 1.5000 on the validation split (1 CT carved "
            "from the training split") in md
    assert ("Every row is scored on the test split (2 CTs) by `ctsearcher evaluate`. The model's "
            "step was chosen on the validation split (1 CT carved") in md
    assert "sha256 `" + "ab" * 32 + "`" in md and "manifest sha256 `" + "cd" * 32 in md
    assert "train 5 / 10, evaluation 1 / 2, test 2 / 4" in md
    # a std that does not exist: the mean alone, and one sentence why
    assert "| 0.8000 |" in md and "n/a" not in md.split("## Metrics")[1].split("## ")[0]
    assert md.count("`multimatch_mean` has no std (the mean of the five MultiMatch means") == 1
    assert "random-initialised Swin UNETR" in html.split("Workdir:")[0]
    assert "± n/a" not in html and ">nan<" not in html

    # the paper config: selection on the test split is said in the first lines
    (workdir / "inputs.json").write_text(json.dumps(_inputs(eval_split="test", source="dataset",
                                                            encoder="file")))
    md = write_report(workdir).markdown.read_text()
    head = md.split("Workdir:")[0]
    assert "selected on the test split" in head and "as the original CT-Searcher does" in head
    assert "random" not in head
    assert "The model's step was chosen on these same CTs" in md
    assert "file /w/btcv.safetensors (sha256 " + "12" * 32 in md
