"""Peak memory of `ctsearcher evaluate` for many small pairs and for one huge pair.

Each case runs in a fresh process (peak RSS = `ru_maxrss` of that process: Python, JAX and the
data included) and prints one row:

  many   20,000 ground-truth records (10,000 CTs x 2 readers) and 20,000 predictions of 10-30
         fixations, original protocol, the default families; chunked (the default) and, for
         comparison, with every pair in one chunk (the behaviour before chunking);
  huge   one 10,000 x 10,000-fixation pair: ScanMatch, MultiMatch `dp`, SED (MultiMatch `exact`
         is refused for it, which the row checks).

usage: python scripts/bench_evaluate_memory.py [many|huge|all]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _records(rng, n_cts, n_min, n_max, split):
    out = []
    for c in range(n_cts):
        for s in (1, 2):
            n = int(rng.integers(n_min, n_max + 1))
            rec = {"name": f"ct{c:05d}", "subject": s, "X": rng.uniform(1, 512, n).round(1).tolist(),
                   "Y": rng.uniform(1, 512, n).round(1).tolist(),
                   "Z": rng.uniform(1, 512, n).round(1).tolist(),
                   "T": rng.uniform(0.1, 0.4, n).round(3).tolist(), "length": n}
            if split:
                rec.update(split="test", task="", report="")
            out.append(rec)
    return out


def child(case: str, folder: Path) -> None:
    from ctsearcher_jax import cli
    from ctsearcher_jax.metrics import protocol

    argv = ["evaluate", "--data", str(folder / "gt.json"), "--pred", str(folder / "pred.json")]
    if case == "many-unchunked":  # one chunk (progress reports would chunk too)
        protocol.PAIR_CHUNK_PAIRS = protocol.PAIR_CHUNK_CELLS = 1 << 62
        argv.append("--no-progress")
    if case == "huge":
        argv += ["--multimatch-alignment", "dp"]
    t0 = time.perf_counter()
    rc = cli.main(argv)
    seconds = time.perf_counter() - t0
    if case == "huge":  # exact is refused before any work
        assert cli.main(argv[:-2]) == 2
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"case": case, "rc": rc, "seconds": round(seconds, 1),
                                  "peak_mib": round(peak)}))


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = []
        if which in ("many", "all"):
            (folder / "many").mkdir()
            (folder / "many" / "gt.json").write_text(json.dumps(_records(rng, 10_000, 10, 30, True)))
            (folder / "many" / "pred.json").write_text(json.dumps(_records(rng, 10_000, 10, 30, False)))
            cases += [("many", folder / "many"), ("many-unchunked", folder / "many")]
        if which in ("huge", "all"):
            (folder / "huge").mkdir()
            gt = _records(rng, 1, 10_000, 10_000, True)[:1]
            pred = _records(rng, 1, 10_000, 10_000, False)[:1]
            (folder / "huge" / "gt.json").write_text(json.dumps(gt))
            (folder / "huge" / "pred.json").write_text(json.dumps(pred))
            cases += [("huge", folder / "huge")]
        for case, path in cases:
            r = subprocess.run([sys.executable, __file__, "--child", case, str(path)],
                               capture_output=True, text=True, env=dict(os.environ))
            line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
            print(line[7:] if line else f"{case}: failed (rc {r.returncode}) {r.stderr[-2000:]}",
                  flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
