"""Transformer building blocks with PyTorch `nn.Transformer*Layer` semantics, in Flax NNX.

Post-norm layers (`norm_first=False`), ReLU feed-forward, LayerNorm eps 1e-5 with the exact (two-pass)
variance, dropout after attention, inside the feed-forward after ReLU, after the feed-forward and on
the attention weights. Attention is `nn.MultiheadAttention`: one fused input projection
(d, 3d) = [W_q | W_k | W_v] (the transpose of torch's `in_proj_weight`), heads are contiguous slices
of d, scores q.k^T / sqrt(d/H), softmax over keys, `out_proj`.

Parameters are float32. `dtype` is the compute dtype of the matmuls: the residual stream, LayerNorm
and softmax stay float32, so bfloat16 only rounds the inputs of the matrix products.

Attention runs through `jax.nn.dot_product_attention` (`nn/attention.py`: cuDNN flash attention
on GPUs in bfloat16, XLA otherwise) whenever no dropout applies to the attention weights, i.e. in
evaluation, sampling, and training with dropout 0. Training with attention dropout (the paper
config: 0.2, as torch's MultiheadAttention) keeps the explicit softmax-dropout-product, because
`jax.nn.dot_product_attention` has no dropout; without dropout both paths agree to float32
rounding (tests/model/test_attention.py).

Initialisation follows the original CT-Searcher: xavier-uniform for every matrix (including the fused
(d, 3d) projection, whose fans are d and 3d as in torch), torch's default uniform(+-1/sqrt(fan_in))
for Linear biases, zeros for attention biases.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ctsearcher_jax.nn.attention import attention

xavier_uniform = jax.nn.initializers.xavier_uniform()


def torch_bias_init(fan_in: int):
    """torch.nn.Linear's default bias init: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def linear(in_features: int, out_features: int, *, dtype, rngs: nnx.Rngs,
           zero_bias: bool = False) -> nnx.Linear:
    """A torch-initialised Linear: kernel (in, out) xavier-uniform, y = x @ kernel + bias."""
    bias_init = jax.nn.initializers.zeros if zero_bias else torch_bias_init(in_features)
    return nnx.Linear(in_features, out_features, dtype=dtype, param_dtype=jnp.float32,
                      kernel_init=xavier_uniform, bias_init=bias_init, rngs=rngs)


def layer_norm(d: int, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """torch.nn.LayerNorm(d) (eps 1e-5, biased variance), computed in float32."""
    return nnx.LayerNorm(d, epsilon=1e-5, use_fast_variance=False, dtype=jnp.float32,
                         param_dtype=jnp.float32, rngs=rngs)


class MultiHeadAttention(nnx.Module):
    """nn.MultiheadAttention (batch-first arrays, no key padding mask).

    query: (B, Lq, d); key_value: (B, Lk, d), or None for self-attention; causal: mask keys after
    each query (Lq == Lk).
    Returns (B, Lq, d) in the compute dtype.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float, *, dtype, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dtype = dtype
        self.in_proj = linear(d_model, 3 * d_model, dtype=dtype, rngs=rngs, zero_bias=True)
        self.out_proj = linear(d_model, d_model, dtype=dtype, rngs=rngs, zero_bias=True)
        self.attn_dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, query: jax.Array, key_value: jax.Array | None = None, *, causal: bool,
                 deterministic: bool) -> jax.Array:
        d = self.num_heads * self.head_dim
        kernel = self.in_proj.kernel[...].astype(self.dtype)
        bias = self.in_proj.bias[...].astype(self.dtype)
        query = query.astype(self.dtype)
        if key_value is None:  # self-attention: one fused (d, 3d) product
            qkv = query @ kernel + bias
            q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
        else:
            q = query @ kernel[:, :d] + bias[:d]
            kv = key_value.astype(self.dtype) @ kernel[:, d:] + bias[d:]
            k, v = kv[..., :d], kv[..., d:]
        split = lambda x: x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        # Scale q before the product, as torch does (q * head_dim^-0.5, then q.k^T).
        q = q * jnp.asarray(1.0 / math.sqrt(self.head_dim), self.dtype)
        if deterministic or self.attn_dropout.rate == 0:
            out = attention(q, k, v, is_causal=causal, label="ct_searcher")
        else:
            out = self.explicit_attention(q, k, v, causal=causal, deterministic=deterministic)
        return self.out_proj(out.reshape(*out.shape[:-2], d))

    def explicit_attention(self, q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool,
                           deterministic: bool) -> jax.Array:
        """softmax(q k^T) with dropout on the weights, then @ v: (B, Lq, H, hd) -> same.

        Scores are float32 (an einsum with a float32 result, as `jax.nn.dot_product_attention`
        computes them), masked keys get -inf.
        """
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        if causal:
            lq, lk = scores.shape[-2:]
            allowed = jnp.tril(jnp.ones((lq, lk), bool))
            scores = jnp.where(allowed, scores, -jnp.inf)
        weights = jax.nn.softmax(scores, axis=-1)
        weights = self.attn_dropout(weights, deterministic=deterministic)
        return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)


class FeedForward(nnx.Module):
    """linear2(dropout(relu(linear1(x)))): (B, L, d) -> (B, L, d)."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float, *, dtype, rngs: nnx.Rngs):
        self.linear1 = linear(d_model, dim_feedforward, dtype=dtype, rngs=rngs)
        self.linear2 = linear(dim_feedforward, d_model, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        h = jax.nn.relu(self.linear1(x))
        return self.linear2(self.dropout(h, deterministic=deterministic))


class EncoderLayer(nnx.Module):
    """nn.TransformerEncoderLayer (post-norm): x = LN1(x + SA(x)); x = LN2(x + FF(x)). (B, S, d)."""

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float, *,
                 dtype, rngs: nnx.Rngs):
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout, dtype=dtype, rngs=rngs)
        self.feed_forward = FeedForward(d_model, dim_feedforward, dropout, dtype=dtype, rngs=rngs)
        self.norm1 = layer_norm(d_model, rngs=rngs)
        self.norm2 = layer_norm(d_model, rngs=rngs)
        self.dropout1 = nnx.Dropout(dropout, rngs=rngs)
        self.dropout2 = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        sa = self.self_attn(x, causal=False, deterministic=deterministic)
        x = self.norm1(x + self.dropout1(sa, deterministic=deterministic).astype(jnp.float32))
        ff = self.feed_forward(x, deterministic=deterministic)
        return self.norm2(x + self.dropout2(ff, deterministic=deterministic).astype(jnp.float32))


class DecoderLayer(nnx.Module):
    """nn.TransformerDecoderLayer (post-norm) with a causal self-attention mask.

    x: (B, L, d) queries; memory: (B, S, d). x = LN1(x + SA(x)); x = LN2(x + CA(x, memory));
    x = LN3(x + FF(x)).
    """

    def __init__(self, d_model: int, num_heads: int, dim_feedforward: int, dropout: float, *,
                 dtype, rngs: nnx.Rngs):
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout, dtype=dtype, rngs=rngs)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout, dtype=dtype, rngs=rngs)
        self.feed_forward = FeedForward(d_model, dim_feedforward, dropout, dtype=dtype, rngs=rngs)
        self.norm1 = layer_norm(d_model, rngs=rngs)
        self.norm2 = layer_norm(d_model, rngs=rngs)
        self.norm3 = layer_norm(d_model, rngs=rngs)
        self.dropout1 = nnx.Dropout(dropout, rngs=rngs)
        self.dropout2 = nnx.Dropout(dropout, rngs=rngs)
        self.dropout3 = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, memory: jax.Array, *, deterministic: bool) -> jax.Array:
        sa = self.self_attn(x, causal=True, deterministic=deterministic)
        x = self.norm1(x + self.dropout1(sa, deterministic=deterministic).astype(jnp.float32))
        ca = self.cross_attn(x, memory, causal=False, deterministic=deterministic)
        x = self.norm2(x + self.dropout2(ca, deterministic=deterministic).astype(jnp.float32))
        ff = self.feed_forward(x, deterministic=deterministic)
        return self.norm3(x + self.dropout3(ff, deterministic=deterministic).astype(jnp.float32))
