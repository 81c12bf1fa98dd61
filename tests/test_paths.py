"""Issue 16: record names never escape their folders; outputs never replace inputs; hostile JSON
and write errors are one-line errors naming the file."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ctsearcher_jax import cli, paths
from ctsearcher_jax.data import schema
from ctsearcher_jax.errors import DataError, OutputError
from ctsearcher_jax.io import atomic_write_json, read_json

GOOD = {"name": "ct_a", "subject": 1, "task": "read", "X": [1.0, 256.5], "Y": [10.0, 20.0],
        "Z": [1.0, 2.0], "T": [0.2, 0.3], "length": 2, "split": "train", "report": "normal"}
HOSTILE_NAMES = ["../../../../x", "/abs/x", "a/b", "a\\b", "..", ".", ".hidden", "a\x00b",
                 "n" * 300]


def dataset(tmp_path: Path, name: str) -> Path:
    rec = copy.deepcopy(GOOD)
    rec["name"] = name
    path = tmp_path / schema.DATASET_JSON
    path.write_text(json.dumps([rec]))
    return path


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_record_names_that_are_not_plain_file_names_are_refused(tmp_path, name):
    assert paths.name_problem(name) is not None
    with pytest.raises(DataError, match=r"record 0.*field 'name'"):
        schema.load_dataset(dataset(tmp_path, name))
    with pytest.raises(DataError, match="name"):
        paths.child_path(tmp_path, name, ".npy")


def test_plain_names_pass():
    for name in ("ct_0001", "a.b", "Patient 12 (arterial)", "ü-ct"):
        assert paths.name_problem(name) is None
        assert paths.child_path("/f", name, ".npy") == Path(f"/f/{name}.npy")


def test_every_name_to_path_site_refuses_traversal(tmp_path):
    """Feature reads, extraction outputs, figures, manifests: each refuses a crafted name."""
    from ctsearcher_jax.data import manifest as mf
    from ctsearcher_jax.data.features import load_tokens
    from ctsearcher_jax.viz import render_ct_figures
    from feature_extraction.extract import output_paths

    secret = tmp_path / "secret.npy"
    np.save(secret, np.zeros((1, 1, 1, 1), np.float32))
    (tmp_path / "features").mkdir()
    with pytest.raises(DataError, match="path separator"):
        load_tokens(tmp_path / "features", "../secret", (1, 1, 1))
    with pytest.raises(DataError, match="path separator"):
        output_paths(tmp_path / "features", "../../x")
    sp = schema.Scanpath("ct", 1, None, *(np.ones(2) for _ in range(4)))
    with pytest.raises(DataError, match="path separator"):
        render_ct_figures(tmp_path / "missing.nii.gz", [sp], None, tmp_path / "figs",
                          name="../../escape", figures=["drilling"])
    assert not (tmp_path / "figs").exists()
    mf.write_manifest(tmp_path / "m" / "manifest.json", {"../x": {}})
    with pytest.raises(DataError, match="not a manifest this tool writes"):
        mf.read_manifest(tmp_path / "m")
    entry = {"outputs": {"dec4": "../secret.npy"}, "channels": 1, "grid_shape": [1, 1, 1]}
    assert "path separator" in mf.outputs_intact(entry, tmp_path / "features")


def test_validate_data_lists_bad_names(tmp_path, capsys):
    recs = [dict(GOOD, name="../../x"), dict(GOOD, name="/etc/x", subject=2), GOOD]
    (tmp_path / schema.DATASET_JSON).write_text(json.dumps(recs))
    assert cli.main(["validate-data", str(tmp_path), "--no-volumes"]) == 2
    err = capsys.readouterr().err
    assert "record 0, CT '../../x': field 'name' contains a path separator" in err
    assert "record 1, CT '/etc/x': field 'name'" in err


# ----------------------------------------------------------------------------- hostile JSON

HOSTILE_JSON = {
    "huge_int": '[{"name": "ct_a", "subject": 1, "X": [1' + "0" * 400 + '], "Y": [1], "Z": [1], '
                '"T": [1], "length": 1, "split": "train"}]',
    "5000_digits": '[{"name": "ct_a", "subject": 1, "X": [' + "7" * 5000 + '], "Y": [1], "Z": [1], '
                   '"T": [1], "length": 1, "split": "train"}]',
    "deep": "[" * 100_000 + "]" * 100_000,
    "invalid": '[{"name": ',
    "latin1": b'["\xe9"]',
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_JSON))
def test_hostile_json_is_a_one_line_data_error(tmp_path, kind):
    text = HOSTILE_JSON[kind]
    path = tmp_path / schema.DATASET_JSON
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataError) as info:
        schema.load_dataset(tmp_path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg and len(msg) < 400
    if kind in ("huge_int", "5000_digits"):
        assert "record 0" in msg and "field 'X'" in msg and "non-finite" in msg


def test_every_json_reader_uses_the_hostile_input_reader(tmp_path):
    """Predictions, manifests, evaluate reports, metrics logs: one line, file named."""
    from ctsearcher_jax.data import manifest as mf
    from ctsearcher_jax.report import read_evaluations, read_metrics_log

    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "feat").mkdir()
    (tmp_path / "feat" / "manifest.json").write_text(deep)
    with pytest.raises(DataError, match=r"manifest.json: JSON nested too deeply"):
        mf.read_manifest(tmp_path / "feat")
    (tmp_path / "pred.json").write_text(deep)
    with pytest.raises(DataError, match=r"pred.json: JSON nested too deeply"):
        schema.load_records(tmp_path / "pred.json", require_split=False)
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "model.json").write_text(deep)
    with pytest.raises(DataError, match=r"model.json"):
        read_evaluations(tmp_path / "ev")
    (tmp_path / "metrics.jsonl").write_text(deep + "\n" + '{"step": 1, "loss": 1e999}\n')
    assert read_metrics_log(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": float("inf")}]
    with pytest.raises(DataError, match="is a folder"):
        read_json(tmp_path / "feat")


def test_config_files_with_hostile_yaml_are_config_errors(tmp_path):
    from ctsearcher_jax.config import load
    from ctsearcher_jax.errors import ConfigError

    bad = tmp_path / "c.yaml"
    bad.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="c.yaml"):
        load(bad)
    bad.write_text("train:\n  epochs: 1" + "0" * 5000 + "\n")
    with pytest.raises(ConfigError, match="c.yaml"):
        load(bad)


# ----------------------------------------------------------------------------- outputs

def test_output_checks(tmp_path):
    src = tmp_path / "in.json"
    src.write_text("[]")
    link = tmp_path / "link.json"
    link.symlink_to(src)
    for out in (src, link, tmp_path / "." / "in.json"):
        with pytest.raises(OutputError, match="is the input"):
            paths.check_output_file(out, inputs=[src])
    with pytest.raises(OutputError, match="is a folder"):
        paths.check_output_file(tmp_path, inputs=[src])
    with pytest.raises(OutputError, match="is a file, not a folder"):
        paths.check_output_file(src / "x" / "r.json")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        paths.check_output_dir(src)
    assert paths.check_output_file(tmp_path / "new" / "deeper" / "r.json", inputs=[src])
    assert not (tmp_path / "new").exists()  # a check creates nothing


def test_write_errors_are_one_line_and_keep_the_old_file(tmp_path, monkeypatch):
    import errno

    target = tmp_path / "r.json"
    atomic_write_json(target, {"old": 1})

    def full(fd, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match=r"r.json: cannot write \(No space left on device\); "
                                          "free some space"):
        atomic_write_json(target, {"new": 2})
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left


def _one_line_error(capsys, argv, *words):
    assert cli.main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0, err
    for w in words:
        assert w in err, (argv, err)
    return err


def test_every_command_checks_its_outputs_before_working(tmp_path, capsys, monkeypatch):
    """Issue 16.3 + 16.8: an output over an input, a file where a folder belongs (and the
    reverse), an unwritable folder: one line, exit 2, before any work, inputs untouched."""
    recs = [dict(GOOD, split="test"), dict(GOOD, name="ct_b")]
    gt = tmp_path / "data" / schema.DATASET_JSON
    gt.parent.mkdir()
    gt.write_text(json.dumps(recs))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([{k: GOOD[k] for k in ("name", "subject", "X", "Y", "Z", "T")}]))
    before = {p: p.read_bytes() for p in (gt, pred)}
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes(b"not read")

    # outputs that are inputs (also through a link)
    link = tmp_path / "link.json"
    link.symlink_to(pred)
    for out in (pred, link):
        _one_line_error(capsys, ["evaluate", "--pred", str(pred), "--data", str(gt.parent),
                                 "--out", str(out)], "is the input")
    _one_line_error(capsys, ["evaluate", "--pred", str(pred), "--data", str(gt.parent),
                             "--out", str(gt)], "is the input")
    _one_line_error(capsys, ["baselines", "--data", str(gt.parent), "--out", str(gt),
                             "--baseline", "uniform"], "is the input")
    _one_line_error(capsys, ["convert-monai", str(ct), "--out", str(ct)], "is the input")
    assert {p: p.read_bytes() for p in (gt, pred)} == before

    # a folder where a file belongs, a file where a folder belongs
    _one_line_error(capsys, ["evaluate", "--pred", str(pred), "--data", str(gt.parent),
                             "--out", str(tmp_path)], "is a folder")
    _one_line_error(capsys, ["evaluate", "--pred", str(pred), "--data", str(gt.parent),
                             "--out", str(a_file / "r.json")], "is a file, not a folder")
    for argv in (["extract", "--ct-dir", str(tmp_path), "--swin-weights", "random", "--out", str(a_file)],
                 ["visualize", "--data", str(gt.parent), "--name", "ct_a", "--out", str(a_file)],
                 ["predict", str(ct), "--model", str(tmp_path), "--out", str(a_file)],
                 ["baselines", "--data", str(gt.parent), "--out", str(a_file)],
                 ["import-upstream", str(ct), "--out", str(a_file)],
                 ["synth", "--out", str(a_file)],
                 ["demo", "--out", str(a_file)],
                 ["train", "--config", "tiny", "--workdir", str(a_file)],
                 ["report", "--workdir", str(a_file)]):
        _one_line_error(capsys, argv, str(a_file), "is a file, not a folder")

    # an unwritable folder (simulated: the tests may run as root, for whom chmod does not bite)
    locked = tmp_path / "locked"
    locked.mkdir()
    real = paths.tempfile.mkstemp

    def refuse(*a, dir=None, **k):
        if Path(dir) == locked:
            raise PermissionError(13, "Permission denied")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(paths.tempfile, "mkstemp", refuse)
    _one_line_error(capsys, ["extract", "--ct-dir", str(tmp_path), "--swin-weights", "random",
                             "--out", str(locked / "features")], "cannot write in", "Permission")


def test_visualize_bounds_dpi_and_warns_about_fixations_outside_the_ct(tmp_path, capsys):
    """Issue 16.11: --dpi 100000 is refused; Z beyond the CT's slices is warned about."""
    from ctsearcher_jax.commands.visualize import warn_outside_volume

    _one_line_error(capsys, ["visualize", "--data", str(tmp_path), "--name", "x", "--out",
                             str(tmp_path / "o"), "--dpi", "100000"], "--dpi 100000")
    sp = schema.Scanpath("ct", 1, None, np.array([5.0, 600.0]), np.array([5.0, 5.0]),
                         np.array([3.0, 10000.0]), np.array([0.2, 0.3]))
    assert warn_outside_volume("ct", [], [sp], 48, "gt.json", "pred.json") == 2
    err = capsys.readouterr().err
    assert "1 fixation(s) of pred.json have Z outside the CT's 48 slices" in err
    assert "1 X/Y coordinate(s) of pred.json lie outside" in err


def test_a_2d_volume_is_not_told_to_split_a_4d_series(tmp_path):
    import nibabel as nib

    from feature_extraction.preprocess import load_volume

    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.int16), np.eye(4)), str(tmp_path / "s.nii.gz"))
    with pytest.raises(DataError, match="a single slice or a projection is not a CT") as info:
        load_volume(tmp_path / "s.nii.gz")
    assert "4D" not in str(info.value)
