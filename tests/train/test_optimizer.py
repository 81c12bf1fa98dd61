"""AdamW parity with torch.optim.AdamW (reference fixture and torch itself) and the lr schedule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ctsearcher_jax.config import TrainConfig
from ctsearcher_jax.errors import ConfigError
from ctsearcher_jax.train.optimizer import lr_schedule, make_optimizer, schedule_steps

FROZEN = "pos_embed.pos"


def _fixture(fixtures_dir):
    z = np.load(fixtures_dir / "train" / "adamw_small.npz", allow_pickle=False)
    names = sorted(k.split("/", 1)[1] for k in z.files if k.startswith("grad/"))
    params = {k: z[f"param/{k}"] for k in names}
    grads = {k: z[f"grad/{k}"] for k in names}
    expected = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("adamw_step1/")}
    frozen = (z[f"param/{FROZEN}"], z[f"adamw_step1/{FROZEN}"])
    return params, grads, expected, frozen


def test_adamw_one_step_matches_reference(fixtures_dir):
    import jax
    import optax

    params, grads, expected, (pos_before, pos_after) = _fixture(fixtures_dir)
    assert FROZEN not in grads and len(grads) == 76
    tx = make_optimizer(TrainConfig(), steps_per_epoch=1, constant_lr=1e-4)
    state = tx.init(params)
    updates, _ = jax.jit(tx.update)(grads, state, params)
    new = optax.apply_updates(params, updates)
    for k in params:
        np.testing.assert_allclose(np.asarray(new[k]), expected[k], rtol=0, atol=1e-6, err_msg=k)
        # the step really moved the weights (the comparison is not vacuous)
        assert np.abs(expected[k] - params[k]).max() > 1e-7 or np.abs(grads[k]).max() == 0, k
    # the frozen table is outside the optimized tree: unchanged, no decay, as in torch
    np.testing.assert_array_equal(pos_before, pos_after)


def test_adamw_matches_torch_over_steps_with_decay_and_schedule():
    import jax
    import optax
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    train = TrainConfig(lr=3e-3, weight_decay=0.1, warmup_epochs=1, epochs=3)
    steps_per_epoch = 2
    p0 = {"w": rng.normal(size=(4, 3)).astype(np.float32), "b": rng.normal(size=(3,)).astype(np.float32)}
    grads_seq = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in p0.items()}
                 for _ in range(6)]

    tp = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in p0.items()}
    opt = torch.optim.AdamW(list(tp.values()), lr=train.lr, betas=(train.beta1, train.beta2),
                            eps=train.eps, weight_decay=train.weight_decay)
    warmup, total = schedule_steps(train, steps_per_epoch)
    # our schedule = the original LambdaLR advanced by one step
    lam = lambda s: (s + 1) / warmup if s + 1 < warmup else max(0.0, (total - s - 1) / (total - warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)

    tx = make_optimizer(train, steps_per_epoch)
    params = {k: v.copy() for k, v in p0.items()}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for g in grads_seq:
        for k in tp:
            tp[k].grad = torch.tensor(g[k])
        opt.step()
        sched.step()
        updates, state = update(g, state, params)
        params = optax.apply_updates(params, updates)
    for k in tp:
        np.testing.assert_allclose(np.asarray(params[k]), tp[k].detach().numpy(), rtol=0, atol=1e-6)


def test_schedule_ours_and_legacy():
    train = TrainConfig(lr=1.0, warmup_epochs=1, epochs=3)
    ours = [float(lr_schedule(train, 4)(s)) for s in range(12)]
    np.testing.assert_allclose(ours, [0.25, 0.5, 0.75, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8,
                                      2 / 8, 1 / 8, 0.0], atol=1e-7)
    legacy = dataclasses.replace(train, legacy_first_step_lr_zero=True)
    old = [float(lr_schedule(legacy, 4)(s)) for s in range(12)]
    np.testing.assert_allclose(old, [0.0, 0.25, 0.5, 0.75, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8,
                                     2 / 8, 1 / 8], atol=1e-7)
    # steps per epoch come from the data (the original hard-wired 100)
    assert schedule_steps(train, 7) == (7, 21)
    no_warmup = dataclasses.replace(train, warmup_epochs=0)
    assert float(lr_schedule(no_warmup, 4)(0)) == pytest.approx(11 / 12)


def test_clipping_limits_global_norm():
    import jax.numpy as jnp
    import optax

    train = TrainConfig(clip_grad_norm=1.0, weight_decay=0.0)
    tx = make_optimizer(train, 1, constant_lr=1.0)
    params = {"a": jnp.zeros(3)}
    big = {"a": jnp.array([30.0, 40.0, 0.0])}
    state = tx.init(params)
    _, state = tx.update(big, state, params)
    # first moment after one step = (1 - b1) * clipped grad; the clipped grad has norm 1
    mu = state[1][0].mu["a"]
    np.testing.assert_allclose(np.linalg.norm(np.asarray(mu)) / (1 - train.beta1), 1.0, rtol=1e-6)
    assert float(optax.tree.norm(big)) == pytest.approx(50.0)


def test_empty_epoch_is_config_error():
    with pytest.raises(ConfigError, match="batch_size"):
        schedule_steps(TrainConfig(batch_size=4), 0)
