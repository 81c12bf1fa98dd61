"""GazeSources: the CT, predictions and reader selection shared by `visualize` and `view`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctsearcher_jax.data.gaze_sources import GazeSources
from ctsearcher_jax.data.synthetic import synthesize
from ctsearcher_jax.errors import DataError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, num_cts=2, num_readers=2, seed=3, shape=(24, 24, 12), min_fixations=4,
               max_fixations=6)
    return out


def _records(dataset: Path) -> list[dict]:
    return json.loads((dataset / "data_simplified_split_matched_pt.json").read_text())


def test_select_filters_readers_and_predictions(dataset, tmp_path):
    records = _records(dataset)
    name = records[0]["name"]
    preds = [dict(r, name=name) for r in records if r["name"] == name]
    for r in preds:
        r.pop("split", None)
    pred_file = tmp_path / "pred.json"
    pred_file.write_text(json.dumps(preds))
    sources = GazeSources.load(dataset, str(pred_file), ["1"])
    gt, pred = sources.select(name)
    assert [str(s.subject) for s in gt] == ["1"] and [str(s.subject) for s in pred] == ["1"]
    everyone = GazeSources.load(dataset, str(pred_file))
    gt, pred = everyone.select(name)
    assert len(gt) == 2 and len(pred) == 2


def test_select_errors_name_the_problem(dataset, tmp_path):
    records = _records(dataset)
    names = sorted({r["name"] for r in records})
    sources = GazeSources.load(dataset)
    with pytest.raises(DataError, match="'nope' is not in .*known CTs"):
        sources.select("nope")
    with pytest.raises(DataError, match=r"no scanpath of reader\(s\) \['9'\]"):
        GazeSources.load(dataset, readers=["9"]).select(names[0])
    # a predictions file without this CT
    only_second = [dict(r) for r in records if r["name"] == names[1]]
    pred_file = tmp_path / "pred.json"
    pred_file.write_text(json.dumps(only_second))
    with pytest.raises(DataError, match=f"no predicted scanpath for CT '{names[0]}'"):
        GazeSources.load(dataset, str(pred_file)).select(names[0])
    # a CT named only by the predictions is accepted when ground truth is optional, but it
    # still needs its volume
    renamed = [dict(r, name="ghost") for r in only_second]
    pred_file.write_text(json.dumps(renamed))
    ghost = GazeSources.load(dataset, str(pred_file))
    with pytest.raises(DataError, match="'ghost' is not in"):
        ghost.select("ghost")
    with pytest.raises(DataError, match="'ghost': no volume"):
        ghost.select("ghost", need_ground_truth=False)
