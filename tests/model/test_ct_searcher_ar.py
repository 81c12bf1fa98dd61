"""CT-Searcher AR (model/ct_searcher_ar.py, model/sampling_ar.py): shapes, causality, KV cache,
offset density, targets, loss, sharded sampling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ctsearcher_jax.config import ModelConfig, from_dict
from ctsearcher_jax.data.targets import build_targets, fixation_targets
from ctsearcher_jax.errors import ConfigError
from ctsearcher_jax.model.ct_searcher_ar import (
    AROutputs,
    CTSearcherAR,
    Fixations,
    offset_log_density,
    sample_offsets,
)
from ctsearcher_jax.model.factory import (
    build,
    check_architecture,
    check_sampling,
    is_autoregressive,
)
from ctsearcher_jax.model.generate import samplers
from ctsearcher_jax.model.losses import duration_log_pdf
from ctsearcher_jax.model.sampling_ar import _draw_classes, decode_positions, draw

REPO = Path(__file__).resolve().parents[2]
L = 10
GRID = (3, 2, 4)  # Gy, Gx, Gz all different: catches axis mix-ups


def tiny(**kw) -> ModelConfig:
    args = dict(arch="ct_searcher_ar", d_model=16, num_heads=2, num_encoder_layers=1,
                num_decoder_layers=2, dim_feedforward=32, dropout=0.0, feature_dim=8, grid=GRID,
                max_length=L, ar_layers=1, offset_components=3)
    return ModelConfig(**{**args, **kw})


@pytest.fixture(scope="module")
def model():
    return build(tiny(), nnx.Rngs(0))


@nnx.jit
def forward(m, tokens, fixations):
    return m(tokens, fixations=fixations)


class EagerToStop(CTSearcherAR):
    """CTSearcherAR with +3 on the STOP logit: untrained scanpaths end within a few steps."""

    def class_logits(self, h, enc, prev_classes):
        return super().class_logits(h, enc, prev_classes).at[..., 0].add(3.0)


draw_jit = nnx.jit(draw, static_argnames=("num_samples", "min_length", "temperature", "top_k"))


def tokens_of(b: int) -> jax.Array:
    return jax.random.normal(jax.random.key(7), (b, int(np.prod(GRID)), 8))


def random_fixations(rows: int, seed: int = 0, length: int = 7) -> Fixations:
    rng = np.random.default_rng(seed)
    classes = np.zeros((rows, L), np.int32)
    classes[:, :length] = rng.integers(1, 1 + int(np.prod(GRID)), (rows, length))
    offsets = np.where(classes[..., None] > 0, rng.uniform(0, 1, (rows, L, 3)), 0).astype(np.float32)
    durations = np.where(classes > 0, rng.uniform(0.05, 1.0, (rows, L)), 0).astype(np.float32)
    return Fixations(jnp.asarray(classes), jnp.asarray(offsets), jnp.asarray(durations))


def step_log_probs(out: AROutputs, fx: Fixations) -> jax.Array:
    """(rows, L) log p of each step's class + offset + duration (the fixation's own terms)."""
    log_p = jax.nn.log_softmax(out.spatial_logits, axis=-1)
    cls = jnp.take_along_axis(log_p, fx.classes[..., None], axis=-1)[..., 0]
    t = jnp.where(fx.classes > 0, fx.durations, 1.0)
    rest = (offset_log_density(fx.offsets, out.offset_logits, out.offset_mean, out.offset_log_scale)
            + duration_log_pdf(t, out.duration_mu, out.duration_log_sigma2))
    return cls + jnp.where(fx.classes > 0, rest, 0.0)


def test_registered_autoregressive_and_config_checks():
    assert is_autoregressive("ct_searcher_ar") and not is_autoregressive("ct_searcher")
    # fields of one kind of architecture on another: the factory refuses them (config.py is a
    # leaf and knows no architecture); `build` and the commands call check_architecture
    with pytest.raises(ConfigError, match="reader_dropout"):
        check_architecture(ModelConfig(reader_dropout=0.5))  # CT-Searcher would ignore it
    with pytest.raises(ConfigError, match="reader_dropout"):
        build(ModelConfig(reader_dropout=0.5), nnx.Rngs(0))
    with pytest.raises(ConfigError, match="legacy_stop_last"):
        check_architecture(tiny(legacy_stop_last=True))
    with pytest.raises(ConfigError, match="ar_layers"):
        tiny(ar_layers=3)
    with pytest.raises(ConfigError, match="temperature"):
        samplers(from_dict({"eval": {"temperature": 0.5}}))  # CT-Searcher has no temperature
    with pytest.raises(ConfigError, match="top_k"):
        check_sampling("ct_searcher", 1.0, 5)
    assert from_dict({"model": {"arch": "ct_searcher_ar"}, "eval": {"top_k": 5}}).eval.top_k == 5
    samplers(from_dict({"model": {"arch": "ct_searcher_ar"}, "eval": {"top_k": 5}}))


def test_forward_shapes(model):
    fx = random_fixations(6)
    out = forward(model, tokens_of(2), fx)  # 2 CTs x 3 scanpaths each
    k = 1 + int(np.prod(GRID))
    assert out.spatial_logits.shape == (6, L, k)
    assert out.duration_mu.shape == out.duration_log_sigma2.shape == (6, L)
    assert out.offset_logits.shape == (6, L, 3)
    assert out.offset_mean.shape == out.offset_log_scale.shape == (6, L, 3, 3)
    assert all(bool(jnp.isfinite(a).all()) for a in out)
    # rows of the same CT with the same fixations give the same outputs (shared encoder and plan)
    same = Fixations(*(jnp.repeat(a[:1], 6, axis=0) for a in fx))
    out = forward(model, tokens_of(2), same)
    np.testing.assert_allclose(out.spatial_logits[0], out.spatial_logits[2], atol=1e-6)
    assert not np.allclose(out.spatial_logits[0], out.spatial_logits[3])  # another CT


def test_a_later_fixation_never_changes_earlier_log_probs(model):
    fx = random_fixations(2, seed=1)
    base = step_log_probs(forward(model, tokens_of(1), fx), fx)
    j = 4
    changed = random_fixations(2, seed=2)
    later = Fixations(*(jnp.concatenate([a[:, :j], b[:, j:]], axis=1) for a, b in zip(fx, changed)))
    out = forward(model, tokens_of(1), later)
    np.testing.assert_allclose(step_log_probs(out, later)[:, :j], base[:, :j], rtol=1e-5, atol=1e-5)
    # step j's class distribution reads fixations < j only
    ref = forward(model, tokens_of(1), fx).spatial_logits
    np.testing.assert_allclose(out.spatial_logits[:, j], ref[:, j], rtol=1e-5, atol=1e-5)
    assert not np.allclose(out.spatial_logits[:, j + 1], ref[:, j + 1], atol=1e-4)  # it does read


# the plain case in make check; deeper and tempered ones in make test (each compiles a sampler)
@pytest.mark.parametrize("kw", [{}, pytest.param({"ar_layers": 2}, marks=pytest.mark.slow),
                                pytest.param({"temperature": 0.7, "top_k": 5},
                                             marks=pytest.mark.slow)])
def test_kv_cache_sampling_equals_recomputing_every_step(kw):
    """Each drawn step is redrawn from the teacher-forced pass over the drawn fixations (no
    cache, every step recomputed) with the same keys: same classes, offsets and durations."""
    ar_layers = kw.get("ar_layers", 1)
    options = {k: v for k, v in kw.items() if k != "ar_layers"}
    m = EagerToStop(tiny(ar_layers=ar_layers), rngs=nnx.Rngs(3))
    b, s = 2, 3
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(5), i))(jnp.arange(b))
    drawn = draw_jit(m, tokens_of(b), keys, jnp.float32(512), jnp.array([48.0, 30.0]), None,
                     num_samples=s, min_length=3, **options)
    fx = Fixations(*(a.reshape(b * s, *a.shape[2:]) for a in drawn.fixations))
    out = forward(m, tokens_of(b), fx)
    lengths = np.asarray(drawn.sampled.lengths)
    assert (lengths >= 3).all() and len(np.unique(lengths)) > 1
    rs = lambda a: a.reshape(b, s, *a.shape[1:])  # noqa: E731

    @jax.jit  # one program for every step (op by op, each step's ops would compile one by one)
    def redraw(t, out):
        k = jax.vmap(lambda key: jax.random.split(jax.random.fold_in(key, t), 3))(keys)
        at_t = lambda a: rs(a)[:, :, t]  # noqa: E731
        cls = _draw_classes(k[:, 0], at_t(out.spatial_logits), t, grid=GRID, min_length=3,
                            temperature=options.get("temperature", 1.0),
                            top_k=options.get("top_k", 0))
        off = jax.vmap(sample_offsets)(k[:, 1], at_t(out.offset_logits), at_t(out.offset_mean),
                                       at_t(out.offset_log_scale))
        eps = jax.vmap(lambda key: jax.random.normal(key, (s,)))(k[:, 2])
        sec = jnp.exp(at_t(out.duration_mu) + jnp.exp(0.5 * at_t(out.duration_log_sigma2)) * eps)
        return cls, off, sec

    for t in range(L):
        cls, off, sec = redraw(jnp.int32(t), out)
        live = t <= lengths  # steps up to and including the STOP
        np.testing.assert_array_equal(np.asarray(cls)[live],
                                      np.asarray(drawn.sampled.classes)[:, :, t][live])
        fixated = t < lengths
        np.testing.assert_allclose(np.asarray(off)[fixated],
                                   np.asarray(drawn.fixations.offsets)[:, :, t][fixated], atol=1e-5)
        np.testing.assert_allclose(np.asarray(sec)[fixated],
                                   np.asarray(drawn.sampled.durations)[:, :, t][fixated], rtol=1e-5)


def test_offset_density_integrates_to_one_and_sampling_follows_it():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=2), jnp.float32)
    mean = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    log_scale = jnp.asarray(np.log(rng.uniform(0.3, 1.0, (2, 3))), jnp.float32)
    # integrate over (0, 1)^3 in logit space: do = o (1 - o) du
    u = np.linspace(-9, 9, 91)
    du = u[1] - u[0]
    grid = np.stack(np.meshgrid(u, u, u, indexing="ij"), -1).reshape(-1, 3)
    o = 1 / (1 + np.exp(-grid))
    dens = np.exp(np.asarray(offset_log_density(jnp.asarray(o, jnp.float32), logits, mean,
                                                log_scale)))
    total = np.sum(dens * np.prod(o * (1 - o), axis=-1)) * du ** 3
    assert abs(total - 1.0) < 1e-3
    draws = sample_offsets(jax.random.key(0), jnp.broadcast_to(logits, (20000, 2)),
                           jnp.broadcast_to(mean, (20000, 2, 3)),
                           jnp.broadcast_to(log_scale, (20000, 2, 3)))
    assert float(draws.min()) >= 0 and float(draws.max()) < 1
    expected = np.sum((dens * np.prod(o * (1 - o), axis=-1))[:, None] * o, axis=0) * du ** 3
    np.testing.assert_allclose(np.asarray(draws).mean(0), expected, atol=0.01)


def test_offset_targets_decode_back_to_the_coordinates():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(1, 512, 20), rng.uniform(1, 512, 20)
    z = rng.integers(1, 49, 20).astype(float)
    classes, offsets = fixation_targets(x, y, z, grid=GRID, max_length=25, z_extent=48)
    spatial = build_targets(x, y, z, np.ones(20), grid=GRID, max_length=25, z_extent=48).spatial
    np.testing.assert_array_equal(classes[:20], spatial[:20].argmax(-1))  # the one-hot's cell
    assert (classes[20:] == 0).all() and (offsets[20:] == 0).all()
    assert (offsets >= 0).all() and (offsets < 1).all()
    back = decode_positions(jnp.asarray(classes[:20]), jnp.asarray(offsets[:20]), GRID, 512.0, 48.0)
    np.testing.assert_allclose(np.asarray(back), np.stack([x, y, z], 1), atol=2e-3)
    # past the frame: last cell, offset just below 1, decoded back into the frame
    c, o = fixation_targets(np.array([600.0]), np.array([0.5]), np.array([1.0]), grid=GRID,
                            max_length=2, z_extent=48)
    assert o[0, 0] < 1 and o[0, 0] > 0.999 and o[0, 1] == 0
    assert float(decode_positions(jnp.asarray(c[:1]), jnp.asarray(o[:1]), GRID, 512.0, 48.0)[0, 0]) <= 512


def test_loss_is_class_cross_entropy_plus_offset_and_duration_nll(model):
    rows = random_fixations(4, seed=4, length=6)
    b, r = 2, 2
    spatial = np.asarray(jax.nn.one_hot(rows.classes, 1 + int(np.prod(GRID))))
    action = (np.arange(L) <= 6).astype(np.float32)[None].repeat(4, 0)
    fixed = (np.arange(L) < 6).astype(np.float32)[None].repeat(4, 0)
    reader_mask = np.array([[1, 1], [1, 0]], np.float32)  # the last slot is padding
    action[3] = fixed[3] = 0
    batch = {"tokens": tokens_of(b), "reader_mask": reader_mask, "reader_ids": np.zeros((b, r), np.int32),
             "cells": rows.classes.reshape(b, r, L), "offsets": rows.offsets.reshape(b, r, L, 3),
             "duration": rows.durations.reshape(b, r, L), "spatial": spatial.reshape(b, r, L, -1),
             "action_mask": action.reshape(b, r, L), "duration_mask": fixed.reshape(b, r, L)}
    spatial_loss, duration_loss = nnx.jit(lambda m, x: m.loss_terms(x))(model, batch)
    out = forward(model, tokens_of(b), rows)
    ce = -np.asarray(jnp.take_along_axis(jax.nn.log_softmax(out.spatial_logits), rows.classes[..., None],
                                         -1)[..., 0])
    off = -np.asarray(offset_log_density(rows.offsets, out.offset_logits, out.offset_mean,
                                         out.offset_log_scale))
    t = np.where(fixed > 0, np.asarray(rows.durations), 1.0)
    dur = -np.asarray(duration_log_pdf(jnp.asarray(t), out.duration_mu, out.duration_log_sigma2))
    np.testing.assert_allclose(float(spatial_loss), (np.sum(ce * action) + np.sum(off * fixed))
                               / action.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(duration_loss), np.sum(dur * fixed) / fixed.sum(), rtol=1e-5)


@pytest.mark.cli  # a subprocess with 8 fake devices, as test_sample_devices
def test_sampling_sharded_over_8_devices_agrees_with_one(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8 "
                         "--xla_backend_optimization_level=0")
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "sample_devices_ar_probe.py"),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, eight = out["one"], out["eight"]
    assert len(one) == len(eight) == 10
    assert [(r["name"], r["length"]) for r in eight] == [(r["name"], r["length"]) for r in one]
    # Stated tolerance: the same draws up to float32 rounding of the forward pass on another
    # device layout: 1e-3 px / slice in coordinates, 1e-5 relative in seconds.
    for a, b in zip(one, eight):
        for k in ("X", "Y", "Z"):
            np.testing.assert_allclose(a[k], b[k], atol=1e-3)
        np.testing.assert_allclose(a["T"], b["T"], rtol=1e-5)
    assert any(a["X"] != b["X"] for a, b in zip(one[::2], one[2::2]))  # CTs draw differently
