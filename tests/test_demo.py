"""`ctsearcher demo` end to end at a smaller size: every stage runs and the report has the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ctsearcher_jax import config as config_lib


@pytest.mark.cli
def test_demo_pipeline_small(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    # The tiny config with 32^3 encoder windows instead of 96^3: the stages and their outputs
    # are under test, not the encoder (its parity tests run 96^3); 40 s instead of 66 s.
    tiny32 = config_lib.load("tiny", ["extract.roi=32"])
    (tmp_path / "tiny32.yaml").write_text(config_lib.dumps(tiny32))
    proc = subprocess.run(
        [sys.executable, "-m", "ctsearcher_jax.cli", "-q", "demo", "--out", str(out), "--num-cts",
         "5", "--num-readers", "2", "--shape", "40", "40", "24", "--epochs", "2", "--config",
         str(tmp_path / "tiny32.yaml")],
        capture_output=True, text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # -q holds in every stage: stderr has warnings only (no info lines, no bars)
    noise = [line for line in proc.stderr.splitlines() if line.strip() and "warning" not in line.lower()]
    assert not noise, proc.stderr[-3000:]
    for stage in ("synth", "validate-data", "extract", "train", "predict", "baselines", "evaluate",
                  "report"):
        assert f"$ ctsearcher {stage}" in proc.stdout
    assert "random-initialised" in proc.stdout
    run = out / "run"
    report = (run / "report" / "report.md").read_text()
    for row in ("| model |", "| uniform |", "| centre |", "| drilling |", "| human |"):
        assert row in report
    assert (run / "report" / "report.html").stat().st_size > 1000
    assert (run / "report" / "curves.png").stat().st_size > 1000
    preds = json.loads((run / "predictions" / "predictions.json").read_text())
    assert preds and all(p["length"] == len(p["X"]) > 0 for p in preds)
    manifest = json.loads((out / "features" / "manifest.json").read_text())
    assert all(v["weights"]["kind"] == "random" for v in manifest["volumes"].values())
    assert str(run / "report" / "report.html") in proc.stdout
    # trained with a validation split carved from the training CTs; the table is on test; the
    # report and the model card say so, and that the encoder was random
    inputs = json.loads((run / "inputs.json").read_text())
    assert inputs["splits"]["eval_source"] == "carved"
    assert inputs["splits"]["sizes"]["evaluation"]["cts"] == 1
    head = report.split("Workdir:")[0]
    assert "random-initialised Swin UNETR" in head and "selected on the test split" not in head
    assert "Every row is scored on the test split" in report
    assert "chosen on the validation split (1 CT carved from the training split" in report
    assert "± n/a" not in report and " nan" not in report
    card = (run / "model" / "README.md").read_text()
    card_head = card.split("## How to load")[0]
    assert "random-initialised Swin UNETR" in card_head
    assert "on the validation split (1 CT carved from the training split" in card_head
    html = (run / "report" / "report.html").read_text()
    assert "random-initialised Swin UNETR" in html.split("Workdir:")[0]
    # A second run into the same folder is refused: nothing is lost.
    again = subprocess.run([sys.executable, "-m", "ctsearcher_jax.cli", "demo", "--out", str(out)],
                           capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 2 and "--force" in again.stderr
    assert (run / "report" / "report.md").read_text() == report
