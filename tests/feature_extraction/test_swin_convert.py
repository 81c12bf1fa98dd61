"""MONAI checkpoint conversion: key/layout mapping, portable file round trip, and bad weights."""

from __future__ import annotations

import hashlib
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="conversion tests need the torch extra")
pytest.importorskip("monai")

from ctsearcher_jax import cli  # noqa: E402
from ctsearcher_jax.errors import WeightsError  # noqa: E402
from ctsearcher_jax.io import file_sha256  # noqa: E402
from feature_extraction.convert_monai import (  # noqa: E402
    convert_state_dict,
    read_torch_checkpoint,
    to_flax_layout,
    to_torch_layout,
    torch_key,
)
from feature_extraction.weights import load_model, load_weights, save_weights, sidecar_path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # tests/ has no packages: import the helper by path
from swin_helpers import monai_model, state_dict_numpy  # noqa: E402

pytestmark = pytest.mark.torch
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def monai12():
    return monai_model(12, seed=3)


@pytest.fixture(scope="module")
def sd12(monai12) -> dict[str, np.ndarray]:
    return state_dict_numpy(monai12)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, monai12) -> Path:
    """A DDP-style checkpoint: tensors under `state_dict` with `module.` prefixes, plus an epoch."""
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    wrapped = {"epoch": 7, "state_dict": {f"module.{k}": v for k, v in monai12.state_dict().items()}}
    torch.save(wrapped, path)
    return path


def test_every_key_maps_and_layouts_invert(sd12):
    config, parts, params = convert_state_dict(sd12, "fixed")
    assert parts == "full" and config.feature_size == 12 and config.out_channels == 3
    assert config.merging_order == "fixed"
    buffers = [k for k in sd12 if k.endswith("relative_position_index")]
    assert len(params) + len(buffers) == len(sd12) == 159  # as the BTCV bundle (151 + 8 buffers)
    for name, value in params.items():
        key = torch_key(name)
        np.testing.assert_array_equal(to_torch_layout(name, value), sd12[key])
        np.testing.assert_array_equal(to_flax_layout(name, sd12[key]), value)


def test_cli_convert_roundtrip_bit_identical(checkpoint, sd12, tmp_path, capsys):
    out = tmp_path / "w.safetensors"
    assert cli.main(["convert-monai", str(checkpoint), "--out", str(out),
                     "--merging-order", "fixed"]) == 0
    assert "sha256" in capsys.readouterr().out
    config, parts, params, meta = load_weights(out)
    _, _, expected = convert_state_dict(sd12, "fixed")
    assert params.keys() == expected.keys()
    for k in expected:
        assert params[k].dtype == np.float32
        assert params[k].tobytes() == expected[k].tobytes(), k
    assert parts == "full" and config.merging_order == "fixed" and config.feature_size == 12
    assert meta["source_sha256"] == file_sha256(checkpoint)
    assert sidecar_path(out).read_text().split()[0] == hashlib.sha256(out.read_bytes()).hexdigest()
    model = load_model(out, parts="encoder")
    from flax import nnx
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    assert {".".join(map(str, p)) for p, _ in flat} == {k for k in expected
                                                        if k.startswith(("swinViT.", "encoder10."))}
    for p, v in flat:
        assert np.asarray(v[...]).tobytes() == expected[".".join(map(str, p))].tobytes()


def test_encoder_only_file(checkpoint, tmp_path):
    out = tmp_path / "enc.safetensors"
    assert cli.main(["convert-monai", str(checkpoint), "--out", str(out), "--parts", "encoder"]) == 0
    config, parts, params, _ = load_weights(out)
    assert parts == "encoder" and config.merging_order == "legacy"
    assert all(k.startswith(("swinViT.", "encoder10.")) for k in params)
    with pytest.raises(WeightsError, match="holds only parts='encoder'"):
        load_model(out, parts="full")


def test_self_supervised_swinvit_checkpoint(sd12, tmp_path):
    # The SSL layout read by MONAI's `load_from`: module.<SwinViT key>, mlp.fc1/fc2, and a head.
    ssl = {}
    for k, v in sd12.items():
        if k.startswith("swinViT."):
            k = k[len("swinViT."):].replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2.")
            ssl[f"module.{k}"] = torch.from_numpy(v)
    ssl["module.rotation_head.weight"] = torch.zeros(4, 192)
    path = tmp_path / "model_swinvit.pt"
    torch.save({"state_dict": ssl}, path)
    out = tmp_path / "ssl.safetensors"
    with pytest.raises(WeightsError, match="rotation_head.weight"):
        cli_run(["convert-monai", str(path), "--out", str(out)])
    assert cli.main(["convert-monai", str(path), "--out", str(out), "--ignore", "rotation_head"]) == 0
    _, parts, params, _ = load_weights(out)
    _, _, full = convert_state_dict(sd12, "legacy")
    assert parts == "swinvit"
    assert params.keys() == {k for k in full if k.startswith("swinViT.")}
    assert all(params[k].tobytes() == full[k].tobytes() for k in params)
    model = load_model(out)
    with pytest.raises(ValueError, match="no encoder10"):
        model.encode(np.zeros((1, 32, 32, 32, 1), np.float32))


def cli_run(argv):
    """Run a command's `run` directly so its WeightsError propagates (main() would print it)."""
    parser = cli.build_parser()
    args = parser.parse_args(argv)
    return args._run(args)


def test_missing_and_unknown_keys_listed(sd12):
    sd = dict(sd12)
    del sd["swinViT.layers2.0.blocks.1.attn.proj.bias"]
    sd["decoder9.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError) as err:
        convert_state_dict(sd, "fixed")
    assert "missing 1 keys: swinViT.layers2.0.blocks.1.attn.proj.bias" in str(err.value)
    assert "unknown 1 keys: decoder9.weight" in str(err.value)


def test_ignore_hint_works_for_keys_that_look_like_other_parts(sd12):
    """Issue 16.11: ignored keys are dropped before the parts are detected."""
    encoder_only = {k: v for k, v in sd12.items() if k.startswith(("swinViT.", "encoder10."))}
    encoder_only["decoder99.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError, match="--ignore PREFIX"):
        convert_state_dict(encoder_only, "fixed")
    _, parts, params = convert_state_dict(encoder_only, "fixed", ignore=["decoder99"])
    assert parts == "encoder" and not any(k.startswith("decoder") for k in params)


@pytest.mark.parametrize("poison", ["nan", "inf", "int"])
def test_non_finite_and_integer_weights_refused(sd12, poison):
    """Issue 16.6: such weights pass every key/shape check but make the encoder useless."""
    sd = dict(sd12)
    key = "encoder10.layer.conv2.conv.weight"
    value = sd[key].copy()
    if poison == "int":
        value = value.astype(np.int64)
    else:
        value.flat[7] = float(poison)
    sd[key] = value
    with pytest.raises(WeightsError, match=rf"{key}'.*(NaN/inf|int64)"):
        convert_state_dict(sd, "fixed")


def test_relative_position_index_checked(sd12):
    sd = dict(sd12)
    key = "swinViT.layers3.0.blocks.0.attn.relative_position_index"
    sd[key] = sd[key][::-1].copy()
    with pytest.raises(WeightsError, match="relative_position_index differs"):
        convert_state_dict(sd, "fixed")


def test_shape_checked(sd12):
    sd = dict(sd12)
    sd["encoder10.layer.conv2.conv.weight"] = np.zeros((192, 192, 3, 3, 2), np.float32)
    with pytest.raises(WeightsError, match="encoder10.layer.conv2.conv.weight has shape"):
        convert_state_dict(sd, "fixed")


def test_truncated_checkpoint(checkpoint, tmp_path):
    bad = tmp_path / "cut.pt"
    bad.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated"):
        read_torch_checkpoint(bad)
    assert cli.main(["convert-monai", str(bad), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert not (tmp_path / "x.safetensors").exists()


def test_other_architecture(tmp_path):
    from monai.networks.nets import UNet

    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
    path = tmp_path / "unet.pt"
    torch.save(net.state_dict(), path)
    with pytest.raises(WeightsError, match="not a Swin UNETR checkpoint"):
        cli_run(["convert-monai", str(path), "--out", str(tmp_path / "x.safetensors")])


class _Payload:
    """Unpickling this would create `marker` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle"])
def test_malicious_pickle_is_not_executed(tmp_path, container):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    obj = {"state_dict": {"swinViT.patch_embed.proj.weight": torch.zeros(1), "x": _Payload(marker)}}
    if container == "torch_zip":
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    assert not marker.exists()
    with pytest.raises(WeightsError, match="nothing was executed"):
        read_torch_checkpoint(path)
    assert not marker.exists()


def test_without_torch_names_the_extra(checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    from ctsearcher_jax.installation import install_hint

    hint = install_hint("torch")  # as this copy was installed: a checkout, a wheel, an index
    assert "torch" in hint
    with pytest.raises(WeightsError, match=re.escape(hint)):
        read_torch_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, sd12) -> Path:
    out = tmp_path_factory.mktemp("w") / "w.safetensors"
    config, parts, params = convert_state_dict(sd12, "fixed", "encoder")
    save_weights(out, config, parts, params)
    return out


def test_corrupt_weights_file(weights_file, tmp_path):
    data = bytearray(weights_file.read_bytes())
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_weights(cut)
    flipped = tmp_path / "flip.safetensors"
    data[-5] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="params_sha256"):
        load_weights(flipped)
    sidecar_path(flipped).write_text(sidecar_path(weights_file).read_text())
    with pytest.raises(WeightsError, match="differs from"):
        load_weights(flipped)


def test_weights_file_of_another_kind(tmp_path):
    from safetensors.numpy import save_file

    other = tmp_path / "other.safetensors"
    save_file({"a": np.zeros(2, np.float32)}, str(other))
    with pytest.raises(WeightsError, match="convert-monai"):
        load_weights(other)


def test_encode_checks_layout_and_size(weights_file):
    model = load_model(weights_file)
    with pytest.raises(ValueError, match="multiples of 32"):
        model.encode(np.zeros((1, 48, 64, 64, 1), np.float32))
    with pytest.raises(ValueError, match="from_torch_layout"):
        model.encode(np.zeros((1, 1, 64, 64, 64), np.float32))
    with pytest.raises(ValueError, match="no decoder"):
        model(np.zeros((1, 64, 64, 64, 1), np.float32))
