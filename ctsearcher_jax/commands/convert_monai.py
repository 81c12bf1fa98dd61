"""`ctsearcher convert-monai CHECKPOINT.pt --out WEIGHTS`: MONAI SwinUNETR checkpoint -> safetensors."""

from __future__ import annotations

import argparse

HELP = "convert a MONAI SwinUNETR checkpoint (.pt) into a portable safetensors weights file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctsearcher_jax.flags import ListAction

    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="MONAI checkpoint (.pt/.pth): a state dict, nested under "
                             "state_dict/model, with or without module. prefixes, or a SwinViT-only "
                             "self-supervised checkpoint")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="weights file to write (.safetensors); a <out>.sha256 file is written "
                             "next to it")
    parser.add_argument("--merging-order", choices=("legacy", "fixed", "v2"), default="legacy",
                        help="PatchMerging order the weights were trained with: legacy = MONAI < "
                             "1.5 and the BTCV bundle, fixed = MONAI >= 1.5, v2 = mergingv2")
    parser.add_argument("--parts", choices=("full", "encoder", "swinvit"),
                        help="keep only these parts (encoder = SwinViT + encoder10, what feature "
                             "extraction needs; default: everything the checkpoint has)")
    parser.add_argument("--ignore", action=ListAction, default=[], metavar="PREFIX",
                        help="drop checkpoint keys starting with these prefixes (e.g. a "
                             "self-supervised head); other unknown keys are refused")


def run(args: argparse.Namespace) -> int:
    from ctsearcher_jax.paths import check_output_file
    from feature_extraction.convert_monai import convert_file

    check_output_file(args.out, inputs=[args.checkpoint])
    check_output_file(f"{args.out}.sha256", inputs=[args.checkpoint])
    s = convert_file(args.checkpoint, args.out, merging_order=args.merging_order, parts=args.parts,
                     ignore=args.ignore)
    c = s["config"]
    print(f"wrote {s['out']}: {s['tensors']} tensors, {s['parameters']:,} parameters, parts={s['parts']}")
    print(f"  feature_size={c.feature_size} in={c.in_channels} out={c.out_channels} depths={c.depths} "
          f"heads={c.num_heads} window={c.window_size} merging_order={c.merging_order} use_v2={c.use_v2}")
    print(f"  sha256 {s['sha256']}")
    return 0
