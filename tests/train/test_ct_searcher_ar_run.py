"""CT-Searcher AR through the whole chain: train (loss + sampled-metric evaluators), fine-tune
with the ScanMatch reward, predict on volumes (records, figures, viewer)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tinydata  # tests/train is on the path (pyproject: pythonpath)

from ctsearcher_jax.config import from_dict

AR_MODEL = {"arch": "ct_searcher_ar", "num_decoder_layers": 2, "ar_layers": 1}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tinydata.write_tiny_dataset(tmp_path_factory.mktemp("ar"), num_train=4, num_test=2)


def _config(root, **model):
    data = tinydata.tiny_config_dict(root, epochs=1, batch_size=2, warmup_epochs=0,
                                     eval_scanpath_metrics=True)
    data["model"].update({**AR_MODEL, **model})
    data["eval"].update({"metrics": ["scanmatch", "sed"], "multimatch_alignment": "dp",
                         "temperature": 0.8, "top_k": 4})
    return from_dict(data)


@pytest.mark.slow  # end to end, as the reader-conditioning runs
def test_train_then_finetune(root, tmp_path):
    """The reader-conditioned AR model (the longer path: reader embedding and its dropout)
    trains and evaluates, then is fine-tuned. The unconditioned model goes through the same
    loop; its own pieces (loss, sampler, KV cache) are tested in tests/model/test_ct_searcher_ar.py
    and its prediction below."""
    from ctsearcher_jax.train.finetune import finetune_config
    from ctsearcher_jax.train.loop import train_and_evaluate

    config = _config(root, reader_conditioning="embedding", reader_dropout=0.5)
    result = train_and_evaluate(config, tmp_path / "sup", progress=False)
    assert result.status == "completed" and math.isfinite(result.last_train["loss"])
    # the evaluators ran the AR loss and its sampler (scanmatch, sed on sampled scanpaths)
    assert {"eval_loss", "scanmatch_with_duration", "sed"} <= set(result.last_eval)
    assert all(math.isfinite(v) for v in result.last_eval.values())
    assert (tmp_path / "sup" / "model" / "model.safetensors").is_file()

    ft = finetune_config(tmp_path / "sup", ["finetune.epochs=1", "finetune.samples=2"])
    tuned = train_and_evaluate(ft, tmp_path / "ft", progress=False)
    assert tuned.status == "completed"
    metrics = tuned.last_train
    assert all(math.isfinite(metrics[k]) for k in ("loss", "pg_loss", "reward_mean", "supervised"))
    assert 0 < metrics["reward_mean"] <= 1
    assert (tmp_path / "ft" / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_predict_on_volumes_writes_records_and_figures(tmp_path):
    from flax import nnx

    from ctsearcher_jax import config as config_lib
    from ctsearcher_jax.data import schema
    from ctsearcher_jax.data.synthetic import synthesize
    from ctsearcher_jax.model.factory import build
    from ctsearcher_jax.model.serialization import load_model, save_model
    from ctsearcher_jax.predict import predict_volumes

    cfg = config_lib.load("tiny", ["model.arch=ct_searcher_ar", "model.num_decoder_layers=2",
                                   "eval.min_length=4", "eval.temperature=0.9",
                                   "extract.roi=32"])  # small encoder window: the chain is tested
    save_model(tmp_path / "run" / "model", build(cfg.model, nnx.Rngs(0)), cfg)
    model, loaded = load_model(tmp_path / "run" / "model")
    assert loaded.model.arch == "ct_searcher_ar" and type(model).__name__ == "CTSearcherAR"
    synthesize(tmp_path / "data", num_cts=1, num_readers=2, seed=3, shape=(40, 40, 24),
               min_fixations=8, max_fixations=16)
    items = schema.load_dataset(tmp_path / "data")
    vols = [tmp_path / "data" / "cts" / f"{it.name}.nii.gz" for it in items]
    summary = predict_volumes(vols, tmp_path / "run", tmp_path / "out", samples=2, seed=1,
                              readers={it.name: it.readers for it in items}, figure_limit=1,
                              progress=False, swin_weights="random")
    assert summary.ok
    preds = json.loads(summary.predictions.read_text())
    assert len(preds) == 2 * 2
    for p in preds:
        assert 4 <= p["length"] <= cfg.model.max_length
        z = np.asarray(p["Z"])
        assert (z >= 1).all() and (z <= 24).all() and (z == np.round(z)).all()  # whole slices
        xy = np.asarray(p["X"] + p["Y"])
        assert (xy >= 1).all() and (xy <= 512).all()
        assert len(set(np.round(p["X"], 3))) > cfg.model.grid[1]  # inside cells, not centres
    assert set(summary.figures[items[0].name]) >= {"drilling", "viewer"}
