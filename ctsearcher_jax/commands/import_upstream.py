"""`ctsearcher import-upstream CKPT --out DIR`: convert an original CT-Searcher checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("convert an original (PyTorch) CT-Searcher checkpoint - a Lightning .ckpt or a plain "
        "state dict - into our model folder (model.safetensors, config.json/yaml, README.md model card)")


COMPILES = True  # builds the model with JAX


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctsearcher_jax.flags import alias

    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="original checkpoint: Lightning .ckpt (keys 'model.*' under "
                             "'state_dict') or a torch.save'd state dict")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="output folder (must not hold a model yet, unless --force)")
    parser.add_argument("--num-heads", type=int, default=8, metavar="N",
                        help="attention heads the checkpoint was trained with (--nhead; the "
                             "original's default is 8; not recoverable from the weights)")
    force = parser.add_argument("--force", action="store_true",
                                help="replace an existing model in --out")
    alias(parser, "--overwrite", force)


def run(args: argparse.Namespace) -> int:
    from ctsearcher_jax.errors import WeightsError
    from ctsearcher_jax.model import serialization
    from ctsearcher_jax.paths import check_output_dir, check_output_file

    out = check_output_dir(args.out)
    for name in (serialization.WEIGHTS, serialization.CONFIG_JSON, serialization.CONFIG,
                 serialization.CARD):
        check_output_file(out / name, inputs=[args.checkpoint])
    if (out / serialization.WEIGHTS).exists() and not args.force:
        raise WeightsError(f"{out / serialization.WEIGHTS} already exists; choose another --out or "
                           "pass --force")
    state = read_torch_state_dict(args.checkpoint)
    model, config = import_state_dict(state, source=str(args.checkpoint), num_heads=args.num_heads)
    serialization.save_model(out, model, config, card={"source": str(args.checkpoint)})
    c = config.model
    print(f"imported {len(state)} tensors from {args.checkpoint}: d_model {c.d_model}, heads "
          f"{c.num_heads}, {c.num_encoder_layers}+{c.num_decoder_layers} layers, ff "
          f"{c.dim_feedforward}, max_length {c.max_length}, grid {c.grid}, legacy_stop_last, "
          f"stored PE table")
    print(f"wrote {out / serialization.WEIGHTS}, {out / serialization.CONFIG_JSON}, "
          f"{out / serialization.CONFIG} and {out / serialization.CARD}")
    return 0


def read_torch_state_dict(path: str | Path) -> dict:
    """Read a .ckpt / state dict with torch.load(weights_only=True) -> {key: float32 numpy array}.

    The `model.` prefix of a Lightning checkpoint is removed. Raises WeightsError when torch is
    missing, the file is not loadable without unsafe unpickling, or a value is not a tensor.
    """
    from ctsearcher_jax.errors import WeightsError
    from ctsearcher_jax.model.upstream import strip_prefix
    from ctsearcher_jax.tensors import check_weight_tensors
    from ctsearcher_jax.torch_files import load_weights_only

    path = Path(path)
    obj = load_weights_only(path, _lightning_stand_ins())
    import torch  # present: load_weights_only needed it

    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state dict (a mapping of names to tensors), got "
                           f"{type(obj).__name__}")
    state = {}
    for key, value in strip_prefix(obj).items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        value = value.detach().cpu()
        # every key of a CT-Searcher state dict is a weight: integer or NaN/inf tensors are refused
        # here, by name, before they are cast to float32
        state[key] = (value.to(torch.float32) if value.is_floating_point() else value).numpy()
    check_weight_tensors(state, str(path))
    return state


def import_state_dict(state: dict, *, source: str, num_heads: int = 8):
    """Original state dict (numpy) -> (CTSearcher, Config) with every key and shape checked."""
    from ctsearcher_jax.config import Config
    from ctsearcher_jax.errors import WeightsError
    from ctsearcher_jax.model.serialization import require_filled, unfilled_model
    from ctsearcher_jax.model.upstream import infer_config, load_upstream_state

    model_config = infer_config(state, source, num_heads=num_heads)
    model = unfilled_model(model_config)  # no random draw: every tensor comes from `state`
    load_upstream_state(model, state, source)
    require_filled(model, source, WeightsError)
    return model, Config(model=model_config)


def _lightning_stand_ins() -> list[tuple[type, str]]:
    """Read Lightning's AttributeDict (the saved hyper-parameters) as a plain OrderedDict, so
    weights_only loading accepts real Lightning checkpoints without importing Lightning."""
    import collections

    return [(collections.OrderedDict, f"{module}.AttributeDict")
            for module in ("pytorch_lightning.utilities.parsing", "lightning_fabric.utilities.data",
                           "lightning.fabric.utilities.data")]
