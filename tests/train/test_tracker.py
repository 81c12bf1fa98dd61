"""metrics.jsonl tracker: resumed runs drop lines after the restored step; process 0 only."""

from __future__ import annotations

import json

from ctsearcher_jax.train.tracker import JsonlTracker, NullTracker, make_tracker


def test_jsonl_tracker_drops_lines_after_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    t = JsonlTracker(path)
    for s in range(1, 6):
        t.log_scalars(s, {"loss": float(s)})
    t.log_scalars(4, {"eval_loss": float("nan")}, prefix="eval")
    t.close()
    with open(path, "a") as f:
        f.write('{"step": 6, "spl')  # cut by a kill
    t = JsonlTracker(path, start_step=3)
    t.log_scalars(4, {"loss": 40.0})
    t.close()
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(1, "train"), (2, "train"), (3, "train"),
                                                        (4, "train")]
    assert rows[-1]["loss"] == 40.0
    assert isinstance(make_tracker(tmp_path / "w", process_index=1), NullTracker)
    assert not (tmp_path / "w").exists()
