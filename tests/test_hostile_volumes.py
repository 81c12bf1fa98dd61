"""Issue 24, rows 1, 2, 6, 8 and 9: every volume the voxel policy refuses (the two memory bombs,
NaN/inf, complex, RGB, 2D, 4D, zero- and negative-sized) is refused by every command that reads
volumes, in one line naming the file, with the same words (`data.nifti`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_inputs import BAD_VOLUMES, bad_volume_dataset, run_cli  # noqa: E402

from ctsearcher_jax import cli  # noqa: E402

ROI = 32  # encoder window edge for the runs that get past the refusals


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return bad_volume_dataset(tmp_path_factory.mktemp("bad_volumes"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, repo_root):
    from flax import nnx

    from ctsearcher_jax import config as config_lib
    from ctsearcher_jax.model.ct_searcher import CTSearcher
    from ctsearcher_jax.model.serialization import save_model

    # 32^3 encoder windows: the refusals are under test, not the encoder (it has parity tests)
    cfg = config_lib.load(repo_root / "configs" / "tiny.yaml", [f"extract.roi={ROI}"])
    out = tmp_path_factory.mktemp("model") / "model"
    save_model(out, CTSearcher(cfg.model, rngs=nnx.Rngs(0)), cfg)
    return out


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"ctsearcher {command}: error: "), err
    return err[-1]


def test_validate_data_reads_every_volume_and_reports_each(dataset, capsys):
    assert cli.main(["validate-data", str(dataset)]) == 2
    err = capsys.readouterr().err
    for name, (_, words) in BAD_VOLUMES.items():
        line = [x for x in err.splitlines() if f"{name}.nii.gz: " in x]
        assert line and words in line[0], (name, err)
    assert "synth_0000.nii.gz" not in err  # the good CT is not a problem
    # headers only: what the header tells is still refused, the voxels are not read
    assert cli.main(["validate-data", str(dataset), "--headers-only"]) == 2
    err = capsys.readouterr().err
    assert "nan_two.nii.gz" not in err and "header_bomb.nii.gz: its header claims" in err


@pytest.mark.parametrize("command", ["view", "visualize"])
def test_view_and_visualize_refuse_each_in_one_line(dataset, command, tmp_path, capsys):
    for name, (_, words) in BAD_VOLUMES.items():
        out = tmp_path / name
        assert cli.main([command, "--data", str(dataset), "--name", name, "--out", str(out)]) == 2
        line = _one_line_error(capsys, command)
        assert f"{dataset / 'cts' / name}.nii.gz: " in line and words in line, line
        assert not out.exists() or not any(out.iterdir())  # nothing drawn
    # the good CT is drawn, and --max-voxels applies: its 2,048 voxels over a limit of 2,000
    assert cli.main([command, "--data", str(dataset), "--name", "synth_0000", "--out",
                     str(tmp_path / "good")]) == 0
    assert cli.main([command, "--data", str(dataset), "--name", "synth_0000", "--out",
                     str(tmp_path / "small"), "--max-voxels", "2000"]) == 2
    assert "more than the limit of 2,000 voxels" in _one_line_error(capsys, command)


@pytest.mark.slow
def test_extract_and_predict_report_each_and_go_on(dataset, model_dir, tmp_path, capsys):
    """Extract: every bad file FAILED with its words, exit 1, the good CT extracted. Predict over
    the same folder: the same refusals, the good CT predicted, exit 1."""
    cts = dataset / "cts"
    argv = ["extract", "--cts", str(cts), "--weights", "random", "--feature-size", "12",
            "--set", f"extract.roi={ROI}", "--out", str(tmp_path / "features"), "--no-progress",
            "--workers", "2"]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert "extracted 1," in out and "memory: at most" in out
    for name, (_, words) in BAD_VOLUMES.items():
        line = [x for x in out.splitlines() if x.startswith(f"FAILED {cts / name}.nii.gz: ")]
        assert line and words in line[0], (name, out)
    argv = ["predict", str(cts), "--checkpoint", str(model_dir), "--out", str(tmp_path / "pred"),
            "--features", str(tmp_path / "features"), "--swin-weights", "random",
            "--figure-cts", "1"]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert "scanpaths for 1 CT(s)" in out
    for name, (_, words) in BAD_VOLUMES.items():
        line = [x for x in out.splitlines() if x.startswith(f"FAILED {cts / name}.nii.gz: ")]
        assert line and words in line[0], (name, out)


@pytest.mark.cli
@pytest.mark.slow
@pytest.mark.parametrize("bomb", ["header_bomb", "inflate_bomb"])
def test_bombs_are_refused_small_by_every_command(dataset, model_dir, tmp_path, bomb):
    """The issue's bar, each command in its own process: one line naming the bomb, exit 2 (1
    for extract's batch), and the process's peak RSS under 500 MB (the wall time is printed:
    tests do not assert on time)."""
    folder = tmp_path / "cts"
    folder.mkdir()
    (folder / f"{bomb}.nii.gz").write_bytes((dataset / "cts" / f"{bomb}.nii.gz").read_bytes())
    runs = {
        "validate-data": (["validate-data", str(dataset)], 2),
        "extract": (["extract", "--cts", str(folder), "--weights", "random", "--out",
                     str(tmp_path / "f"), "--no-progress"], 1),
        "predict": (["predict", str(folder), "--checkpoint", str(model_dir), "--out",
                     str(tmp_path / "p"), "--swin-weights", "random"], 2),
        "visualize": (["visualize", "--data", str(dataset), "--name", bomb, "--out",
                       str(tmp_path / "v")], 2),
        "view": (["view", "--data", str(dataset), "--name", bomb, "--out", str(tmp_path / "w")], 2),
    }
    for command, (argv, code) in runs.items():
        rc, out, err, seconds, rss_mb = run_cli(*argv)
        print(f"{command} {bomb}: exit {rc}, {seconds:.1f} s, peak RSS {rss_mb:.0f} MB")
        assert rc == code, (command, out, err)
        assert f"{bomb}.nii.gz: " in out + err and "Traceback" not in err
        assert rss_mb < 500, (command, rss_mb)
