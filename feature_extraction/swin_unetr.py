"""Swin UNETR (Hatamizadeh et al. 2022) in Flax NNX, numerically equal to MONAI's `SwinUNETR`.

Layout. Everything inside is channels-last: volumes are `(B, D, H, W, C)` float arrays, where
(D, H, W) are the volume axes (i, j, k) in stored order. MONAI takes `(B, C, D, H, W)`; use
`from_torch_layout` / `to_torch_layout` to move between the two (they only transpose).

Entry points (methods of `SwinUNETR`):
- `encode(x) -> (hidden_states, dec4)`: what feature extraction needs. `hidden_states` is the tuple
  of the five SwinViT outputs after the non-affine output LayerNorm, shapes
  `(B, D/2^(s+1), H/2^(s+1), W/2^(s+1), feature_size*2^s)` for s = 0..4, and
  `dec4 = encoder10(hidden_states[4])`, `(B, D/32, H/32, W/32, 16*feature_size)`.
  Runs only the SwinViT and encoder10 (no encoders 1-4, no decoder).
- `__call__(x) -> logits`: the full segmentation forward, `(B, D, H, W, out_channels)`;
  `encode_and_segment(x)` gives `(hidden_states, dec4, logits)` from the same single pass.
- `hidden_states(x)`: the SwinViT alone (available for SwinViT-only, self-supervised weights).

Every spatial size must be a multiple of `patch_size**5` (32), as in MONAI.

Recommended call pattern (jit once per input shape, pure in (graphdef, params, x)):

    model = weights.load_model("btcv.safetensors", parts="encoder")   # or SwinUNETR(cfg, rngs=...)
    graphdef, params = nnx.split(model)
    encode = jax.jit(functools.partial(encode_fn, graphdef))           # encode_fn(graphdef, params, x)
    hidden, dec4 = encode(params, x)                                   # x: (B, 96, 96, 96, 1)

`params` is a plain pytree, so it can be replicated or sharded with `jax.device_put` and `x`
sharded along the batch axis (`NamedSharding(mesh, P("data"))`); the function has no Python state.
Attention masks and relative-position indices are NumPy constants computed once per shape at trace
time, so a fixed window size compiles exactly once.

Numerics and memory. Parameters are float32; `dtype="bfloat16"` computes in bfloat16 (LayerNorm,
InstanceNorm and softmax statistics stay float32) and returns bfloat16 outputs: cast them when
writing features. `precision="highest"` (default) keeps float32 matmuls/convs exact on GPUs whose
default is TF32. The window attention runs through `jax.nn.dot_product_attention`
(`ctsearcher_jax/nn/attention.py`: cuDNN flash attention on GPUs in bfloat16, XLA otherwise) with
the relative position bias and the shifted-window mask as one additive bias. `attention_batch=1` (default) runs the window attention one sample at a time
(`lax.map`), bounding the attention-score memory to one sample; 0 attends the whole batch at once.

Behaviour copied from MONAI on purpose (it decides the numbers):
- window shrink: along an axis whose feature size is <= the window, the window becomes that size and
  the shift 0 (`get_window_size`); the relative-position index is then the full-window index sliced
  `[:n, :n]` (not a re-derived smaller index), exactly as MONAI does;
- tokens padded to a window multiple are zeros *after* norm1 and take part in attention unmasked;
- shifted windows use the -100 region mask; GELU is the exact erf form; LayerNorm eps is 1e-5;
- the stage outputs are normalised by a LayerNorm without affine parameters (`normalize=True`);
- UnetResBlock: conv 3^3 without bias, non-affine InstanceNorm (eps 1e-5), LeakyReLU(0.01), a 1^3
  conv + InstanceNorm on the residual when the channel count changes.

`merging_order` picks the PatchMerging concatenation order: "legacy" (MONAI < 1.5 and the copy
bundled with CTScanGaze: the BTCV weights and the released features), "fixed" (MONAI >= 1.5
`PatchMerging`) or "v2" (MONAI `PatchMergingV2`, itertools order).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ctsearcher_jax.nn.attention import attention

Array = jax.Array

# (d, h, w) parity offsets concatenated by PatchMerging, in channel order.
MERGING_OFFSETS: dict[str, tuple[tuple[int, int, int], ...]] = {
    # MONAI < 1.5 / CTScanGaze copy: x4..x6 are [1,0,1], [0,1,0], [0,0,1] (two slices repeat).
    "legacy": ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1)),
    # MONAI >= 1.5 PatchMerging.
    "fixed": ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1)),
    # MONAI PatchMergingV2 (itertools.product order).
    "v2": ((0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1)),
}

PRECISIONS = {"default": jax.lax.Precision.DEFAULT, "high": jax.lax.Precision.HIGH,
              "highest": jax.lax.Precision.HIGHEST}
# The same precisions as names for `jax.default_matmul_precision`, which is how the float32
# products inside `jax.nn.dot_product_attention` (it takes no precision argument) get them.
_MATMUL_PRECISION = {jax.lax.Precision.DEFAULT: "default", jax.lax.Precision.HIGH: "high",
                     jax.lax.Precision.HIGHEST: "highest"}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class SwinUNETRConfig:
    """Architecture of a Swin UNETR (3D only). Defaults are the BTCV segmentation bundle."""

    # Channels of the input volume.
    in_channels: int = 1
    # Segmentation classes of the output head (BTCV: 14).
    out_channels: int = 14
    # Width of the first stage; any positive multiple of 12 (BTCV: 48).
    feature_size: int = 48
    # Swin blocks per stage.
    depths: tuple[int, ...] = (2, 2, 2, 2)
    # Attention heads per stage.
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    # Attention window per axis (before the shrink rule).
    window_size: tuple[int, int, int] = (7, 7, 7)
    # Patch embedding kernel and stride per axis.
    patch_size: int = 2
    # MLP hidden width as a multiple of the block width.
    mlp_ratio: float = 4.0
    # Learnable bias on q, k, v.
    qkv_bias: bool = True
    # Non-affine LayerNorm on every SwinViT output.
    normalize: bool = True
    # PatchMerging concatenation order: "legacy" (BTCV weights), "fixed" (MONAI >= 1.5) or "v2".
    merging_order: Literal["legacy", "fixed", "v2"] = "legacy"
    # SwinUNETR-v2: a residual conv block before every stage.
    use_v2: bool = False
    # Compute dtype ("float32" or "bfloat16"); parameters stay float32.
    dtype: Literal["float32", "bfloat16"] = "float32"
    # Matmul/conv precision ("highest" keeps float32 exact on GPUs that default to TF32).
    precision: Literal["default", "high", "highest"] = "highest"
    # Samples whose windows attend at once (0 = the whole batch). 1 bounds the attention-score
    # memory to one sample's (about 0.5 GiB at 96^3, feature_size 48); on CPU it is also faster.
    attention_batch: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        ws = self.window_size
        ws = (int(ws),) * 3 if isinstance(ws, (int, np.integer)) else tuple(int(w) for w in ws)
        object.__setattr__(self, "window_size", ws)
        if self.feature_size <= 0 or self.feature_size % 12:
            raise ValueError(f"feature_size must be a positive multiple of 12, got {self.feature_size}")
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ValueError("depths and num_heads need 4 entries (one per stage)")
        for i, h in enumerate(self.num_heads):
            if (self.feature_size * 2**i) % h:
                raise ValueError(f"stage {i} width {self.feature_size * 2**i} not divisible by {h} heads")
        if len(ws) != 3 or min(ws) < 1:
            raise ValueError(f"window_size must be 3 positive ints, got {ws}")
        if self.merging_order not in MERGING_OFFSETS:
            raise ValueError(f"merging_order must be one of {sorted(MERGING_OFFSETS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}")
        if self.attention_batch < 0:
            raise ValueError(f"attention_batch must be >= 0, got {self.attention_batch}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SwinUNETRConfig:
        try:
            data = json.loads(text)
        except RecursionError:
            raise ValueError("config JSON nested too deeply") from None
        if not isinstance(data, dict):
            raise ValueError(f"config JSON is a {type(data).__name__}, not an object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SwinUNETRConfig fields {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# ----------------------------------------------------------------------------------------------
# Shape-only helpers (NumPy, evaluated once per shape at trace time).

def window_and_shift(size: Sequence[int], window: Sequence[int],
                     shift: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """MONAI's `get_window_size`: an axis no larger than the window uses its size and no shift."""
    w, s = list(window), list(shift)
    for i, n in enumerate(size):
        if n <= window[i]:
            w[i], s[i] = n, 0
    return tuple(w), tuple(s)


@functools.lru_cache(maxsize=None)
def relative_position_index(window: tuple[int, int, int]) -> np.ndarray:
    """`(n, n)` int64 index into the `(prod(2w-1), heads)` bias table, n = prod(window)."""
    coords = np.stack(np.meshgrid(*[np.arange(w) for w in window], indexing="ij")).reshape(3, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)
    rel = rel + np.array([w - 1 for w in window])
    wd, wh, ww = window
    return rel[..., 0] * (2 * wh - 1) * (2 * ww - 1) + rel[..., 1] * (2 * ww - 1) + rel[..., 2]


def _partition_np(x: np.ndarray, window: Sequence[int]) -> np.ndarray:
    b, d, h, w = x.shape
    wd, wh, ww = window
    x = x.reshape(b, d // wd, wd, h // wh, wh, w // ww, ww)
    return x.transpose(0, 1, 3, 5, 2, 4, 6).reshape(-1, wd * wh * ww)


@functools.lru_cache(maxsize=None)
def shift_regions(padded: tuple[int, int, int], window: tuple[int, ...],
                  shift: tuple[int, ...]) -> np.ndarray:
    """`(num_windows, n)` int32 region of every token of every window: MONAI's `compute_mask`
    regions, from which `shift_mask` (and `region_mask`, in the program) build the mask.

    The slices are written as MONAI writes them (a zero shift makes `slice(-0, None)` cover the
    whole axis), so the regions are identical for partially shrunk windows too.
    """
    img = np.zeros((1, *padded), np.float32)
    cnt = 0
    sl = [(slice(-window[i]), slice(-window[i], -shift[i]), slice(-shift[i], None)) for i in range(3)]
    for a in sl[0]:
        for b in sl[1]:
            for c in sl[2]:
                img[:, a, b, c] = cnt
                cnt += 1
    return _partition_np(img, window).astype(np.int32)


@functools.lru_cache(maxsize=None)
def shift_mask(padded: tuple[int, int, int], window: tuple[int, ...],
               shift: tuple[int, ...]) -> np.ndarray:
    """MONAI's `compute_mask`: `(num_windows, n, n)` float32, 0 within a region and -100 across."""
    win = shift_regions(padded, window, shift)
    diff = win[:, None, :] - win[:, :, None]
    return np.where(diff != 0, -100.0, 0.0).astype(np.float32)


def region_mask(regions: Array) -> Array:
    """`(num_windows, n)` region ids -> `shift_mask`'s `(num_windows, n, n)` float32 mask.

    Computed in the program rather than embedded: at 96^3 windows the first stage's mask is
    343 x 343 x 343 float32 (161 MB), and as a constant it made the TPU executable ~270 MB of
    code and its compilation minutes long (`ctsearcher plan`, docs/planning.md).
    """
    regions = jnp.asarray(regions)
    return jnp.where(regions[:, None, :] != regions[:, :, None], -100.0, 0.0).astype(jnp.float32)


def from_torch_layout(x: Array | np.ndarray) -> Array:
    """`(B, C, D, H, W)` -> `(B, D, H, W, C)`."""
    return jnp.transpose(jnp.asarray(x), (0, 2, 3, 4, 1))


def to_torch_layout(x: Array | np.ndarray) -> Array:
    """`(B, D, H, W, C)` -> `(B, C, D, H, W)`."""
    return jnp.transpose(jnp.asarray(x), (0, 4, 1, 2, 3))


def _instance_norm(x: Array, eps: float = 1e-5) -> Array:
    """Non-affine InstanceNorm over (D, H, W) per sample and channel; statistics in float32."""
    xf = x.astype(jnp.float32)
    mean = xf.mean(axis=(1, 2, 3), keepdims=True)
    var = jnp.square(xf - mean).mean(axis=(1, 2, 3), keepdims=True)
    return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def _plain_layer_norm(x: Array, eps: float = 1e-5) -> Array:
    """LayerNorm over channels without scale or bias (MONAI's `proj_out`)."""
    xf = x.astype(jnp.float32)
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class _Opts:
    """Per-layer numeric options shared by every submodule."""
    dtype: Any
    precision: Any

    @classmethod
    def of(cls, cfg: SwinUNETRConfig) -> _Opts:
        return cls(DTYPES[cfg.dtype], PRECISIONS[cfg.precision])


def _linear(i: int, o: int, opts: _Opts, rngs: nnx.Rngs, bias: bool = True) -> nnx.Linear:
    return nnx.Linear(i, o, use_bias=bias, dtype=opts.dtype, precision=opts.precision, rngs=rngs)


def _layer_norm(n: int, opts: _Opts, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(n, epsilon=1e-5, dtype=opts.dtype, use_fast_variance=False, rngs=rngs)


def _conv(i: int, o: int, k: int, opts: _Opts, rngs: nnx.Rngs, bias: bool = False,
          stride: int = 1) -> nnx.Conv:
    pad = (k - stride + 1) // 2  # MONAI's get_padding
    return nnx.Conv(i, o, (k,) * 3, strides=stride, padding=((pad, pad),) * 3, use_bias=bias,
                    dtype=opts.dtype, precision=opts.precision, rngs=rngs)


# ----------------------------------------------------------------------------------------------
# SwinViT

class WindowAttention(nnx.Module):
    """Multi-head self-attention inside windows with a relative position bias.

    Input `(num_windows*B, n, C)` tokens of windows of `window` voxels (n = prod(window), which may
    be smaller than the configured window after the shrink rule); output the same shape.
    """

    def __init__(self, dim: int, num_heads: int, window: tuple[int, int, int], qkv_bias: bool,
                 opts: _Opts, *, rngs: nnx.Rngs):
        self.dim, self.num_heads, self.window = dim, num_heads, tuple(window)
        self.scale = (dim // num_heads) ** -0.5
        self.opts = opts
        size = int(np.prod([2 * w - 1 for w in window]))
        init = nnx.initializers.truncated_normal(0.02)
        self.relative_position_bias_table = nnx.Param(init(rngs.params(), (size, num_heads)))
        self.qkv = _linear(dim, 3 * dim, opts, rngs, bias=qkv_bias)
        self.proj = _linear(dim, dim, opts, rngs)

    def position_bias(self, n: int) -> Array:
        """`(heads, n, n)` float32 bias; MONAI slices the full-window index `[:n, :n]`."""
        index = relative_position_index(self.window)[:n, :n]
        bias = self.relative_position_bias_table[...][index.reshape(-1)]
        return bias.reshape(n, n, self.num_heads).transpose(2, 0, 1)

    def __call__(self, x: Array, mask: np.ndarray | None,
                 regions: np.ndarray | None = None) -> Array:
        """mask: `(num_windows, n, n)` additive shift mask, or None; regions: the
        `(num_windows, n)` region ids it is built from (`region_mask`), instead of mask."""
        if regions is not None:
            mask = region_mask(regions)
        bw, n, c = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(bw, n, 3, h, c // h)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]          # (bw, n, h, hd)
        q = q * jnp.asarray(self.scale, q.dtype)                    # MONAI scales q first
        # Relative position bias + the shifted-window region mask (-100 across regions, MONAI's
        # additive mask) as one float32 bias, (1 or num_windows, h, n, n), repeated over the
        # samples when several samples' windows attend at once.
        bias = self.position_bias(n)[None]
        if mask is not None:
            nw = mask.shape[0]
            bias = bias + jnp.asarray(mask)[:, None]
            if bw != nw:
                bias = jnp.tile(bias, (bw // nw, 1, 1, 1))
        with jax.default_matmul_precision(_MATMUL_PRECISION[self.opts.precision]):
            out = attention(q, k, v, bias=bias, label="swin_window")
        return self.proj(out.reshape(bw, n, c))


class MLP(nnx.Module):
    """Linear -> exact GELU -> Linear on the channel axis."""

    def __init__(self, dim: int, hidden: int, opts: _Opts, *, rngs: nnx.Rngs):
        self.linear1 = _linear(dim, hidden, opts, rngs)
        self.linear2 = _linear(hidden, dim, opts, rngs)

    def __call__(self, x: Array) -> Array:
        return self.linear2(jax.nn.gelu(self.linear1(x), approximate=False))


class SwinBlock(nnx.Module):
    """A (shifted) window attention block + MLP, both pre-norm residual. `(B, D, H, W, C)` in/out."""

    def __init__(self, dim: int, num_heads: int, window: tuple[int, int, int], shifted: bool,
                 cfg: SwinUNETRConfig, opts: _Opts, *, rngs: nnx.Rngs):
        self.window = tuple(window)
        self.shift = tuple(w // 2 for w in window) if shifted else (0, 0, 0)
        self.attention_batch = cfg.attention_batch
        self.norm1 = _layer_norm(dim, opts, rngs)
        self.attn = WindowAttention(dim, num_heads, window, cfg.qkv_bias, opts, rngs=rngs)
        self.norm2 = _layer_norm(dim, opts, rngs)
        self.mlp = MLP(dim, int(dim * cfg.mlp_ratio), opts, rngs=rngs)

    def attention_part(self, x: Array) -> Array:
        b, d, h, w, c = x.shape
        window, shift = window_and_shift((d, h, w), self.window, self.shift)
        x = self.norm1(x)
        pads = [(-n) % wn for n, wn in zip((d, h, w), window)]
        # Padding after the norm, as MONAI: the zero tokens join attention unmasked.
        x = jnp.pad(x, [(0, 0)] + [(0, p) for p in pads] + [(0, 0)])
        dp, hp, wp = d + pads[0], h + pads[1], w + pads[2]
        shifted = any(s > 0 for s in shift)
        if shifted:
            x = jnp.roll(x, [-s for s in shift], axis=(1, 2, 3))
        wd, wh, ww = window
        xw = x.reshape(b, dp // wd, wd, hp // wh, wh, wp // ww, ww, c)
        xw = xw.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, wd * wh * ww, c)
        regions = shift_regions((dp, hp, wp), window, shift) if shifted else None
        if 0 < self.attention_batch < b:
            # One sample's windows per step (they share the mask): bounded score memory.
            per_sample = xw.reshape(b, -1, wd * wh * ww, c)
            yw = jax.lax.map(lambda xs: self.attn(xs, None, regions), per_sample,
                             batch_size=self.attention_batch).reshape(xw.shape)
        else:
            yw = self.attn(xw, None, regions)
        y = yw.reshape(b, dp // wd, hp // wh, wp // ww, wd, wh, ww, c)
        y = y.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, dp, hp, wp, c)
        if shifted:
            y = jnp.roll(y, shift, axis=(1, 2, 3))
        return y[:, :d, :h, :w]

    def __call__(self, x: Array) -> Array:
        x = x + self.attention_part(x)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nnx.Module):
    """Concatenate the 8 voxels of every 2^3 cell (order by `offsets`), LayerNorm, Linear 8C->2C."""

    def __init__(self, dim: int, offsets: Sequence[tuple[int, int, int]], opts: _Opts, *,
                 rngs: nnx.Rngs):
        self.offsets = tuple(tuple(o) for o in offsets)
        self.norm = _layer_norm(8 * dim, opts, rngs)
        self.reduction = _linear(8 * dim, 2 * dim, opts, rngs, bias=False)

    def __call__(self, x: Array) -> Array:
        b, d, h, w, c = x.shape
        # MONAI pads odd sizes at the end with zeros.
        x = jnp.pad(x, [(0, 0), (0, d % 2), (0, h % 2), (0, w % 2), (0, 0)])
        parts = [x[:, i::2, j::2, k::2] for i, j, k in self.offsets]
        return self.reduction(self.norm(jnp.concatenate(parts, axis=-1)))


class SwinStage(nnx.Module):
    """`depth` blocks alternating plain and shifted windows, then PatchMerging (MONAI BasicLayer)."""

    def __init__(self, dim: int, depth: int, num_heads: int, cfg: SwinUNETRConfig, opts: _Opts, *,
                 rngs: nnx.Rngs):
        self.blocks = nnx.List([SwinBlock(dim, num_heads, cfg.window_size, i % 2 == 1, cfg, opts,
                                          rngs=rngs) for i in range(depth)])
        self.downsample = PatchMerging(dim, MERGING_OFFSETS[cfg.merging_order], opts, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x)


class SwinViT(nnx.Module):
    """Patch embedding + 4 stages. `(B, D, H, W, Cin)` -> 5 feature maps (see module docstring)."""

    def __init__(self, cfg: SwinUNETRConfig, opts: _Opts, *, rngs: nnx.Rngs):
        self.normalize = cfg.normalize
        p = cfg.patch_size
        self.patch_embed = nnx.Conv(cfg.in_channels, cfg.feature_size, (p, p, p), strides=p,
                                    padding="VALID", use_bias=True, dtype=opts.dtype,
                                    precision=opts.precision, rngs=rngs)
        dims = [cfg.feature_size * 2**i for i in range(4)]
        self.layers = nnx.List([SwinStage(dims[i], cfg.depths[i], cfg.num_heads[i], cfg, opts, rngs=rngs)
                                for i in range(4)])
        self.layers_c = (nnx.List([UnetResBlock(d, d, opts, rngs=rngs) for d in dims])
                         if cfg.use_v2 else None)

    def _out(self, x: Array) -> Array:
        return _plain_layer_norm(x) if self.normalize else x

    def __call__(self, x: Array) -> tuple[Array, ...]:
        x = self.patch_embed(x)
        outs = [self._out(x)]
        for i, stage in enumerate(self.layers):
            if self.layers_c is not None:
                x = self.layers_c[i](x)
            x = stage(x)
            outs.append(self._out(x))
        return tuple(outs)


# ----------------------------------------------------------------------------------------------
# Convolutional encoder / decoder (MONAI dynunet / unetr blocks)

class UnetResBlock(nnx.Module):
    """conv3-IN-LReLU-conv3-IN (+ residual, projected by conv1-IN when channels change) -> LReLU."""

    def __init__(self, cin: int, cout: int, opts: _Opts, *, rngs: nnx.Rngs):
        self.conv1 = _conv(cin, cout, 3, opts, rngs)
        self.conv2 = _conv(cout, cout, 3, opts, rngs)
        self.conv3 = _conv(cin, cout, 1, opts, rngs) if cin != cout else None

    def __call__(self, x: Array) -> Array:
        out = jax.nn.leaky_relu(_instance_norm(self.conv1(x)), 0.01)
        out = _instance_norm(self.conv2(out))
        res = _instance_norm(self.conv3(x)) if self.conv3 is not None else x
        return jax.nn.leaky_relu(out + res, 0.01)


class TransposedConv2(nnx.Module):
    """Transposed conv, kernel 2 stride 2, no bias: every input voxel writes its own 2^3 block.

    The kernel is `(2, 2, 2, in, out)`; torch's `(in, out, 2, 2, 2)` transposed to it.
    """

    def __init__(self, cin: int, cout: int, opts: _Opts, *, rngs: nnx.Rngs):
        self.opts = opts
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (2, 2, 2, cin, cout)))

    def __call__(self, x: Array) -> Array:
        b, d, h, w, _ = x.shape
        k = self.kernel[...].astype(self.opts.dtype)
        y = jnp.einsum("bdhwi,xyzio->bdxhywzo", x.astype(self.opts.dtype), k,
                       precision=self.opts.precision)
        return y.reshape(b, 2 * d, 2 * h, 2 * w, -1)


class UpBlock(nnx.Module):
    """MONAI UnetrUpBlock: transposed conv, concat with the skip (upsampled first), UnetResBlock."""

    def __init__(self, cin: int, cout: int, opts: _Opts, *, rngs: nnx.Rngs):
        self.transp_conv = TransposedConv2(cin, cout, opts, rngs=rngs)
        self.conv_block = UnetResBlock(2 * cout, cout, opts, rngs=rngs)

    def __call__(self, x: Array, skip: Array) -> Array:
        up = self.transp_conv(x)
        return self.conv_block(jnp.concatenate([up, skip.astype(up.dtype)], axis=-1))


PARTS = ("full", "encoder", "swinvit")


class SwinUNETR(nnx.Module):
    """Swin UNETR. `parts` builds all of it ("full"), SwinViT + encoder10 ("encoder": enough for
    `encode`) or the SwinViT alone ("swinvit": self-supervised weights; `hidden_states` only)."""

    def __init__(self, cfg: SwinUNETRConfig, *, rngs: nnx.Rngs, parts: str = "full"):
        if parts not in PARTS:
            raise ValueError(f"parts must be one of {PARTS}, got {parts!r}")
        self.config = cfg
        self.parts = parts
        opts = _Opts.of(cfg)
        self.dtype = opts.dtype
        f = cfg.feature_size
        self.swinViT = SwinViT(cfg, opts, rngs=rngs)
        self.encoder10 = UnetResBlock(16 * f, 16 * f, opts, rngs=rngs) if parts != "swinvit" else None
        full = parts == "full"
        self.encoder1 = UnetResBlock(cfg.in_channels, f, opts, rngs=rngs) if full else None
        self.encoder2 = UnetResBlock(f, f, opts, rngs=rngs) if full else None
        self.encoder3 = UnetResBlock(2 * f, 2 * f, opts, rngs=rngs) if full else None
        self.encoder4 = UnetResBlock(4 * f, 4 * f, opts, rngs=rngs) if full else None
        self.decoder5 = UpBlock(16 * f, 8 * f, opts, rngs=rngs) if full else None
        self.decoder4 = UpBlock(8 * f, 4 * f, opts, rngs=rngs) if full else None
        self.decoder3 = UpBlock(4 * f, 2 * f, opts, rngs=rngs) if full else None
        self.decoder2 = UpBlock(2 * f, f, opts, rngs=rngs) if full else None
        self.decoder1 = UpBlock(f, f, opts, rngs=rngs) if full else None
        self.out = (nnx.Conv(f, cfg.out_channels, (1, 1, 1), padding="VALID", use_bias=True,
                             dtype=opts.dtype, precision=opts.precision, rngs=rngs) if full else None)

    def _check(self, x: Array) -> Array:
        if x.ndim != 5 or x.shape[-1] != self.config.in_channels:
            raise ValueError(f"expected (B, D, H, W, {self.config.in_channels}) channels-last input, "
                             f"got {x.shape}; use from_torch_layout for (B, C, D, H, W)")
        m = self.config.patch_size ** 5
        bad = [n for n in x.shape[1:4] if n % m]
        if bad:
            raise ValueError(f"spatial sizes {x.shape[1:4]} must be multiples of {m}")
        return x.astype(self.dtype)

    def hidden_states(self, x: Array) -> tuple[Array, ...]:
        """SwinViT outputs, `(B, D/2^(s+1), H/2^(s+1), W/2^(s+1), f*2^s)` for s = 0..4."""
        return self.swinViT(self._check(x))

    def encode(self, x: Array) -> tuple[tuple[Array, ...], Array]:
        """`(hidden_states[0..4], dec4)`; runs only the SwinViT and encoder10."""
        if self.encoder10 is None:
            raise ValueError("this model has no encoder10 (SwinViT-only weights): use hidden_states")
        hs = self.hidden_states(x)
        return hs, self.encoder10(hs[4])

    def __call__(self, x: Array) -> Array:
        """Segmentation logits `(B, D, H, W, out_channels)`."""
        return self.encode_and_segment(x)[2]

    def encode_and_segment(self, x: Array) -> tuple[tuple[Array, ...], Array, Array]:
        """`(hidden_states, dec4, logits)` from one pass (what `encode` and `__call__` give)."""
        if self.parts != "full":
            raise ValueError(f"a parts={self.parts!r} model has no decoder; build parts='full'")
        x = self._check(x)
        hs = self.swinViT(x)
        enc0 = self.encoder1(x)
        enc1 = self.encoder2(hs[0])
        enc2 = self.encoder3(hs[1])
        enc3 = self.encoder4(hs[2])
        dec4 = self.encoder10(hs[4])
        dec3 = self.decoder5(dec4, hs[3])
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        dec0 = self.decoder2(dec1, enc1)
        out = self.decoder1(dec0, enc0)
        return hs, dec4, self.out(out)


def encode_fn(graphdef: nnx.GraphDef, state: nnx.State, x: Array) -> tuple[tuple[Array, ...], Array]:
    """Pure `encode` for `jax.jit(functools.partial(encode_fn, graphdef))`."""
    return nnx.merge(graphdef, state).encode(x)


def forward_fn(graphdef: nnx.GraphDef, state: nnx.State, x: Array) -> Array:
    """Pure segmentation forward for `jax.jit(functools.partial(forward_fn, graphdef))`."""
    return nnx.merge(graphdef, state)(x)
