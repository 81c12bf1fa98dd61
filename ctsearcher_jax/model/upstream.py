"""The original (PyTorch) CT-Searcher `state_dict` <-> our NNX model: names, shapes, config.

Every torch key maps to one of our variables with a fixed transform: Linear/attention weights are
(out, in) in torch and (in, out) kernels here (transpose); `stop_token` (1, 1, d) -> (d,);
`pos_embed.pos` (N, 1, d) -> (N, d) (the stored table, which the original made random, is loaded as
is); everything else is copied. Unknown or missing keys and wrong shapes raise WeightsError listing
all of them. The architecture is read from the shapes (`infer_config`).
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ctsearcher_jax.config import ModelConfig
from ctsearcher_jax.errors import WeightsError

Path = tuple[Any, ...]

_LINEAR = {"weight": ("kernel", "T"), "bias": ("bias", None)}
_NORM = {"weight": ("scale", None), "bias": ("bias", None)}


def _linear(torch_prefix: str, path: Path) -> Iterator[tuple[str, Path, str | None]]:
    for suffix, (leaf, transform) in _LINEAR.items():
        yield f"{torch_prefix}.{suffix}", (*path, leaf), transform


def _attention(torch_prefix: str, path: Path) -> Iterator[tuple[str, Path, str | None]]:
    yield f"{torch_prefix}.in_proj_weight", (*path, "in_proj", "kernel"), "T"
    yield f"{torch_prefix}.in_proj_bias", (*path, "in_proj", "bias"), None
    yield from _linear(f"{torch_prefix}.out_proj", (*path, "out_proj"))


def _norm(torch_prefix: str, path: Path) -> Iterator[tuple[str, Path, str | None]]:
    for suffix, (leaf, transform) in _NORM.items():
        yield f"{torch_prefix}.{suffix}", (*path, leaf), transform


def key_map(config: ModelConfig) -> list[tuple[str, Path, str | None]]:
    """(torch key, our variable path, transform) for every parameter of `config`'s model.

    transform: "T" (transpose a torch (out, in) weight), "flat" (drop torch's singleton axes) or None.
    """
    items: list[tuple[str, Path, str | None]] = []
    items += _linear("input_proj.0", ("input_proj1",))
    items += _linear("input_proj.2", ("input_proj2",))
    items.append(("stop_token", ("stop_token",), "flat"))
    items.append(("query_embed.weight", ("query_embed",), None))
    items.append(("pos_embed.pos", ("pos_table",), "flat"))
    for i in range(config.num_encoder_layers):
        t, p = f"transformer_encoder.layers.{i}", ("encoder", i)
        items += _attention(f"{t}.self_attn", (*p, "self_attn"))
        items += _linear(f"{t}.linear1", (*p, "feed_forward", "linear1"))
        items += _linear(f"{t}.linear2", (*p, "feed_forward", "linear2"))
        items += _norm(f"{t}.norm1", (*p, "norm1"))
        items += _norm(f"{t}.norm2", (*p, "norm2"))
    for i in range(config.num_decoder_layers):
        t, p = f"transformer_decoder.layers.{i}", ("decoder", i)
        items += _attention(f"{t}.self_attn", (*p, "self_attn"))
        items += _attention(f"{t}.multihead_attn", (*p, "cross_attn"))
        items += _linear(f"{t}.linear1", (*p, "feed_forward", "linear1"))
        items += _linear(f"{t}.linear2", (*p, "feed_forward", "linear2"))
        for n in (1, 2, 3):
            items += _norm(f"{t}.norm{n}", (*p, f"norm{n}"))
    items += _linear("spatial_fc", ("spatial_fc",))
    for head in ("duration_mu", "duration_logvar"):
        items += _linear(f"{head}.0", (head, "linear1"))
        items += _linear(f"{head}.2", (head, "linear2"))
    return items


def get_path(tree: Any, path: Path) -> Any:
    """Follow `path` through a module (attributes, list indices) or an nnx.State (keys)."""
    node = tree
    for part in path:
        if isinstance(part, int) or not hasattr(node, part):
            node = node[part]
        else:
            node = getattr(node, part)
    return node


def to_torch_layout(value: np.ndarray, transform: str | None, torch_shape: tuple[int, ...]) -> np.ndarray:
    """Our array -> the torch parameter's layout."""
    value = np.asarray(value)
    if transform == "T":
        return value.T
    if transform == "flat":
        return value.reshape(torch_shape)
    return value


def from_torch_layout(value: np.ndarray, transform: str | None) -> np.ndarray:
    """A torch parameter -> our layout."""
    if transform == "T":
        return np.ascontiguousarray(value.T)
    if transform == "flat":
        return value.reshape(value.shape[0], -1) if value.ndim == 3 and value.shape[0] > 1 \
            else value.reshape(-1)
    return value


def strip_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Drop Lightning's `model.` prefix when every key has it."""
    if state and all(k.startswith("model.") for k in state):
        return {k[len("model."):]: v for k, v in state.items()}
    return dict(state)


def infer_config(state: Mapping[str, np.ndarray], source: str = "<state dict>", *,
                 num_heads: int = 8) -> ModelConfig:
    """The ModelConfig of an original state dict, read from its shapes.

    The head count is not in a state dict (it does not change any shape): pass the training run's
    --nhead (the original's default is 8).

    The original's grid is 8x8x8, its stop token is last, and the PE table is the stored one
    (pe="legacy_random" names that kind of table; the import then overwrites it with the stored values).
    """
    need = ["input_proj.0.weight", "query_embed.weight", "pos_embed.pos",
            "transformer_encoder.layers.0.linear1.weight"]
    missing = [k for k in need if k not in state]
    if missing:
        raise WeightsError(f"{source}: not a CT-Searcher state dict (missing {missing}); expected the "
                           "original's keys such as input_proj.0.weight, optionally prefixed 'model.'")
    d, feature_dim = state["input_proj.0.weight"].shape
    max_length = state["query_embed.weight"].shape[0]
    ff = state["transformer_encoder.layers.0.linear1.weight"].shape[0]
    pattern = re.compile(r"transformer_(encoder|decoder)\.layers\.(\d+)\.")
    layers = {"encoder": set(), "decoder": set()}
    for key in state:
        m = pattern.match(key)
        if m:
            layers[m.group(1)].add(int(m.group(2)))
    num_tokens = state["pos_embed.pos"].shape[0]
    if num_tokens != 512:
        raise WeightsError(f"{source}: pos_embed.pos has {num_tokens} rows; the original's grid is 8x8x8 "
                           "(512 tokens)")
    if d % num_heads:
        raise WeightsError(f"{source}: d_model {d} is not divisible by num_heads {num_heads}; "
                           "pass the --nhead the checkpoint was trained with")
    return ModelConfig(d_model=int(d), num_heads=num_heads, num_encoder_layers=len(layers["encoder"]),
                       num_decoder_layers=len(layers["decoder"]), dim_feedforward=int(ff),
                       dropout=0.0, feature_dim=int(feature_dim), grid=(8, 8, 8),
                       max_length=int(max_length), pe="legacy_random", legacy_stop_last=True)


def _torch_flat_shape(key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """torch's shape of the parameters we store without singleton axes."""
    if key == "stop_token":
        return (1, 1, shape[-1])
    if key == "pos_embed.pos":
        return (shape[0], 1, shape[-1])
    return tuple(shape)


def check_state(state: Mapping[str, np.ndarray], model: Any, source: str = "<state dict>") -> None:
    """Raise WeightsError listing unknown keys, missing keys and shape mismatches against
    `model` (built, or abstract: `serialization.unfilled_model`)."""
    config = model.config
    expected = {}
    for key, path, transform in key_map(config):
        shape = tuple(get_path(model, path).shape)
        if transform == "T":
            shape = shape[::-1]
        elif transform == "flat":
            shape = _torch_flat_shape(key, shape)
        expected[key] = shape
    unknown = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    wrong = [f"{k}: {tuple(np.shape(state[k]))} != {expected[k]}" for k in expected
             if k in state and tuple(np.shape(state[k])) != expected[k]]
    problems = []
    if unknown:
        problems.append(f"unknown keys {unknown}")
    if missing:
        problems.append(f"missing keys {missing}")
    if wrong:
        problems.append(f"wrong shapes {wrong}")
    if problems:
        raise WeightsError(f"{source}: does not match a CT-Searcher with {config}: " + "; ".join(problems)
                           + ". Is it an original CT-Searcher checkpoint?")


def load_upstream_state(model: Any, state: Mapping[str, np.ndarray], source: str = "<state dict>") -> None:
    """Copy an original state dict (already prefix-stripped, numpy arrays) into `model` in place
    (a built model, or `serialization.unfilled_model`'s: every variable of `key_map` is set)."""
    check_state(state, model, source)
    for key, path, transform in key_map(model.config):
        value = np.asarray(state[key], dtype=np.float32)
        get_path(model, path).set_value(jnp.asarray(from_torch_layout(value, transform)))


def state_to_upstream(tree: Any, config: ModelConfig) -> dict[str, np.ndarray]:
    """Our model (or a gradient nnx.State) -> {torch key: array in torch layout}.

    Keys absent from `tree` (e.g. the fixed PE table in a gradient of nnx.Param) are left out.
    """
    out = {}
    for key, path, transform in key_map(config):
        try:
            value = get_path(tree, path)
        except (KeyError, AttributeError):
            continue
        value = np.asarray(value.get_value() if isinstance(value, nnx.Variable) else value)
        out[key] = to_torch_layout(value, transform, _torch_flat_shape(key, value.shape))
    return out
