"""The `ctsearcher` console script as a user runs it: subprocesses, output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctsearcher_jax.cli import COMMANDS

GOOD = {"name": "ct_a", "subject": 1, "task": "read", "X": [1.0, 256.5], "Y": [10.0, 20.0],
        "Z": [1.0, 2.0], "T": [0.2, 0.3], "length": 2, "split": "train", "report": "normal"}


def ctsearcher(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "ctsearcher_jax.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.mark.cli
def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "ctsearcher"
    assert exe.exists()
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for name in COMMANDS:
        assert name in out.stdout


@pytest.mark.cli
def test_every_command_has_help(cli_run):
    for name in COMMANDS:
        out = cli_run(name, "--help")
        assert out.returncode == 0, (name, out.stderr)
        assert "usage: ctsearcher " + name in out.stdout


@pytest.mark.cli
def test_unknown_command_is_a_usage_error(cli_run):
    out = cli_run("no-such-command")
    assert out.returncode == 2 and "invalid choice" in out.stderr


@pytest.mark.cli
def test_validate_data_clean(tmp_path):
    (tmp_path / "data_simplified_split_matched_pt.json").write_text(
        json.dumps([GOOD, dict(GOOD, subject=2, split="train")]))
    out = ctsearcher("validate-data", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "CTs: 1   scanpaths: 2" in out.stdout
    assert "readers per CT: min 2" in out.stdout and "OK" in out.stdout


@pytest.mark.cli
def test_validate_data_broken_prints_every_problem_and_exits_2(tmp_path):
    bad = [GOOD, dict(GOOD, subject=2, T=[0.2, -0.1]), dict(GOOD, subject=3, X=[1.0, 900.0]),
           dict(GOOD, name="ct_b", subject=1, split="nope")]
    path = tmp_path / "data_simplified_split_matched_pt.json"
    path.write_text(json.dumps(bad))
    out = ctsearcher("validate-data", tmp_path)
    assert out.returncode == 2
    assert "3 problem(s)" in out.stderr
    assert f"{path}: record 1, CT 'ct_a': field 'T' must be > 0" in out.stderr
    assert "record 2, CT 'ct_a': field 'X' outside the frame" in out.stderr
    assert "record 3, CT 'ct_b': field 'split'" in out.stderr


@pytest.mark.cli
def test_user_errors_are_one_line_and_debug_shows_traceback(tmp_path):
    out = ctsearcher("validate-data", tmp_path / "missing")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert out.stderr.startswith("ctsearcher validate-data: error:") and "no such file" in out.stderr
    out = ctsearcher("--debug", "validate-data", tmp_path / "missing")
    assert out.returncode == 2 and "Traceback" in out.stderr


@pytest.mark.cli
def test_validate_data_checks_volumes(tmp_path):
    (tmp_path / "cts").mkdir()
    (tmp_path / "data_simplified_split_matched_pt.json").write_text(json.dumps([GOOD]))
    (tmp_path / "cts" / "broken.nii.gz").write_bytes(b"not a nifti")
    out = ctsearcher("validate-data", tmp_path)
    assert out.returncode == 2
    assert "broken.nii.gz: not a readable NIfTI" in out.stderr
    assert "CT 'ct_a'" in out.stderr and "has no volume" in out.stderr


@pytest.mark.cli
def test_weight_converters_refuse_missing_and_bad_files(tmp_path, cli_run):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    for command in ("convert-monai", "import-upstream"):
        out = cli_run(command, tmp_path / "missing.pt", "--out", tmp_path / "o")
        assert out.returncode == 2, (command, out.stderr)
        assert "missing.pt" in out.stderr and out.stderr.strip().count("\n") == 0
        out = cli_run(command, bad, "--out", tmp_path / "o")
        assert out.returncode == 2, (command, out.stderr)
        assert "bad.pt" in out.stderr
    assert not (tmp_path / "o").exists()


def test_verbosity_flags_set_the_log_level_before_or_after_the_command(capsys):
    import logging

    from ctsearcher_jax import cli, logs

    parser = cli.build_parser()
    for argv, level in ((["report", "--workdir", "w"], logging.INFO),
                        (["-q", "report", "--workdir", "w"], logging.WARNING),
                        (["report", "-qq", "--workdir", "w"], logging.ERROR),
                        (["-v", "report", "--workdir", "w"], logging.DEBUG)):
        a = parser.parse_args(argv)
        logs.setup(a.verbose + a.sub_verbose - a.quiet - a.sub_quiet)
        assert logging.getLogger("ctsearcher_jax").level == level, argv
        assert logging.getLogger("feature_extraction").level == level, argv
    logs.setup(-1)
    log = logging.getLogger("ctsearcher_jax.test")
    log.info("hidden")
    log.warning("shown")
    logs.set_process(1, 4)
    log.error("from host one")
    logs.set_process(0, 1)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "hidden" not in err[0]
    assert err[0].endswith(" warning: shown") and err[1].endswith(" [p1/4] error: from host one")
    logs.setup(0)


@pytest.mark.cli
def test_validate_data_warns_about_zero_based_coordinates(tmp_path):
    zero = [GOOD, dict(GOOD, subject=2, X=[0.0, 5.0], Z=[0.0, 1.0])]
    (tmp_path / "data_simplified_split_matched_pt.json").write_text(json.dumps(zero))
    out = ctsearcher("validate-data", tmp_path)
    assert out.returncode == 0, out.stderr  # a warning, not an error
    assert "1 warning(s):" in out.stderr and "record 1, CT 'ct_a': coordinates below 1 (X 1, Z 1" \
        in out.stderr and "OK: no problems found" in out.stdout
    negative = [GOOD, dict(GOOD, subject=2, Z=[-1.0, 1.0])]
    (tmp_path / "data_simplified_split_matched_pt.json").write_text(json.dumps(negative))
    out = ctsearcher("validate-data", tmp_path)
    assert out.returncode == 2 and "record 1, CT 'ct_a': field 'Z' outside the frame [0, 512]" \
        in out.stderr
