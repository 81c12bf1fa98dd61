"""`ctsearcher demo` end to end at a smaller size: every stage runs and the report has the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.cli
def test_demo_pipeline_small(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "ctsearcher_jax.cli", "demo", "--out", str(out), "--num-cts", "4",
         "--num-readers", "2", "--shape", "40", "40", "24", "--epochs", "2"],
        capture_output=True, text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
    # A second run into the same folder is refused: nothing is lost.
    again = subprocess.run([sys.executable, "-m", "ctsearcher_jax.cli", "demo", "--out", str(out)],
                           capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 2 and "--force" in again.stderr
    assert (run / "report" / "report.md").read_text() == report
