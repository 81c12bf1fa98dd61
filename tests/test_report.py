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
            "`scanmatch_with_duration` = 0.4321 on the evaluation split (higher is better).") in md
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
