"""scripts/bench_accelerator.py --smoke runs every section on CPU and writes one Markdown table.

This keeps the accelerator proof from rotting between device runs; the numbers are not checked
(tests never assert on wall time), only that every section ran and produced its rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.cli
def test_smoke_mode_runs_every_section(tmp_path):
    out = tmp_path / "bench.md"
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
               CTSEARCHER_COMPILE_CACHE=str(tmp_path / "cache"),
               # these checks need the code paths, not fast code: compile quickly
               XLA_FLAGS="--xla_backend_optimization_level=0")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_accelerator.py"), "--smoke",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=900,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    table = out.read_text()
    assert table == proc.stdout[-len(table):]  # the same table is printed at the end
    lines = table.splitlines()
    assert lines[0] == "| section | measurement | result | notes |"
    body = "\n".join(lines[2:])
    for needle in ("what JAX sees", "peak bf16 matmul", "bfloat16 batch 2",
                   "ours float32", "ours bfloat16", "MONAI float32", "MONAI AMP",
                   "bf16 vs fp32 dec4 relative error", "ctsearcher extract 2 x", "hmean ScanMatch reward", "every metric, MultiMatch dp",
                   "every metric, MultiMatch exact", "bench wall time"):
        assert needle in body, needle
    assert "failed" not in body and "not run" not in body, body
