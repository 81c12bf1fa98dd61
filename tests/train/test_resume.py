"""Exact resume: SIGKILL at random points and SIGTERM, half-written checkpoints, incompatible configs."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from ctsearcher_jax import cli
from ctsearcher_jax.config import load
from ctsearcher_jax.train.checkpoint import RunCheckpoints

pytestmark = pytest.mark.slow


def _logged_step(workdir) -> int:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [0]
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (json.JSONDecodeError, KeyError):
            pass  # a line being written
    return max(steps)


def _interrupt(helpers, cfg, workdir, cache, *, at_step: int, sig: int, jitter: float):
    """Start a (resumed) run, send `sig` once it has logged `at_step` (+ jitter s); return it."""
    proc = subprocess.Popen(helpers.train_cmd(cfg, workdir), env=helpers.subprocess_env(cache),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=helpers.REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while _logged_step(workdir) < at_step:
            if proc.poll() is not None:
                raise AssertionError(f"run ended before step {at_step}: {proc.stderr.read()[-3000:]}")
            assert time.monotonic() < deadline, "run made no progress"
            time.sleep(0.01)
        time.sleep(jitter)
        if sig == signal.SIGKILL:
            helpers.kill_group(proc)
        else:
            proc.send_signal(sig)
            proc.wait(timeout=120)
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            helpers.kill_group(proc)
    return proc.returncode, out, err


@pytest.mark.cli
def test_sigkill_and_sigterm_resume_bit_identical(helpers, tiny_root, xla_cache, baseline,
                                                 tmp_path):
    _, base_losses, base_state = baseline
    # a checkpoint every step: a kill at any step loses at most the step in flight
    cfg = helpers.write_config(tmp_path / "cfg.yaml", tiny_root, checkpoint_every_steps=1)
    work = tmp_path / "run"
    rng = np.random.default_rng()
    targets = sorted(rng.choice(np.arange(2, helpers.SCALE_STEPS - 2), size=4, replace=False))
    kills = 0
    for i, target in enumerate(targets):
        sig = signal.SIGTERM if i == 2 else signal.SIGKILL
        code, out, err = _interrupt(helpers, cfg, work, xla_cache, at_step=int(target), sig=sig,
                                    jitter=float(rng.uniform(0, 0.05)))
        if sig == signal.SIGKILL:
            assert code == -signal.SIGKILL
            kills += 1
        else:
            # preemption: the step in flight finishes, is checkpointed, exit code 0
            assert code == 0, err[-3000:]
            assert "preempted" in out
            saved = max(int(p.name) for p in (work / "checkpoints").iterdir() if p.name.isdigit())
            assert saved == _logged_step(work)
    assert kills >= 3
    final = helpers.run_train(cfg, work, xla_cache)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "resumed from" in final.stderr and "completed" in final.stdout

    # every step logged exactly once, with the uninterrupted run's loss
    rows = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["split"] == "train"]
    assert steps == list(range(1, helpers.SCALE_STEPS + 1))
    assert {r["step"]: r["loss"] for r in rows if r["split"] == "train"} == base_losses
    state = helpers.final_state(work, helpers.SCALE_STEPS)
    for k in base_state:
        np.testing.assert_array_equal(state[k], base_state[k], err_msg=k)


def test_half_written_steps_are_never_loaded(baseline, tmp_path):
    run, _, _ = baseline
    work = tmp_path / "run"
    shutil.copytree(run, work)
    config = load(work / "config.yaml")
    ckpt = work / "checkpoints"
    latest = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
    # a step killed while Orbax wrote it (temporary name) ...
    tmp = ckpt / f"{latest + 1}.orbax-checkpoint-tmp-1700000000"
    shutil.copytree(ckpt / str(latest), tmp)
    # ... and a step directory without its commit markers (e.g. copied by hand, or a filesystem
    # without atomic rename)
    partial = ckpt / str(latest + 2)
    shutil.copytree(ckpt / str(latest), partial)
    (partial / "state" / "commit_success.txt").unlink()
    (partial / "_CHECKPOINT_METADATA").unlink()

    manager = RunCheckpoints(work, config, best_metric="eval_loss")
    try:
        assert manager.latest_step() == latest
        assert manager.set_aside == [ckpt / f"{latest + 2}.incomplete"]
        assert not partial.exists()
        assert manager.read_meta(latest)["step"] == latest
    finally:
        manager.close()


def test_incompatible_config_is_a_clear_error(baseline, tmp_path, capsys):
    run, _, _ = baseline
    work = tmp_path / "run"
    shutil.copytree(run, work)
    before = sorted(p.name for p in (work / "checkpoints").iterdir())
    code = cli.main(["train", "--config", str(work / "config.yaml"), "--workdir", str(work),
                     "--set", "model.d_model=32", "--set", "train.lr=0.1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot resume" in err and "model.d_model: checkpoint 16, now 32" in err
    assert "train.lr" in err and "--workdir" in err
    # nothing written or deleted
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == before


@pytest.mark.parametrize("metric, expected_best", [("scanmatch_with_duration", 2), ("sed", 3)])
def test_keep_last_and_best_by_declared_direction(tmp_path, metric, expected_best):
    import grain
    import jax.numpy as jnp

    from ctsearcher_jax.config import from_dict
    from ctsearcher_jax.data.pipeline import make_iterator

    config = from_dict({"train": {"keep_last": 2, "keep_best": 1}})
    manager = RunCheckpoints(tmp_path, config, best_metric=metric)
    iterator = make_iterator(grain.MapDataset.range(10).batch(1))
    values = [0.5, 0.9, 0.1, 0.3, 0.2]  # step 2 highest, step 3 lowest
    try:
        for step, value in enumerate(values, start=1):
            next(iterator)
            manager.save(step, {"w": jnp.full((2,), float(step))}, iterator, {"step": step},
                         metrics={metric: value, "other": 0.0})
        manager.save(6, {"w": jnp.zeros(2)}, iterator, {"step": 6})  # e.g. SIGTERM: no metrics
        manager.wait()
        assert manager.best_step() == expected_best
        kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
        assert kept == sorted({5, 6, expected_best})
    finally:
        manager.close()
