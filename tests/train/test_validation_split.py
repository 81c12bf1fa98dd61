"""Training with the default validation split: carved from the training CTs, evaluated during
training, chooses the exported step; recorded in inputs.json, the checkpoints, export.json and the
model card; a resume with another carve is refused."""

from __future__ import annotations

import dataclasses
import json

import pytest
import tinydata

from ctsearcher_jax.config import from_dict
from ctsearcher_jax.errors import ConfigError
from ctsearcher_jax.train.checkpoint import RunCheckpoints
from ctsearcher_jax.train.loop import train_and_evaluate

pytestmark = pytest.mark.slow  # two short trainings in process (about a minute on 2 cores)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tinydata.write_tiny_dataset(tmp_path_factory.mktemp("val"), num_train=6, num_test=3)
    data = tinydata.tiny_config_dict(root, epochs=2, batch_size=2, warmup_epochs=0)
    data["data"]["eval_split"] = "validation"
    data["data"]["validation_fraction"] = 0.3  # 2 of the 6 training CTs
    config = from_dict(data)
    workdir = tmp_path_factory.mktemp("valrun") / "run"
    result = train_and_evaluate(config, workdir)
    return config, workdir, result


def test_the_validation_split_chooses_the_step_and_is_recorded(run):
    config, workdir, result = run
    assert result.status == "completed" and result.total_steps == 4  # 4 CTs left, batch 2
    inputs = json.loads((workdir / "inputs.json").read_text())
    splits = inputs["splits"]
    assert (splits["eval_split"], splits["eval_source"]) == ("validation", "carved")
    assert splits["sizes"]["train"]["cts"] == 4 and splits["sizes"]["evaluation"]["cts"] == 2
    assert splits["sizes"]["test"]["cts"] == 3
    assert len(inputs["dataset"]["sha256"]) == 64 and inputs["dataset"]["cts"] == 9
    assert inputs["features"]["unrecorded_cts"] == 6  # tinydata writes no manifest
    meta = RunCheckpoints(workdir, config, best_metric="eval_loss").read_meta(4)
    assert meta["splits"]["evaluation_cts"] == splits["evaluation_cts"]
    info = json.loads((workdir / "model" / "export.json").read_text())
    assert info["selected_by"] == "eval_loss"
    assert info["selected_on"] == {"eval_split": "validation", "eval_source": "carved",
                                   "validation_fraction": 0.3, "validation_seed": 0, "cts": 2}
    card = (workdir / "model" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: ctsearcher-jax\n")
    assert "on the validation split (2 CTs carved from the training split" in card
    assert "## Metrics at step" in card and "Splits (CTs / scanpaths): train 4 /" in card
    assert "Swin UNETR weights: not recorded for 6 CT(s)" in card
    assert "selected on the test split" not in card and "random-initialised" not in card


def test_a_resume_with_another_carve_is_refused(run):
    config, workdir, _ = run
    again = train_and_evaluate(config, workdir)  # the same carve: resumes (already done)
    assert again.step == 4
    other = dataclasses.replace(config, data=dataclasses.replace(config.data, validation_seed=5))
    with pytest.raises(ConfigError, match="data.validation_seed: checkpoint 0, now 5"):
        train_and_evaluate(other, workdir)
