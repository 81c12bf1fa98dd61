"""The training loop's named decisions (RunPlan) equal the conditions it used to spell out."""

from __future__ import annotations

import itertools

from ctsearcher_jax.config import TrainConfig
from ctsearcher_jax.train.loop import RunPlan


def _old_decisions(step, *, steps_per_epoch, total_steps, log_every, eval_every, ckpt_every,
                   has_evaluators, preempted):
    """The loop's inline conditions before they were named (train/loop.py, 2026-11)."""
    epoch_done = step % steps_per_epoch == 0
    epoch = step // steps_per_epoch
    evaluate = has_evaluators and epoch_done and (epoch % eval_every == 0 or step == total_steps)
    periodic = ckpt_every and step % ckpt_every == 0
    save = bool(evaluate or periodic or preempted or step == total_steps or (
        epoch_done and not has_evaluators and epoch % eval_every == 0))
    log = step % log_every == 0 or step == total_steps
    return log, evaluate, save


def test_plan_decides_as_the_old_loop_did():
    checked = 0
    for spe, epochs, log_every, eval_every, ckpt_every, has_eval, preempted in itertools.product(
            (1, 2, 3), (1, 4, 5), (1, 3), (1, 2, 3), (0, 1, 4), (False, True), (False, True)):
        train = TrainConfig(epochs=epochs, warmup_epochs=0, log_every=log_every,
                            eval_every_epochs=eval_every, checkpoint_every_steps=ckpt_every)
        plan = RunPlan.of(train, spe, has_evaluators=has_eval)
        assert plan.total_steps == spe * epochs
        for step in range(1, plan.total_steps + 1):
            old = _old_decisions(step, steps_per_epoch=spe, total_steps=spe * epochs,
                                 log_every=log_every, eval_every=eval_every, ckpt_every=ckpt_every,
                                 has_evaluators=has_eval, preempted=preempted)
            new = (plan.should_log(step), plan.should_evaluate(step),
                   plan.should_checkpoint(step, preempted=preempted))
            assert new == old, (spe, epochs, log_every, eval_every, ckpt_every, has_eval, step)
            checked += 1
    assert checked > 2000
    assert plan.is_last_step(plan.total_steps) and not plan.is_last_step(plan.total_steps - 1)
