"""Train step: exact gradient accumulation, per-reader mode, bf16 compute, the legacy loss flag."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ctsearcher_jax.config import from_dict


@pytest.fixture(scope="module")
def probe(helpers, tmp_path_factory, xla_cache):
    root = helpers.tinydata.write_tiny_dataset(tmp_path_factory.mktemp("probe"))
    result = subprocess.run([sys.executable, str(helpers.HERE / "step_probe.py"), str(root)],
                            env=helpers.subprocess_env(xla_cache), capture_output=True, text=True,
                            timeout=300, cwd=helpers.REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # the probe compiles three training steps (28 s): full suite only
def test_per_reader_forward_and_accumulation_equal_the_plain_step(probe):
    plain, other = probe["plain"], probe["per_reader_accum"]
    for a, b in zip(plain["losses"], other["losses"]):
        for key in ("loss", "spatial", "duration", "grad_norm", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert plain["params"].keys() == other["params"].keys()
    for k in plain["params"]:
        np.testing.assert_allclose(other["params"][k], plain["params"][k], rtol=0, atol=1e-5,
                                   err_msg=k)
    assert len(plain["params"]) > 50
    # lr followed the schedule: 2 warm-up steps of 6, then linear decay
    assert [round(x["lr"], 7) for x in plain["losses"]] == [0.0015, 0.003, 0.00225]


@pytest.mark.slow
def test_bf16_compute_keeps_float32_parameters(probe):
    bf16, plain = probe["bf16"], probe["plain"]
    assert "bfloat16" not in bf16["dtypes"] and "float32" in bf16["dtypes"]
    for a, b in zip(bf16["losses"], plain["losses"]):
        assert np.isfinite(a["loss"]) and a["loss"] == pytest.approx(b["loss"], rel=5e-2)
        assert a["loss"] != b["loss"]  # the compute dtype really changed


def test_legacy_loss_epsilon_flag_reaches_the_loss(helpers, tmp_path):
    """train.legacy_loss_epsilon gives the original's -sum t*log(softmax + 1e-7) in the step."""
    import dataclasses

    import jax.numpy as jnp
    from flax import nnx

    from ctsearcher_jax.data.pipeline import CTExampleSource, max_readers
    from ctsearcher_jax.data.schema import load_dataset
    from ctsearcher_jax.model.ct_searcher import CTSearcher
    from ctsearcher_jax.model.losses import scanpath_loss
    from ctsearcher_jax.train.step import batch_targets, loss_terms

    root = helpers.tinydata.write_tiny_dataset(tmp_path, num_train=3, num_test=0)
    config = from_dict(helpers.tinydata.tiny_config_dict(root))
    items = load_dataset(root / "data")
    source = CTExampleSource(tuple(items), config, max_readers(items))
    batch = {k: jnp.stack([jnp.asarray(source[i][k]) for i in range(3)]) for k in source[0]}
    model = CTSearcher(config.model, rngs=nnx.Rngs(0))
    # an untrained model with confident logits, so that softmax underflows below 1e-7 somewhere
    model.spatial_fc.kernel[...] = model.spatial_fc.kernel[...] * 200.0
    outputs = model(batch["tokens"])
    expected = {flag: scanpath_loss(outputs, batch_targets(batch), batch["reader_mask"],
                                    duration_weight=1.0, legacy_epsilon=flag)[1]["spatial"]
                for flag in (False, True)}
    got = {}
    for flag in (False, True):
        train = dataclasses.replace(config.train, legacy_loss_epsilon=flag)
        got[flag] = loss_terms(model, batch, train=train, deterministic=True)[0]
    assert float(expected[True]) != pytest.approx(float(expected[False]), rel=1e-3)
    for flag in (False, True):
        assert float(got[flag]) == pytest.approx(float(expected[flag]), rel=1e-6)
