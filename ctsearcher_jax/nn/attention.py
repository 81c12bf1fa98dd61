"""Scaled dot-product attention through `jax.nn.dot_product_attention`, one choice of kernel.

Used by CT-Searcher (`nn/layers.py`) and by the Swin UNETR window attention
(`feature_extraction/swin_unetr.py`). Inputs are `(B, T, N, H)` queries and `(B, S, N, H)` keys and
values; `bias` is added to the float32 logits (broadcastable to `(B, N, T, S)`); `is_causal` masks
keys after each query. Queries come **already scaled** (q * H^-0.5, as torch and MONAI scale them
before the product), so the call passes `scale=1.0`: multiplying the logits by 1 is exact and the
float32 logits are the ones the models computed before this module existed.

Which kernel (`implementation`):
- `None` ("jax"): JAX decides. In jax 0.10.2 `implementation=None` always runs the XLA
  reference (`_dot_product_attention_xla`: einsum logits in float32, `bias` added, masks applied,
  softmax in float32, probabilities cast to the value dtype, einsum with V); newer JAX versions
  may pick cuDNN by themselves.
- "cudnn": cuDNN's fused flash attention (NVIDIA GPUs; float16/bfloat16 only; head dim a
  multiple of 8 and <= 128, <= 256 on Hopper; with a bias in training, even sequence lengths).
- "auto" (the default here): "cudnn" on a GPU when the inputs are float16/bfloat16 and the head
  dim qualifies, falling back to JAX's choice if cuDNN refuses the pattern while tracing (JAX
  checks shapes, dtypes and the cuDNN version at trace time); JAX's choice everywhere else.
  float32 therefore always runs the XLA path (cuDNN has no float32 flash attention), so float32
  results do not depend on the kernel choice.
`CTSEARCHER_ATTENTION=auto|jax|xla|cudnn` overrides the default for a process (benchmarks).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "jax", "xla", "cudnn")
ENV = "CTSEARCHER_ATTENTION"

# What the last traced call used, per call site label (benchmarks report it).
last_used: dict[str, str] = {}


def default_implementation() -> str:
    """The implementation `attention` uses when not told: $CTSEARCHER_ATTENTION or "auto"."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in IMPLEMENTATIONS:
        raise ValueError(f"{ENV}={value!r}: use one of {', '.join(IMPLEMENTATIONS)}")
    return value


def _cudnn_may_apply(query: jax.Array) -> bool:
    head_dim = query.shape[-1]
    return (jax.default_backend() == "gpu" and query.dtype in (jnp.bfloat16, jnp.float16)
            and head_dim % 8 == 0 and head_dim <= 256)


def attention(query: jax.Array, key: jax.Array, value: jax.Array, *,
              bias: jax.Array | None = None, is_causal: bool = False,
              implementation: str | None = None, label: str = "attention") -> jax.Array:
    """softmax(q k^T + bias [causal]) v for pre-scaled q: `(B, T, N, H)` -> `(B, T, N, H)`.

    The output has the dtype of `value`; logits and softmax are float32 whatever the input dtype.
    """
    choice = implementation or default_implementation()
    if choice not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, got {choice!r}")
    def call(impl: str | None) -> jax.Array:
        b = bias
        if impl == "cudnn" and b is not None:
            b = b.astype(query.dtype)  # cuDNN takes the bias in the input dtype
        return jax.nn.dot_product_attention(query, key, value, bias=b, scale=1.0,
                                            is_causal=is_causal, implementation=impl)

    if choice == "auto" and _cudnn_may_apply(query):
        try:
            out = call("cudnn")
            last_used[label] = "cudnn"
            return out
        except (NotImplementedError, ValueError, RuntimeError):
            choice = "jax"  # cuDNN refused this pattern at trace time: JAX's own choice
    impl = {"auto": None, "jax": None, "xla": "xla", "cudnn": "cudnn"}[choice]
    last_used[label] = impl or "jax(None)"
    return call(impl)
