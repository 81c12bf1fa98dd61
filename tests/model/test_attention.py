"""`nn/attention.py`: jax.nn.dot_product_attention equals the explicit attention it replaced.

float32 results equal the explicit softmax(q k^T + bias) v (the code before the change, and the
path training with attention dropout still takes) to float32 rounding: XLA lays out the two
products differently, so a few elements differ in the last bits (measured: <= 2.4e-7 absolute
here, 2e-6 at 400 keys; bit-identical at head dim 64/96), for CT-Searcher's causal self-attention
and cross-attention and for a Swin-style bias. bfloat16 stays within the bound of
tests/model/test_model.py (test_bfloat16_close_to_float32; parameters and optimizer state stay
float32 under bf16 compute: tests/train/test_step.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ctsearcher_jax.nn import attention as attention_mod
from ctsearcher_jax.nn import layers


def explicit(q, k, v, bias=None, causal=False):
    """The attention as written before `jax.nn.dot_product_attention` (pre-scaled q)."""
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    if bias is not None:
        s = s + bias
    if causal:
        s = jnp.where(jnp.tril(jnp.ones(s.shape[-2:], bool)), s, -jnp.inf)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, -1).astype(v.dtype), v)


@pytest.mark.parametrize("t,s,causal,with_bias", [(9, 9, True, False), (5, 13, False, False),
                                                  (27, 27, False, True)])
def test_float32_equal_to_explicit_to_rounding(t, s, causal, with_bias):
    rng = np.random.default_rng(t)
    q, k, v = (jnp.asarray(rng.normal(size=(2, n, 3, 8)), jnp.float32) for n in (t, s, s))
    bias = jnp.asarray(rng.normal(size=(2, 3, t, s)), jnp.float32) if with_bias else None
    got = jax.jit(lambda *a: attention_mod.attention(*a, bias=bias, is_causal=causal))(q, k, v)
    want = jax.jit(lambda *a: explicit(*a, bias=bias, causal=causal))(q, k, v)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
    assert attention_mod.last_used["attention"] == "jax(None)"  # CPU: JAX's choice (XLA)


def test_layer_float32_outputs_kept(monkeypatch):
    """MultiHeadAttention (what every CT-Searcher layer calls): causal self- and cross-attention."""
    mha = layers.MultiHeadAttention(24, 3, 0.0, dtype=jnp.float32, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 7, 24))
    memory = jax.random.normal(jax.random.key(2), (2, 25, 24))
    fused = [mha(x, causal=True, deterministic=True), mha(x, memory, causal=False, deterministic=True)]
    # The same layer with the attention routed through the explicit formula.
    monkeypatch.setattr(layers, "attention", lambda q, k, v, is_causal, label: explicit(
        q, k, v, causal=is_causal))
    reference = [mha(x, causal=True, deterministic=True),
                 mha(x, memory, causal=False, deterministic=True)]
    for a, b in zip(fused, reference):  # the project's float32 parity bound, 1e-5 relative
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_implementation_choice(monkeypatch):
    monkeypatch.setenv(attention_mod.ENV, "bogus")
    with pytest.raises(ValueError, match="CTSEARCHER_ATTENTION"):
        attention_mod.default_implementation()
    monkeypatch.setenv(attention_mod.ENV, "xla")
    q = jnp.ones((1, 4, 1, 8), jnp.bfloat16)
    out = attention_mod.attention(q, q, q, label="probe")
    assert out.dtype == jnp.bfloat16 and attention_mod.last_used["probe"] == "xla"
    # explicit cuDNN on a CPU is refused by JAX (no cuDNN), "auto" never tries it off GPU
    with pytest.raises((RuntimeError, ValueError, NotImplementedError)):
        attention_mod.attention(q, q, q, implementation="cudnn")
    monkeypatch.setenv(attention_mod.ENV, "auto")
    attention_mod.attention(q, q, q, label="probe")
    assert attention_mod.last_used["probe"] == "jax(None)"
