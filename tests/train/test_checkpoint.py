"""Checkpoint compatibility on resume and the direction of selection metrics."""

from __future__ import annotations

import pytest

from ctsearcher_jax.config import from_dict
from ctsearcher_jax.errors import ConfigError
from ctsearcher_jax.train.checkpoint import incompatible_keys, metric_higher_is_better


def test_resume_invariants_and_metric_directions():
    base = from_dict({})
    changed = from_dict({"model": {"d_model": 64}, "train": {"log_every": 1, "fsdp": 2},
                         "data": {"feature_dir": "elsewhere"}})
    from ctsearcher_jax.config import to_dict

    keys = incompatible_keys(to_dict(base), changed)
    assert keys == ["model.d_model: checkpoint 768, now 64"]
    assert metric_higher_is_better("scanmatch_with_duration")
    assert metric_higher_is_better("multimatch_vector")
    assert not metric_higher_is_better("sed")
    assert not metric_higher_is_better("saliency_kld")
    assert not metric_higher_is_better("eval_loss")
    with pytest.raises(ConfigError, match="unknown"):
        metric_higher_is_better("accuracy")


def test_checkpoint_written_before_model_arch_existed_resumes():
    from ctsearcher_jax.config import to_dict

    config = from_dict({})
    saved = to_dict(config)
    del saved["model"]["arch"]
    assert incompatible_keys(saved, config) == []
    other = from_dict({"model": {"arch": "ct_searcher", "d_model": 64}})
    assert incompatible_keys(saved, other) == ["model.d_model: checkpoint 768, now 64"]


def test_train_state_is_stored_in_the_layout_of_earlier_checkpoints():
    """Checkpoints hold {"nn": {0: model, 1: optimizer}, "key"}, as before TrainState existed."""
    import jax
    import optax

    from ctsearcher_jax.train.step import TrainState, init_train_state

    config = from_dict({"model": {"d_model": 8, "num_heads": 2, "num_encoder_layers": 1,
                                  "num_decoder_layers": 1, "dim_feedforward": 8, "feature_dim": 4,
                                  "grid": [1, 1, 2], "max_length": 3}})
    _, _, abstract = init_train_state(config, optax.adamw(1e-3))
    tree = abstract.checkpoint_tree()
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]
    assert paths[0] == "['key']"
    assert "['nn'][0]['input_proj1']['kernel'].value" in paths
    assert "['nn'][1]['step'].value" in paths
    assert all(p.startswith(("['key']", "['nn'][0]", "['nn'][1]")) for p in paths)
    back = TrainState.from_checkpoint_tree(tree)
    assert jax.tree.structure(back) == jax.tree.structure(abstract)
