"""metrics.jsonl tracker: resumed runs drop lines after the restored step; process 0 only."""

from __future__ import annotations

import json

import pytest

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


def _png(path):
    from PIL import Image

    Image.new("RGB", (8, 6), (200, 30, 30)).save(path)
    return path


def _tb_summaries(tb_dir):
    """[(tag, step, value or None, plugin name)] of every summary value in the event files."""
    import struct

    from tensorboardX.proto import event_pb2

    out = []
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                value = v.simple_value if v.HasField("simple_value") else None
                out.append((v.tag, event.step, value, v.metadata.plugin_data.plugin_name))
    return out


def _wandb_records(run_file):
    """The protobuf records of an offline W&B run file (LevelDB log: 32 KiB blocks, 7-byte
    record headers, after a 7-byte file header)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, out, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block  # block trailer
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST
            out.append(pb.Record.FromString(pending))
            pending = b""
    return out


def _log_a_run(tracker, png):
    tracker.log_hparams({"model.grid": (4, 4, 4), "train.lr": 1e-3, "data.blur_sigma": None,
                         "train.share_forward_across_readers": True},
                        metrics=["eval_loss", "scanmatch_with_duration"])
    tracker.log_scalars(2, {"loss": 3.0, "spatial": 2.5, "duration": 0.5, "cts_per_s": 9.0})
    tracker.log_scalars(3, {"eval_loss": 2.75, "eval_duration": 0.25,
                            "scanmatch_with_duration": 0.5}, prefix="eval")
    tracker.log_image(3, "eval/scanpaths", png)
    tracker.flush()
    tracker.close()


def test_tags_are_plain():
    from ctsearcher_jax.train.tracker import tag

    assert tag("", "duration") == "train/duration_loss" and tag("", "loss") == "train/loss"
    assert tag("eval", "eval_loss") == "eval/loss" and tag("eval", "eval_spatial") == "eval/spatial_loss"
    assert tag("eval", "scanmatch_with_duration") == "eval/scanmatch_with_duration"


def test_tensorboard_and_wandb_get_the_same_scalars_hparams_and_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    work = tmp_path / "run"
    tracker = make_tracker(work, process_index=0, trackers=("tensorboard", "wandb"),
                           wandb_project="ctsearcher-test")
    _log_a_run(tracker, _png(tmp_path / "fig.png"))
    expected = {("train/loss", 2, 3.0), ("train/spatial_loss", 2, 2.5),
                ("train/duration_loss", 2, 0.5), ("train/cts_per_s", 2, 9.0),
                ("eval/loss", 3, 2.75), ("eval/duration_loss", 3, 0.25),
                ("eval/scanmatch_with_duration", 3, 0.5)}

    tb = _tb_summaries(work / "tb")
    assert {(t, s, v) for t, s, v, _ in tb if v is not None} == expected
    assert ("eval/scanpaths", 3) in {(t, s) for t, s, _, _ in tb}
    # the config through the HParams plugin: experiment (with the eval metric columns),
    # session start and end
    plugin = [t for t, _, _, p in tb if p == "hparams"]
    assert sorted(plugin) == ["_hparams_/experiment", "_hparams_/session_end_info",
                              "_hparams_/session_start_info"]
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    (events,) = (work / "tb").glob("events.out.tfevents.*")
    raw = events.read_bytes()
    assert b"_hparams_/experiment" in raw and b"model.grid" in raw and b"eval/loss" in raw
    assert HParamsPluginData  # the plugin's proto ships with tensorboardX

    import wandb

    wandb.teardown()  # the wandb service writes the run file out when it stops (process exit)
    (run_file,) = (work / "wandb").glob("wandb/offline-run-*/run-*.wandb")
    history, config = [], {}
    for rec in _wandb_records(run_file):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            row: dict = {}
            for item in rec.history.item:
                *outer, last = list(item.nested_key) or [item.key]
                node = row
                for key in outer:  # an image: {"eval/scanpaths": {"_type": ..., "path": ...}}
                    node = node.setdefault(key, {})
                node[last] = json.loads(item.value_json)
            history.append(row)
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in rec.config.update})
    logged = {(k, row["_step"], v) for row in history for k, v in row.items()
              if not k.startswith("_") and not isinstance(v, dict)}
    assert logged == expected
    images = [(row["_step"], row["eval/scanpaths"]) for row in history if "eval/scanpaths" in row]
    assert len(images) == 1 and images[0][0] == 3 and images[0][1]["_type"] == "image-file"
    assert config["model.grid"] == "[4, 4, 4]" and config["train.lr"] == 1e-3
    assert config["data.blur_sigma"] == "null"
    assert (work / "wandb" / "run_id").read_text().strip() in run_file.name


def test_wandb_missing_is_a_config_error(tmp_path, monkeypatch):
    import sys

    import pytest

    from ctsearcher_jax.errors import ConfigError

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"wandb is not installed: pip install .*\[wandb\]'"):
        make_tracker(tmp_path, process_index=0, trackers=("wandb",))


def test_tensorboard_loads_without_importing_torch_and_leaves_torch_importable():
    """tensorboardX is loaded with PyTorch hidden (2 s of every training start); torch stays
    importable afterwards, and a torch imported before is left as it is."""
    import subprocess
    import sys

    pytest.importorskip("torch")  # the test extra installs it; without it there is nothing hidden
    code = ("import sys; import ctsearcher_jax.train.tracker; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "import torch; torch.zeros(1)")
    subprocess.run([sys.executable, "-c", code], check=True)
    code = ("import sys, torch; import ctsearcher_jax.train.tracker as t; "
            "assert sys.modules['torch'] is torch and not t._HIDE_TORCH")
    subprocess.run([sys.executable, "-c", code], check=True)
