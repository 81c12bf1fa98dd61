"""CT-Searcher: a 3D scanpath transformer over a grid of CT feature tokens (Flax NNX).

Forward pass for B CTs, N = Gy*Gx*Gz tokens of C feature channels, L = max_length decoder queries:

    Z     = MLP(tokens)                    (B, N, d)    Linear(C, d) - ReLU - Linear(d, d)
    keys  = [stop, Z + PE]                 (B, 1+N, d)  learnable stop token, PE on grid tokens only
    E     = Encoder(keys)                  (B, 1+N, d)  post-norm transformer encoder
    M     = E + [0, PE]                    memory: PE added again, not on the stop token
    R     = Decoder(queries, M)            (B, L, d)    learned queries, causal self-attention
    logits = FC(R) @ E^T                   (B, L, 1+N)  E without the second PE
    mu, log_sigma2 = MLP_mu(R), MLP_var(R) (B, L)       MLP = Linear(d, d/2) - ReLU - Linear(d/2, 1)

With the stop token first, logits index k is class k (0 = STOP, 1 + token). `legacy_stop_last=True`
builds the original's key order [Z + PE, stop], so original weights give the original's logits
(index N = stop); the loss then pairs logits and targets index by index exactly as the original.

The model is not autoregressive: every step's distribution comes from this one forward pass.

Reader conditioning (`reader_conditioning: embedding`, the paper-era recipe): a learned vector
per reader id, `reader_embed` (num_readers, d), is added to every decoder query,

    queries = query_embed + reader_embed[reader]    (B, L, d)

so only the decoder depends on the reader: given reader indices (B, R) the encoder runs once per
CT and the decoder once per (CT, reader), outputs with leading axis B*R (reader-major inside each
CT). Adding to the queries (rather than to the memory or the tokens) keeps the encoder shared
across readers and costs no extra matmul; the queries enter the decoder's self-attention and
cross-attention, so the reader shifts both which steps attend where and the duration heads.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ctsearcher_jax.config import ModelConfig
from ctsearcher_jax.model.positional import PositionalTable, legacy_random_table, sine_table_array
from ctsearcher_jax.nn.layers import DecoderLayer, EncoderLayer, linear, xavier_uniform


class ScanpathOutputs(NamedTuple):
    """Model outputs for B CTs (all float32).

    spatial_logits: (B, L, K), K = 1 + N; class 0 = STOP (index N = stop when legacy_stop_last).
    duration_mu: (B, L) mean of log-duration (log seconds).
    duration_log_sigma2: (B, L) log of the log-duration variance; sigma2 = exp(duration_log_sigma2).
    """

    spatial_logits: jax.Array
    duration_mu: jax.Array
    duration_log_sigma2: jax.Array


class DurationHead(nnx.Module):
    """Linear(d, d/2) - ReLU - Linear(d/2, 1): (B, L, d) -> (B, L) float32."""

    def __init__(self, d_model: int, *, dtype, rngs: nnx.Rngs):
        self.linear1 = linear(d_model, d_model // 2, dtype=dtype, rngs=rngs)
        self.linear2 = linear(d_model // 2, 1, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear2(jax.nn.relu(self.linear1(x)))[..., 0].astype(jnp.float32)


class CTSearcher(nnx.Module):
    """The CT-Searcher model. Parameters float32; matmuls in `config.compute_dtype`."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        d = config.d_model
        dtype = jnp.dtype(config.compute_dtype)
        self.dtype = dtype
        self.input_proj1 = linear(config.feature_dim, d, dtype=dtype, rngs=rngs)
        self.input_proj2 = linear(d, d, dtype=dtype, rngs=rngs)
        self.stop_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (d,), jnp.float32))
        self.query_embed = nnx.Param(xavier_uniform(rngs.params(), (config.max_length, d), jnp.float32))
        if config.pe == "legacy_random":
            table = legacy_random_table(rngs.params(), config.num_tokens, d)
        else:
            table = sine_table_array(config.grid, d)
        self.pos_table = PositionalTable(table)
        layer_args = (d, config.num_heads, config.dim_feedforward, config.dropout)
        self.encoder = nnx.List([EncoderLayer(*layer_args, dtype=dtype, rngs=rngs)
                                 for _ in range(config.num_encoder_layers)])
        self.decoder = nnx.List([DecoderLayer(*layer_args, dtype=dtype, rngs=rngs)
                                 for _ in range(config.num_decoder_layers)])
        self.spatial_fc = linear(d, d, dtype=dtype, rngs=rngs)
        self.duration_mu = DurationHead(d, dtype=dtype, rngs=rngs)
        self.duration_logvar = DurationHead(d, dtype=dtype, rngs=rngs)
        if config.reader_conditioned:
            if not config.readers:
                raise ValueError("model.reader_conditioning=embedding needs model.readers (the "
                                 "reader ids; training fills them from the dataset)")
            # Drawn last, so an unconditioned model's initialisation is unchanged.
            self.reader_embed = nnx.Param(
                xavier_uniform(rngs.params(), (len(config.readers), d), jnp.float32))

    def _with_stop(self, grid_tokens: jax.Array, stop: jax.Array) -> jax.Array:
        """Key sequence (B, 1+N, d): [stop, grid...] or, legacy, [grid..., stop]."""
        parts = [grid_tokens, stop] if self.config.legacy_stop_last else [stop, grid_tokens]
        return jnp.concatenate(parts, axis=1)

    def encode(self, tokens: jax.Array, *, deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        """tokens (B, N, C) -> (E (B, 1+N, d), memory (B, 1+N, d)) float32."""
        b, n, _ = tokens.shape
        if n != self.config.num_tokens:
            raise ValueError(f"expected {self.config.num_tokens} tokens for grid {self.config.grid}, "
                             f"got {n}")
        z = self.input_proj2(jax.nn.relu(self.input_proj1(tokens.astype(self.dtype))))
        z = z.astype(jnp.float32)
        pe = self.pos_table[...]
        stop = jnp.broadcast_to(self.stop_token[...], (b, 1, z.shape[-1]))
        x = self._with_stop(z + pe, stop)
        for layer in self.encoder:
            x = layer(x, deterministic=deterministic)
        memory = x + self._with_stop(jnp.broadcast_to(pe, (1, *pe.shape)), jnp.zeros((1, 1, pe.shape[-1])))
        return x, memory

    def decode(self, enc: jax.Array, memory: jax.Array, readers: jax.Array | None = None, *,
               deterministic: bool = True) -> ScanpathOutputs:
        """enc, memory (B, 1+N, d) from `encode`; readers (B,) int32 reader indices or None."""
        b = enc.shape[0]
        r = jnp.broadcast_to(self.query_embed[...], (b, *self.query_embed.shape))
        if self.config.reader_conditioned:
            if readers is None:
                raise ValueError("this model is reader-conditioned: pass reader indices")
            r = r + self.reader_embed[...][readers][:, None, :]
        elif readers is not None:
            raise ValueError("this model is not reader-conditioned: it takes no reader indices")
        for layer in self.decoder:
            r = layer(r, memory, deterministic=deterministic)
        projected = self.spatial_fc(r)
        logits = jnp.einsum("bld,bkd->blk", projected, enc.astype(self.dtype)).astype(jnp.float32)
        return ScanpathOutputs(logits, self.duration_mu(r), self.duration_logvar(r))

    def __call__(self, tokens: jax.Array, readers: jax.Array | None = None, *,
                 deterministic: bool = True) -> ScanpathOutputs:
        """tokens (B, N, feature_dim) float32 -> ScanpathOutputs (see the class docstring).

        readers (conditioned models only): (B,) int32 reader indices, one per CT, outputs (B, ...);
        or (B, R) for R readers per CT: the encoder runs once per CT, outputs (B*R, ...) with the
        readers of a CT consecutive.
        """
        enc, memory = self.encode(tokens, deterministic=deterministic)
        if readers is not None and readers.ndim == 2:
            per_ct = readers.shape[1]
            enc, memory = jnp.repeat(enc, per_ct, axis=0), jnp.repeat(memory, per_ct, axis=0)
            readers = readers.reshape(-1)
        return self.decode(enc, memory, readers, deterministic=deterministic)
