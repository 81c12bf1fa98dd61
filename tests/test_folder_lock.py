"""Issue 24.5: one writer per output folder (`runtime/folder_lock.py`). A second process is refused
in one line naming the folder and the holder's PID (exit 2) by every command that writes a run
folder; a killed holder leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ctsearcher_jax import cli
from ctsearcher_jax.errors import OutputError
from ctsearcher_jax.runtime import folder_lock

HOLD = ("import sys, time\n"
        "from ctsearcher_jax.runtime.folder_lock import acquire\n"
        "acquire(sys.argv[1], command=sys.argv[2])\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n")


@pytest.fixture
def holder():
    """Start a process holding the lock of a folder: `holder(folder, command) -> Popen`."""
    procs = []

    def start(folder: Path, command: str = "train") -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), command],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_second_process_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path, holder):
    folder = tmp_path / "run"
    proc = holder(folder, "train")
    with pytest.raises(OutputError) as err:
        folder_lock.acquire(folder, command="train", flag="--workdir")
    message = str(err.value)
    assert message.startswith(f"--workdir {folder}: another ctsearcher process is writing")
    assert f"PID {proc.pid}" in message and "`ctsearcher train`" in message
    assert "\n" not in message
    os.kill(proc.pid, signal.SIGKILL)  # no clean-up runs: the kernel releases the flock
    proc.wait()
    assert (folder / folder_lock.LOCK_NAME).exists()  # the file stays, unlocked
    lock = folder_lock.acquire(folder, command="extract")
    assert folder_lock.holder(folder / folder_lock.LOCK_NAME)["pid"] == os.getpid()
    lock.release()
    assert not (folder / folder_lock.LOCK_NAME).exists()  # a normal end removes it


def test_one_process_may_lock_its_own_folder_twice(tmp_path):
    with folder_lock.locked(tmp_path / "a", command="predict"):
        with folder_lock.locked(tmp_path / "a", command="predict", flag="--features"):
            pass
        assert (tmp_path / "a" / folder_lock.LOCK_NAME).exists()  # still held by the outer one
    assert not (tmp_path / "a" / folder_lock.LOCK_NAME).exists()
    with folder_lock.locked(tmp_path / "b", command="train", writer=False):
        assert not (tmp_path / "b").exists()  # a multi-host process that does not write
    # folders the lock created are removed when the command leaves them empty (a failed start)
    with folder_lock.locked(tmp_path / "c" / "d", command="predict"):
        assert (tmp_path / "c" / "d").is_dir()
    assert not (tmp_path / "c").exists()
    with folder_lock.locked(tmp_path / "e", command="predict"):
        (tmp_path / "e" / "predictions.json").write_text("[]")
    assert (tmp_path / "e" / "predictions.json").exists()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, repo_root):
    """A tiny dataset and model for the commands' refusals (none of them gets to run)."""
    from flax import nnx

    from ctsearcher_jax import config as config_lib
    from ctsearcher_jax.data.synthetic import synthesize
    from ctsearcher_jax.model.ct_searcher import CTSearcher
    from ctsearcher_jax.model.serialization import save_model

    root = tmp_path_factory.mktemp("lock_inputs")
    synthesize(root / "data", num_cts=1, num_readers=1, seed=0, shape=(16, 16, 8),
               min_fixations=4, max_fixations=8)
    cfg = config_lib.load(repo_root / "configs" / "tiny.yaml")
    save_model(root / "model", CTSearcher(cfg.model, rngs=nnx.Rngs(0)), cfg)
    return root


def test_every_run_folder_command_refuses_a_held_folder(inputs, tmp_path, holder, capsys):
    data, model = inputs / "data", inputs / "model"
    runs = {
        "train": ["train", "--config", "tiny", "--workdir", "{F}", "--set",
                  f"data.data_dir={data}"],
        "finetune": ["finetune", "--from", str(model), "--workdir", "{F}"],
        "extract": ["extract", "--cts", str(data / "cts"), "--weights", "random", "--out", "{F}"],
        "predict": ["predict", str(data / "cts"), "--checkpoint", str(model), "--out", "{F}"],
        "predict --features": ["predict", str(data / "cts"), "--checkpoint", str(model), "--out",
                               str(tmp_path / "free"), "--features", "{F}", "--swin-weights",
                               "random"],
        "demo": ["demo", "--out", "{F}"],
    }
    for label, argv in runs.items():
        folder = tmp_path / label.replace(" ", "_")
        proc = holder(folder, "other")
        before = sorted(p.name for p in folder.iterdir())
        assert cli.main([a.replace("{F}", str(folder)) for a in argv]) == 2, label
        err = capsys.readouterr().err.strip().splitlines()[-1]
        command = label.split()[0]
        assert err.startswith(f"ctsearcher {command}: error: ") and str(folder) in err, err
        assert f"PID {proc.pid}" in err and "another ctsearcher process" in err, err
        assert sorted(p.name for p in folder.iterdir()) == before  # nothing written there
