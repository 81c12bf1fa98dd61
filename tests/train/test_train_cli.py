"""`ctsearcher train` end to end on a tiny dataset: evaluation with sampled scanpaths and metrics,
TensorBoard + metrics.jsonl, best-checkpoint selection, model export, resume without --config."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import yaml

from ctsearcher_jax.config import load

pytestmark = pytest.mark.slow


def _tb_events(tb_dir):
    """(tag, step, kind) of every summary value in the tensorboardX event files."""
    from tensorboardX.proto import event_pb2

    out = []
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                kind = "image" if value.HasField("image") else "scalar" if value.HasField(
                    "simple_value") else "other"
                out.append((value.tag, event.step, kind))
    return out


@pytest.mark.cli
def test_train_command_evaluates_logs_selects_and_exports(helpers, tmp_path, xla_cache):
    root = helpers.tinydata.write_tiny_dataset(tmp_path / "data")
    cfg = helpers.tinydata.tiny_config_dict(root, batch_size=2, epochs=2,
                                            eval_scanpath_metrics=True, keep_last=1, keep_best=1)
    cfg["eval"] = {"best_metric": "scanmatch_with_duration", "min_length": 1}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    work = tmp_path / "run"
    result = helpers.run_train(tmp_path / "cfg.yaml", work, xla_cache, "--set", "train.log_every=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "completed: step 6/6" in result.stdout
    assert f"tensorboard --logdir {work / 'tb'}" in result.stdout

    # resolved config, with the override applied
    resolved = load(work / "config.yaml")
    assert resolved.train.log_every == 2 and resolved.model.d_model == 16

    rows = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    eval_rows = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in train_rows] == [2, 4, 6]
    assert {"loss", "spatial", "duration", "grad_norm", "lr", "cts_per_s"} <= set(train_rows[0])
    assert [r["step"] for r in eval_rows] == [3, 6]
    for r in eval_rows:
        assert 0 <= r["scanmatch_with_duration"] <= 1 and r["sed"] >= 0 and r["eval_loss"] > 0
        assert 0 <= r["multimatch_mean"] <= 1

    events = _tb_events(work / "tb")
    tags = {(t, k) for t, _, k in events}
    for tag in ("train/loss", "train/spatial_loss", "train/duration_loss", "train/grad_norm",
                "train/lr", "train/cts_per_s", "eval/loss", "eval/spatial_loss",
                "eval/scanmatch_with_duration", "eval/sed"):
        assert (tag, "scalar") in tags, tag
    assert not any(t.startswith("eval/eval_") for t, _ in tags)
    assert ("_hparams_/experiment", "other") in tags  # the config in TensorBoard's HParams tab

    # stderr is not a terminal: a start-up line and a progress line every log_every steps
    log = result.stderr
    assert "training: 1 devices (cpu" in log and "6 steps (2 epochs x 3)" in log
    assert "starting at step 0" in log
    steps = [l for l in log.splitlines() if " step " in l and "CTs/s" in l]
    assert [l.split(" step ")[1].split()[0] for l in steps] == ["2/6", "4/6", "6/6"], log
    assert all(" ETA " in l and " loss " in l for l in steps)
    assert "\r" not in log and "\x1b[" not in log  # no bar, no cursor codes
    assert ("eval/scanpaths", "image") in tags
    assert sorted(p.name for p in (work / "figures").iterdir())[0].startswith("eval_step0000003_")

    # keep_last 1 + keep_best 1 by scanmatch (higher is better)
    scores = {r["step"]: r["scanmatch_with_duration"] for r in eval_rows}
    best = max(scores, key=lambda s: (scores[s], s))
    kept = sorted(int(p.name) for p in (work / "checkpoints").iterdir() if p.name.isdigit())
    assert kept == sorted({6, best})

    # the exported model is the best step's
    from ctsearcher_jax.model.serialization import load_model, model_tensors

    model, config = load_model(work / "model")
    assert config.model == resolved.model
    saved = helpers.final_state(work, best)
    exported = model_tensors(model)
    assert len(exported) > 20
    for name, array in exported.items():
        ckpt_key = "['nn']['0']" + "".join(f"['{part}']" for part in name.split(".")) + "['value']"
        np.testing.assert_array_equal(array, saved[ckpt_key], err_msg=name)

    info = json.loads((work / "model" / "export.json").read_text())
    assert info["step"] == best and info["selected_by"] == "scanmatch_with_duration"
    assert info["value"] == scores[best] and info["direction"] == "higher is better"
    card = (work / "model" / "README.md").read_text()  # the model card names the step and why
    assert f"training step {best} of 6" in card and f"= {scores[best]:.4f}" in card
    assert "| eval_loss |" in card and (work / "model" / "config.json").is_file()
    latest = json.loads((work / "eval_metrics.json").read_text())
    assert latest["step"] == 6 and latest["metrics"]["eval_loss"] == eval_rows[-1]["eval_loss"]

    # a finished run resumes to "done" without --config (reads WORKDIR/config.yaml)
    again = helpers.run_train(None, work, xla_cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr and "completed: step 6/6" in again.stdout
    assert "resuming at step 6" in again.stderr
