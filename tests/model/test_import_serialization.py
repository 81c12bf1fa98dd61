"""`ctsearcher import-upstream` and save_model/load_model: original weights survive the round trip."""

from __future__ import annotations

import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from ctsearcher_jax.cli import main
from ctsearcher_jax.config import ModelConfig
from ctsearcher_jax.errors import CheckpointError, WeightsError
from ctsearcher_jax.model import serialization
from ctsearcher_jax.model.ct_searcher import CTSearcher

torch.set_num_threads(1)
forward = nnx.jit(lambda model, x: model(x))


def _torch_state(state_dict, prefix=""):
    return {prefix + k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}


def test_import_plain_state_dict_reproduces_outputs(tmp_path, state_dict, reference, src, close_rel):
    ckpt = tmp_path / "weights.pt"
    torch.save(_torch_state(state_dict), ckpt)
    assert main(["import-upstream", str(ckpt), "--out", str(tmp_path / "m"), "--num-heads", "4"]) == 0
    model, config = serialization.load_model(tmp_path / "m")
    assert config.model.legacy_stop_last and config.model.num_heads == 4
    out = forward(model, jnp.asarray(src))
    close_rel(out.spatial_logits, reference["spatial_logits"], 1e-5, "logits")
    close_rel(out.duration_mu, reference["duration_mu"], 1e-5, "mu")
    close_rel(jnp.exp(out.duration_log_sigma2), reference["duration_sigma2"], 1e-5, "sigma2")
    # refuses to overwrite; --force (or its former name --overwrite) replaces
    assert main(["import-upstream", str(ckpt), "--out", str(tmp_path / "m"), "--num-heads", "4"]) == 2
    for flag in ("--force", "--overwrite"):
        assert main(["import-upstream", str(ckpt), "--out", str(tmp_path / "m"), "--num-heads", "4",
                     flag]) == 0
    card = (tmp_path / "m" / "README.md").read_text()
    assert f"Imported from `{ckpt}`" in card and "load_model(" in card


def test_import_lightning_checkpoint(tmp_path, state_dict, reference):
    # A Lightning checkpoint: 'model.'-prefixed state_dict plus hyper-parameters in an AttributeDict.
    names = ["pytorch_lightning", "pytorch_lightning.utilities", "pytorch_lightning.utilities.parsing"]
    assert not any(n in sys.modules for n in names)
    for n in names:
        sys.modules[n] = types.ModuleType(n)
    fake = sys.modules[names[-1]]
    fake.AttributeDict = type("AttributeDict", (dict,), {"__module__": fake.__name__})
    sys.modules[names[1]].parsing = fake
    sys.modules[names[0]].utilities = sys.modules[names[1]]
    try:
        ckpt = {"epoch": 3, "global_step": 120, "state_dict": _torch_state(state_dict, "model."),
                "hyper_parameters": fake.AttributeDict(hidden_dim=48, nhead=4)}
        torch.save(ckpt, tmp_path / "last.ckpt")
    finally:
        for n in names:
            del sys.modules[n]
    assert main(["import-upstream", str(tmp_path / "last.ckpt"), "--out", str(tmp_path / "m"),
                 "--num-heads", "4"]) == 0
    model, _ = serialization.load_model(tmp_path / "m")
    np.testing.assert_array_equal(model.input_proj1.kernel[...], reference["input_proj.0.weight"].T)


def test_import_rejects_bad_keys_and_unsafe_files(tmp_path, state_dict, capsys):
    bad = dict(state_dict)
    del bad["spatial_fc.bias"]
    bad["extra.weight"] = np.zeros(3, np.float32)
    bad["duration_mu.0.weight"] = np.zeros((5, 48), np.float32)
    torch.save(_torch_state(bad), tmp_path / "bad.pt")
    assert main(["import-upstream", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "m"),
                 "--num-heads", "4"]) == 2
    err = capsys.readouterr().err
    assert "extra.weight" in err and "spatial_fc.bias" in err and "duration_mu.0.weight" in err
    assert not (tmp_path / "m" / "model.safetensors").exists()

    torch.save({"w": torch.zeros(2), "obj": types.SimpleNamespace(a=1)}, tmp_path / "pickled.pt")
    from ctsearcher_jax.commands.import_upstream import read_torch_state_dict

    with pytest.raises(WeightsError, match="nothing was executed") as info:
        read_torch_state_dict(tmp_path / "pickled.pt")
    assert "\n" not in str(info.value) and "Please" not in str(info.value)  # not torch's advice
    with pytest.raises(WeightsError, match="no such file"):
        read_torch_state_dict(tmp_path / "missing.ckpt")


@pytest.mark.parametrize("poison", ["nan", "inf", "int"])
def test_import_refuses_non_finite_and_integer_weights(tmp_path, state_dict, capsys, poison):
    bad = {k: v.copy() for k, v in state_dict.items()}
    value = bad["spatial_fc.bias"]
    if poison == "int":
        bad["spatial_fc.bias"] = value.astype(np.int64)
    else:
        value[1] = float(poison)
    torch.save(_torch_state(bad), tmp_path / "bad.pt")
    assert main(["import-upstream", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "m"),
                 "--num-heads", "4"]) == 2
    err = capsys.readouterr().err
    assert "'spatial_fc.bias'" in err and ("NaN/inf" in err if poison != "int" else "int64" in err)
    assert err.count("\n") == 1 and not (tmp_path / "m").exists()


def test_save_load_round_trip_and_corruption(tmp_path):
    config = ModelConfig(d_model=24, num_heads=2, num_encoder_layers=1, num_decoder_layers=2,
                         dim_feedforward=16, dropout=0.0, feature_dim=8, grid=(2, 3, 2), max_length=5)
    model = CTSearcher(config, rngs=nnx.Rngs(3))
    serialization.save_model(tmp_path / "m", model, config)
    loaded, full = serialization.load_model(tmp_path / "m")
    assert full.model == config
    before, after = serialization.model_tensors(model), serialization.model_tensors(loaded)
    assert set(before) == set(after) and "pos_table" in before
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    x = jnp.ones((1, config.num_tokens, 8))
    np.testing.assert_array_equal(forward(model, x).spatial_logits, forward(loaded, x).spatial_logits)

    weights = tmp_path / "m" / serialization.WEIGHTS
    blob = bytearray(weights.read_bytes())
    blob[-3] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="sha256"):
        serialization.load_model(tmp_path / "m")
    with pytest.raises(CheckpointError, match="no model.safetensors here"):
        serialization.load_model(tmp_path / "nothing")


def test_loading_draws_no_parameters_and_seeds_the_dropout_streams(tmp_path, caplog):
    """load_model sets every tensor from the file without running an initialiser: an eager build
    compiled one XLA program per parameter shape (a first load of a config: dozens) and drew
    every parameter only to overwrite it. The dropout streams follow `rng_seed`."""
    # shapes no other test builds, so that nothing is in this process's compilation caches
    config = ModelConfig(d_model=36, num_heads=3, num_encoder_layers=1, num_decoder_layers=1,
                         dim_feedforward=20, dropout=0.5, feature_dim=7, grid=(2, 2, 3),
                         max_length=4)
    model = CTSearcher(config, rngs=nnx.Rngs(1))
    serialization.save_model(tmp_path / "m", model, config)
    with caplog.at_level("WARNING"), jax.log_compiles(True):
        loaded, _ = serialization.load_model(tmp_path / "m", rng_seed=5)
    compiles = [r for r in caplog.records if "Finished XLA compilation" in r.getMessage()]
    assert len(compiles) <= 3, [r.getMessage() for r in compiles]
    saved = serialization.model_tensors(model)
    for key, value in serialization.model_tensors(loaded).items():
        np.testing.assert_array_equal(value, saved[key], err_msg=key)

    x = jnp.ones((1, config.num_tokens, 7))
    train = nnx.jit(lambda model, x: model(x, deterministic=False).spatial_logits)
    again, _ = serialization.load_model(tmp_path / "m", rng_seed=5)
    other, _ = serialization.load_model(tmp_path / "m", rng_seed=6)
    np.testing.assert_array_equal(train(loaded, x), train(again, x))
    assert not np.array_equal(train(loaded, x), train(other, x))


def test_an_unfilled_variable_is_an_error_naming_it():
    config = ModelConfig(d_model=24, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                         dim_feedforward=16, feature_dim=8, grid=(2, 3, 2), max_length=5)
    model = serialization.unfilled_model(config)
    tensors = serialization.model_tensors(CTSearcher(config, rngs=nnx.Rngs(0)))
    for key, variable in serialization._saved_variables(model).items():
        if key != "pos_table":
            variable.set_value(jnp.asarray(tensors[key]))
    with pytest.raises(WeightsError, match=r"src: sets no value for \['pos_table'\]"):
        serialization.require_filled(model, "src", WeightsError)


def test_model_folder_layout_and_folders_from_before_config_json(tmp_path):
    import json

    import yaml
    from safetensors import safe_open

    from ctsearcher_jax import __version__
    from ctsearcher_jax.config import Config, to_dict

    config = Config(model=ModelConfig(d_model=16, num_heads=2, num_encoder_layers=1,
                                      num_decoder_layers=1, dim_feedforward=16, dropout=0.0,
                                      feature_dim=8, grid=(2, 2, 2), max_length=4))
    model = CTSearcher(config.model, rngs=nnx.Rngs(1))
    card = {"step": 40, "total_steps": 60, "selected_by": "scanmatch_with_duration", "value": 0.25,
            "direction": "higher is better", "metrics": {"scanmatch_with_duration": 0.25, "sed": 7.5},
            "directions": {"scanmatch_with_duration": "higher", "sed": "lower"}}
    folder = serialization.save_model(tmp_path / "m", model, config, card=card)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "config.yaml",
                                                         "model.safetensors"]
    assert json.loads((folder / "config.json").read_text()) == to_dict(config)
    assert yaml.safe_load((folder / "config.yaml").read_text()) == to_dict(config)
    with safe_open(str(folder / "model.safetensors"), framework="numpy") as f:
        meta = f.metadata()
    assert meta["format"] == serialization.FORMAT and meta["ctsearcher_jax"] == __version__
    text = (folder / "README.md").read_text()
    assert "step 40 of 60" in text and "`scanmatch_with_duration` = 0.2500" in text
    assert "| sed | 7.5000 | lower |" in text and "load_model(" in text and "d_model: 16" in text

    # config.json is what load_model reads ...
    edited = to_dict(config)
    edited["eval"]["min_length"] = 3
    (folder / "config.json").write_text(json.dumps(edited))
    assert serialization.load_model(folder)[1].eval.min_length == 3
    # ... and a folder exported before config.json existed (weights + config.yaml) still loads
    (folder / "config.json").unlink()
    (folder / "README.md").unlink()
    loaded, loaded_config = serialization.load_model(folder)
    assert loaded_config == config
    for key, value in serialization.model_tensors(model).items():
        np.testing.assert_array_equal(serialization.model_tensors(loaded)[key], value)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="config.json"):
        serialization.load_model(folder)


def test_a_config_that_does_not_describe_the_tensors_is_refused_before_building(tmp_path):
    """Issue 24 row 14 / item 7: config.json is compared with the safetensors header before
    anything is built; a huge config within the config's bounds (d_model 16384, grid 32^3: a
    2 GB PE table and GBs of weights) is refused without allocating: the factory's build is never
    called for real, and the memory this process allocates stays small. Beyond the bounds
    (d_model 65536) the config itself is refused, naming config.json and the key."""
    import json
    import re
    import tracemalloc

    from ctsearcher_jax.model import serialization as ser

    config = ModelConfig(d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                         dim_feedforward=16, dropout=0.0, feature_dim=8, grid=(2, 2, 2),
                         max_length=4)
    folder = ser.save_model(tmp_path / "m", CTSearcher(config, rngs=nnx.Rngs(1)), config)
    assert ser.expected_shapes(config) == {k: v.shape for k, v in ser.model_tensors(
        ser.load_model(folder)[0]).items()}
    data = json.loads((folder / "config.json").read_text())
    data["model"].update(d_model=65536, num_heads=8, grid=[64, 64, 64])
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"config\.json: config key 'model\.d_model': must be "
                                              r"in \[1, 16384\]"):
        ser.load_model(folder)
    data["model"].update(d_model=16384, num_heads=8, grid=[32, 32, 32])
    (folder / "config.json").write_text(json.dumps(data))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as err:
            ser.load_model(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(err.value)
    assert message.startswith(f"{folder / 'config.json'} does not describe "
                              f"{folder / 'model.safetensors'}: ")
    key, implied, held = re.search(r": (\S+): the config implies (\(.*?\)), model.safetensors "
                                   r"holds (\(.*?\))", message).groups()
    assert key == "decoder.0.cross_attn.in_proj.bias" and (implied, held) == ("(49152,)", "(48,)")
    assert "(and 42 more keys)" in message
    assert "\n" not in message and peak < 50e6, peak  # a real build would need GBs
    # a key the config does not have (another architecture's tensors): named too
    data["model"].update(d_model=16, num_heads=2, grid=[2, 2, 2], num_encoder_layers=2)
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="missing from model.safetensors: \\['encoder.1."):
        ser.load_model(folder)


def test_predict_refuses_an_absurd_model_folder_in_one_line(tmp_path, capsys):
    """Row 14 through the command: `predict --checkpoint` on a folder whose config.json claims
    d_model 16384 on a 32^3 grid: one line naming config.json, exit 2, nothing allocated."""
    import json

    import nibabel as nib

    from ctsearcher_jax.model import serialization as ser

    config = ModelConfig(d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                         dim_feedforward=16, dropout=0.0, feature_dim=192, grid=(2, 2, 2),
                         max_length=4)
    folder = ser.save_model(tmp_path / "m", CTSearcher(config, rngs=nnx.Rngs(1)), config)
    data = json.loads((folder / "config.json").read_text())
    data["model"].update(d_model=16384, grid=[32, 32, 32])
    (folder / "config.json").write_text(json.dumps(data))
    ct = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 8), np.int16), np.eye(4)), str(ct))
    assert main(["predict", str(ct), "--checkpoint", str(folder), "--out",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([e for e in err if "error:" in e]) == 1
    assert err[-1].startswith(f"ctsearcher predict: error: {folder / 'config.json'} does not "
                              "describe") and "the config implies (49152,)" in err[-1]
    assert not (tmp_path / "out").exists()
