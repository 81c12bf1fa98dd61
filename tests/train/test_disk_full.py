"""Issue 16.8: a checkpoint write that fails (disk full) is one line, and the last committed
checkpoint stays intact: the same command resumes from it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml

# Runs `ctsearcher train` with Orbax's JSON writer failing with ENOSPC from the third save on
# (the writer runs in Orbax's background commit thread, as a real disk-full write would).
FULL_DISK = textwrap.dedent("""
    import errno, sys
    from orbax.checkpoint._src.handlers import json_checkpoint_handler as jch
    from ctsearcher_jax import cli
    original, calls = jch.JsonCheckpointHandler._save_fn, [0]
    async def full(self, x, directory):
        calls[0] += 1
        if calls[0] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(directory / "metadata"))
        return await original(self, x, directory)
    jch.JsonCheckpointHandler._save_fn = full
    sys.exit(cli.main(sys.argv[1:]))
""")


@pytest.mark.cli
def test_disk_full_during_training_is_one_line_and_keeps_the_last_checkpoint(helpers, tmp_path,
                                                                              xla_cache):
    root = helpers.tinydata.write_tiny_dataset(tmp_path / "data", num_train=4, num_test=0)
    cfg = helpers.tinydata.tiny_config_dict(root, batch_size=2, epochs=2, checkpoint_every_steps=1)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    work = tmp_path / "run"
    cmd = helpers.train_cmd(tmp_path / "cfg.yaml", work)[3:]  # the arguments after `-m module`
    out = subprocess.run([sys.executable, "-c", FULL_DISK, *cmd], capture_output=True, text=True,
                         env=helpers.subprocess_env(xla_cache), timeout=240, cwd=helpers.REPO)
    assert out.returncode == 2, out.stderr[-3000:]
    # progress lines, then the error as one line: no tracebacks, no Orbax error log
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr and sum("rror" in line for line in lines) == 1, out.stderr
    assert lines[-1].startswith("ctsearcher train: error: ")
    assert "checkpoints/3: checkpoint not written (No space left on device" in lines[-1]
    assert "last committed checkpoint, step 2, is intact" in lines[-1]
    from ctsearcher_jax.config import load
    from ctsearcher_jax.train.checkpoint import RunCheckpoints, is_complete

    assert is_complete(work / "checkpoints" / "2") and not (work / "checkpoints" / "3").exists()
    # what a resume reads (resume itself is tested in test_resume.py): step 2, readable, and
    # the half-written step 3 is not a step
    ckpts = RunCheckpoints(work, load(tmp_path / "cfg.yaml"), best_metric=None, enable_async=False)
    try:
        assert ckpts.latest_step() == 2 and ckpts.read_meta(2)["step"] == 2
    finally:
        ckpts.close()
