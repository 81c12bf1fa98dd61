"""CT-Searcher with the original's weights reproduces its outputs, losses and gradients."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ctsearcher_jax.data.targets import ScanpathTargets
from ctsearcher_jax.model import upstream
from ctsearcher_jax.model.ct_searcher import CTSearcher
from ctsearcher_jax.model.losses import scanpath_loss

OUTPUTS = ("spatial_logits", "duration_mu", "duration_sigma2")
forward = nnx.jit(lambda model, x: model(x))


def _targets(ref):
    # The reference pairs output row i with scanpath i: 2 CTs with one reader each.
    fields = ("target_scanpath", "duration", "action_mask", "duration_mask")
    return ScanpathTargets(*(jnp.asarray(ref[k])[:, None] for k in fields)), jnp.ones((2, 1))


def test_inferred_config(imported_model, reference):
    c = imported_model.config
    assert (c.d_model, c.num_encoder_layers, c.num_decoder_layers, c.dim_feedforward, c.max_length,
            c.feature_dim, c.grid, c.legacy_stop_last) == (48, 2, 2, 64, 16, 768, (8, 8, 8), True)
    np.testing.assert_array_equal(imported_model.pos_table[...], reference["pos_embed.pos"][:, 0])


def test_outputs_match_original(imported_model, reference, src, close_rel):
    out = forward(imported_model, jnp.asarray(src))
    ours = {"spatial_logits": out.spatial_logits, "duration_mu": out.duration_mu,
            "duration_sigma2": jnp.exp(out.duration_log_sigma2)}
    for name in OUTPUTS:
        assert ours[name].dtype == jnp.float32
        close_rel(ours[name], reference[name], 1e-5, name)
        close_rel(ours[name], reference[name + "_f64"], 1e-5, name + " vs float64")


def test_losses_match_original(imported_model, reference, src):
    out = forward(imported_model, jnp.asarray(src))
    targets, reader_mask = _targets(reference)
    _, parts = scanpath_loss(out, targets, reader_mask, duration_weight=1.0, legacy_epsilon=True)
    np.testing.assert_allclose(float(parts["spatial"]), reference["loss_spatial"], rtol=1e-5)
    np.testing.assert_allclose(float(parts["duration"]), reference["loss_duration"], rtol=1e-5)
    # The stable log_softmax form differs on this untrained model: its target classes have
    # probabilities below the original's 1e-7 floor. It must equal an exact float64 evaluation.
    _, stable = scanpath_loss(out, targets, reader_mask, duration_weight=1.0)
    logits = np.asarray(out.spatial_logits, np.float64)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    mask = reference["action_mask"]
    expected = -(reference["target_scanpath"] * log_p).sum(-1)
    expected = (expected * mask).sum() / mask.sum()
    np.testing.assert_allclose(float(stable["spatial"]), expected, rtol=1e-5)
    np.testing.assert_allclose(float(stable["duration"]), reference["loss_duration"], rtol=1e-5)
    assert float(stable["spatial"]) > float(parts["spatial"])


def test_gradients_match_original(imported_model, reference, src, close_rel):
    targets, reader_mask = _targets(reference)
    x = jnp.asarray(src)

    def loss_fn(model):
        return scanpath_loss(model(x), targets, reader_mask, duration_weight=1.0,
                             legacy_epsilon=True)[0]

    grads = nnx.jit(nnx.grad(loss_fn))(imported_model)
    ours = upstream.state_to_upstream(grads, imported_model.config)
    expected = {k[len("grad/"):] for k in reference if k.startswith("grad/")}
    assert set(ours) == expected  # 76 trainable tensors; the PE table gets no gradient
    for key in sorted(expected):
        close_rel(ours[key], reference["grad/" + key], 1e-4, key)


def test_stop_first_is_a_permutation_of_legacy(imported_model, src, close_rel):
    # Same weights, stop token first: the logits are the legacy logits with the stop column moved
    # to index 0 (attention is permutation-equivariant over keys); durations are unchanged.
    x = jnp.asarray(src[:1])
    legacy = forward(imported_model, x)
    config = dataclasses.replace(imported_model.config, legacy_stop_last=False)
    model = nnx.eval_shape(lambda: CTSearcher(config, rngs=nnx.Rngs(1)))
    nnx.update(model, nnx.state(imported_model))  # every variable, so nothing stays abstract
    clean = forward(model, x)
    moved = jnp.concatenate([legacy.spatial_logits[..., -1:], legacy.spatial_logits[..., :-1]], -1)
    close_rel(clean.spatial_logits, moved, 1e-5, "logits")
    close_rel(clean.duration_mu, legacy.duration_mu, 1e-5, "mu")


def test_state_dict_round_trip(imported_model, state_dict):
    back = upstream.state_to_upstream(imported_model, imported_model.config)
    assert set(back) == set(state_dict)
    for key, value in state_dict.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
