"""Reader-conditioned CT-Searcher: per-reader outputs, shared encoder, mapping kept, unknown ids refused."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import tinydata  # tests/train is on the path (pyproject: pythonpath)
from flax import nnx

from ctsearcher_jax.config import from_dict
from ctsearcher_jax.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tinydata.write_tiny_dataset(tmp_path_factory.mktemp("cond"), num_train=4, num_test=2)


@pytest.fixture(scope="module")
def conditioned_run(root, tmp_path_factory):
    """A two-step conditioned training run (4 CTs, batch 2): (workdir, result, config)."""
    from ctsearcher_jax.train.loop import train_and_evaluate

    config = _config(root)
    work = tmp_path_factory.mktemp("cond_run") / "run"
    return work, train_and_evaluate(config, work), config


def _config(root, **model):
    data = tinydata.tiny_config_dict(root, epochs=1, batch_size=2, warmup_epochs=0)
    data["model"].update({"reader_conditioning": "embedding", **model})
    data["data"]["eval_split"] = "none"  # no evaluators: these tests check training, not scores
    return from_dict(data)


def _batch(config):
    from ctsearcher_jax.data.pipeline import CTExampleSource, max_readers
    from ctsearcher_jax.data.schema import load_dataset

    items = load_dataset(config.data.data_dir)
    source = CTExampleSource(tuple(items[:3]), config, max_readers(items))
    rows = [source[i] for i in range(3)]
    return {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]}


@pytest.mark.slow  # two gradient programs of the conditioned model (12 s); tests/model/test_losses.py
# keeps the same equality for CT-Searcher in the fast tier
def test_shared_forward_equals_per_reader_and_readers_differ(root):
    from ctsearcher_jax.data.readers import dataset_readers, with_readers
    from ctsearcher_jax.data.schema import load_dataset
    from ctsearcher_jax.model.factory import build
    from ctsearcher_jax.train.step import loss_terms

    config = with_readers(_config(root, dropout=0.0), load_dataset(root / "data"))
    assert config.model.readers == ("1", "2", "3") == dataset_readers(load_dataset(root / "data"))
    model = build(config.model, nnx.Rngs(0))
    batch = _batch(config)
    np.testing.assert_array_equal(batch["reader_ids"], [[0, 0, 0], [0, 1, 0], [0, 1, 2]])
    per_reader_train = dataclasses.replace(config.train, share_forward_across_readers=False)

    @nnx.jit
    def run(model, batch):  # one compiled call: eager NNX is slow on two cores
        shared = loss_terms(model, batch, train=config.train, deterministic=True)
        per_reader = loss_terms(model, batch, train=per_reader_train, deterministic=True)
        tokens = batch["tokens"][:1]
        # (B, R) readers: the encoder runs once, B*R outputs
        both = model(tokens, jnp.array([[0, 2]]))
        alone = [model(tokens, jnp.array([r])) for r in (0, 2)]
        return shared, per_reader, both, alone

    shared, per_reader, both, alone = run(model, batch)
    np.testing.assert_allclose(shared, per_reader, rtol=1e-6)
    for slot in range(2):
        np.testing.assert_allclose(both.spatial_logits[slot], alone[slot].spatial_logits[0],
                                   rtol=1e-5, atol=1e-6)
    assert not np.allclose(both.spatial_logits[0], both.spatial_logits[1])
    assert not np.allclose(both.duration_mu[0], both.duration_mu[1])
    tokens = batch["tokens"]
    with pytest.raises(ValueError, match="reader-conditioned"):
        model(tokens)


def test_unknown_reader_ids_are_refused(root):
    from ctsearcher_jax.data.pipeline import CTExampleSource
    from ctsearcher_jax.data.readers import reader_indices
    from ctsearcher_jax.data.schema import load_dataset

    config = _config(root, readers=["1", "2"])  # the data also has reader 3
    with pytest.raises(DataError, match=r"reader '3' is unknown.*\['1', '2'\]"):
        reader_indices(config.model, [1, 3], where="here")
    items = load_dataset(root / "data")
    with pytest.raises(DataError, match="CT 'ct_002'"):
        CTExampleSource(tuple(items), config, 3)[2]
    with pytest.raises(ConfigError, match="only for model.reader_conditioning=embedding"):
        from_dict({"model": {"readers": ["1"]}})


@pytest.mark.slow
def test_smoke_train_export_round_trip_and_predict_per_reader(root, conditioned_run):
    from ctsearcher_jax.model.generate import sample_records
    from ctsearcher_jax.model.serialization import load_model, model_tensors
    from ctsearcher_jax.train.checkpoint import RunCheckpoints
    run, result, _ = conditioned_run
    assert result.status == "completed" and result.step == 2
    assert np.isfinite(result.last_train["loss"])
    model, loaded = load_model(run / "model")
    assert loaded.model.readers == ("1", "2", "3")
    assert "reader_embed" in model_tensors(model)
    checkpoints = RunCheckpoints(run, loaded, best_metric=None)
    assert checkpoints.read_meta(2)["config"]["model"]["readers"] == ["1", "2", "3"]
    checkpoints.close()

    names = ["ct_004", "ct_005"]
    every = sample_records(model, loaded, names, root / "features", samples=2, seed=0)
    assert [r["subject"] for r in every[:6]] == [1, 2, 3, 1, 2, 3]  # sample-major, all readers
    one = sample_records(model, loaded, names, root / "features", samples=2, seed=0,
                         reader_filter=["2"])
    assert [r["subject"] for r in one] == [2, 2, 2, 2]
    with pytest.raises(DataError, match="reader '7' is unknown"):
        sample_records(model, loaded, names, root / "features", samples=1, seed=0,
                       reader_filter=["7"])


@pytest.mark.slow
def test_finetune_smoke_logs_reward_and_resumes_exactly(conditioned_run, tmp_path):
    """Two fine-tuning steps from a conditioned model; dropping the last checkpoint and running
    again resumes at step 1 and reproduces step 2 bit for bit (samples depend on (seed, step))."""
    import json
    import shutil

    from ctsearcher_jax import cli

    source, _, config = conditioned_run
    args = ["--set", "finetune.epochs=1", "--set", "finetune.samples=3",
            "--set", "train.checkpoint_every_steps=1", "--set", "finetune.supervised_weight=0.5"]
    work = tmp_path / "ft"
    assert cli.main(["finetune", "--model", str(source), "--workdir", str(work), *args]) == 0
    rows = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2]
    for r in train_rows:
        assert 0 <= r["reward_mean"] <= 1 and r["reward_std"] >= 0 and np.isfinite(r["supervised"])
    # lr x0.1, no warm-up, linear decay over the 2 steps: step 1 at half of it
    assert train_rows[0]["lr"] == pytest.approx(config.train.lr * 0.1 * 0.5)
    from ctsearcher_jax.model.serialization import load_model, model_tensors

    saved = model_tensors(load_model(work / "model")[0])
    first = train_rows[1]
    shutil.rmtree(work / "checkpoints" / "2")
    shutil.rmtree(work / "model")
    (work / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows if r["step"] < 2) + "\n")
    assert cli.main(["finetune", "--workdir", str(work)]) == 0  # resumes from step 1
    again = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    again = [r for r in again if r["split"] == "train" and r["step"] == 2][0]
    assert again["reward_mean"] == first["reward_mean"] and again["loss"] == first["loss"]
    resumed = model_tensors(load_model(work / "model")[0])
    assert resumed.keys() == saved.keys()
    for k in saved:
        np.testing.assert_array_equal(resumed[k], saved[k], err_msg=k)
