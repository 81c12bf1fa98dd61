"""Issue 24.3, row 3: text from data is text. One hostile dataset (CT names and subjects with `$`,
`\\`, `<script>`, quotes, newlines, right-to-left marks) goes through train (its evaluation
figure), predict, visualize, view and report: every command succeeds, every figure is drawn
with the text literal (no mathtext), and every HTML page carries it escaped."""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_inputs import HOSTILE_NAMES, HOSTILE_SUBJECTS, hostile_dataset  # noqa: E402

from ctsearcher_jax import cli  # noqa: E402
from ctsearcher_jax.data import manifest as mf  # noqa: E402
from ctsearcher_jax.text import visible  # noqa: E402

FEATURE_DIM, FEATURE_GRID = 192, (3, 3, 2)  # 16 x feature_size 12: what predict accepts
# What must never appear raw in an HTML output: markup that the names and subjects carry.
RAW_MARKUP = ("<script>alert", "<img src=x", "</script><b>", "<!--")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The dataset, random features for its CTs, and a one-epoch tiny training run on it."""
    root = tmp_path_factory.mktemp("hostile_text")
    data = hostile_dataset(root / "data")
    (root / "features").mkdir()
    rng = np.random.default_rng(0)
    entries = {}
    for name in HOSTILE_NAMES:  # features as `extract` leaves them (arrays + manifest entry)
        for suffix in (".npy", "_hidden_states_out_4.npy"):
            grid = rng.normal(size=(FEATURE_DIM, *FEATURE_GRID)).astype(np.float32)
            np.save(root / "features" / f"{name}{suffix}", grid, allow_pickle=False)
        entries[name] = {"channels": FEATURE_DIM, "grid_shape": list(FEATURE_GRID),
                         "volume_shape": [40, 40, 24], "weights": {"kind": "random", "seed": 0},
                         "outputs": {"dec4": f"{name}.npy",
                                     "hidden_states_out_4": f"{name}_hidden_states_out_4.npy"}}
    mf.write_manifest(mf.manifest_path(root / "features"), entries)
    config = {
        "model": {"d_model": 16, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1,
                  "dim_feedforward": 32, "dropout": 0.0, "feature_dim": FEATURE_DIM,
                  "grid": [2, 2, 2], "max_length": 8},
        "data": {"data_dir": str(data), "feature_dir": str(root / "features"),
                 "train_split": "test", "eval_split": "validation", "validation_fraction": 0.5,
                 "z_extent": "volume"},  # one CT trains, the other (carved) is evaluated
        "train": {"epochs": 1, "batch_size": 1, "log_every": 1, "eval_scanpath_metrics": True,
                  "tracker": ["tensorboard"]},
        "eval": {"min_length": 1, "multimatch_alignment": "dp"},
    }
    (root / "tiny.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["train", "--config", str(root / "tiny.yaml"), "--workdir",
                     str(root / "run")]) == 0
    return root


def _check_html(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    for raw in RAW_MARKUP:
        assert raw not in text, (path, raw)
    return text


def _viewer_data(path: Path) -> dict:
    text = _check_html(path)
    data = re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>', text,
                     re.S).group(1)
    assert "<" not in data  # nothing in the data can end the element or open a comment
    payload = json.loads(data)
    title = re.search(r"<title>(.*?)</title>", text, re.S).group(1)
    assert html.unescape(title) == f"{payload['name']}: scanpath viewer"
    return payload


@pytest.mark.slow
def test_hostile_names_and_subjects_through_every_output(run, capsys):
    root, data = run, run / "data"
    shown = {visible(s) for s in HOSTILE_SUBJECTS}
    # train: its evaluation figure of the first CT, named after it, drawn
    figures = list((root / "run" / "figures").glob("eval_step*.png"))
    assert [f.name for f in figures] == [f"eval_step0000001_{sorted(HOSTILE_NAMES)[0]}.png"]
    # predict: dataset records and every figure of both CTs
    assert cli.main(["predict", "--data", str(data), "--checkpoint", str(root / "run"),
                     "--features", str(root / "features"), "--out", str(root / "pred"),
                     "--figure-cts", "2"]) == 0
    records = json.loads((root / "pred" / "predictions.json").read_text())
    assert {r["name"] for r in records} == set(HOSTILE_NAMES)
    assert {r["subject"] for r in records} == set(HOSTILE_SUBJECTS)  # kept as they are in data
    for name in HOSTILE_NAMES:
        for suffix in ("_projections.png", "_drilling.png", "_density.png", "_slices.gif"):
            assert (root / "pred" / "figures" / f"{name}{suffix}").stat().st_size > 1000
        payload = _viewer_data(root / "pred" / "figures" / f"{name}_viewer.html")
        assert payload["name"] == visible(name)
    # visualize and view, with the predictions beside the readers
    pred = str(root / "pred" / "predictions.json")
    assert cli.main(["visualize", "--data", str(data), "--pred", pred, "--name", *HOSTILE_NAMES,
                     "--out", str(root / "vis"), "--figures",
                     "projections,drilling,density,slices,viewer"]) == 0
    assert cli.main(["view", "--data", str(data), "--pred", pred, "--name", *HOSTILE_NAMES,
                     "--out", str(root / "view"), "--metrics"]) == 0
    for folder in ("vis", "view"):
        for name in HOSTILE_NAMES:
            payload = _viewer_data(root / folder / f"{name}_viewer.html")
            assert payload["name"] == visible(name) and "\u202e" not in json.dumps(payload)
            assert {p["subject"] for p in payload["paths"]} == shown
    assert (root / "vis" / f"{HOSTILE_NAMES[1]}_projections.png").stat().st_size > 1000
    # report of the run
    assert cli.main(["report", "--workdir", str(root / "run")]) == 0
    _check_html(root / "run" / "report" / "report.html")
    capsys.readouterr()


def test_figure_labels_show_data_text_as_written():
    """A subject with a newline and a right-to-left override is one visible line in a label,
    and mathtext never parses it (`save_png` draws every text literally)."""
    from matplotlib.text import Text

    from ctsearcher_jax.data.schema import Scanpath
    from ctsearcher_jax.viz.figure import new_figure, save_png
    from ctsearcher_jax.viz.scanpaths import scanpath_label

    f = np.asarray
    sp = Scanpath(name=HOSTILE_NAMES[0], subject=HOSTILE_SUBJECTS[1], split=None,
                  x=f([10.0]), y=f([10.0]), z=f([1.0]), t=f([0.2]))
    label = scanpath_label(sp, "gt")
    assert "\n" not in label and "\u202e" not in label and "\\u000a" in label and "\\u202e" in label
    fig = new_figure(2, 1, 50)
    fig.suptitle(HOSTILE_NAMES[0] + " " + HOSTILE_SUBJECTS[0])
    save_png(fig, Path(__import__("tempfile").mkdtemp()) / "t.png")
    assert all(not t.get_parse_math() for t in fig.findobj(Text))
