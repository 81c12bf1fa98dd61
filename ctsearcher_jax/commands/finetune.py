"""`ctsearcher finetune --model PATH --workdir W`: ScanMatch-reward fine-tuning (self-critical)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("fine-tune a trained CT-Searcher with a ScanMatch reward (K samples per CT and reader, "
        "mean-reward baseline, lr x0.1 decaying linearly); resumes from WORKDIR by itself")


COMPILES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctsearcher_jax.flags import ListAction, alias

    model = parser.add_argument("--model", dest="source", metavar="PATH",
                                help="the model to start from: a training run folder (its model/) "
                                     "or a model folder (default when resuming: the one in "
                                     "WORKDIR/config.yaml)")
    alias(parser, "--from", model)
    parser.add_argument("--workdir", required=True, metavar="DIR",
                        help="fine-tuning run folder: checkpoints/, tb/, metrics.jsonl, model/")
    parser.add_argument("--set", dest="overrides", action=ListAction, default=[],
                        metavar="KEY=VALUE",
                        help="override keys, e.g. --set finetune.samples=8 "
                             "finetune.supervised_weight=0.1 (model.* is fixed by the source)")


def run(args: argparse.Namespace) -> int:
    from ctsearcher_jax.config import load
    from ctsearcher_jax.errors import ConfigError
    from ctsearcher_jax.train.finetune import finetune_config

    resolved = Path(args.workdir) / "config.yaml"
    if args.source is not None:
        config = finetune_config(args.source, args.overrides)
    elif resolved.is_file():
        config = load(resolved, args.overrides)  # already a fine-tuning config: lr scaled once
        if not config.finetune.source:
            raise ConfigError(f"{resolved} is not a fine-tuning run; pass --model PATH")
    else:
        raise ConfigError(f"--model is required: {resolved} does not exist (new fine-tuning run)")

    import jax

    from ctsearcher_jax.runtime.folder_lock import locked
    from ctsearcher_jax.train.loop import train_and_evaluate

    with locked(args.workdir, command="finetune", flag="--workdir",
                writer=jax.process_index() == 0):
        result = train_and_evaluate(config, args.workdir, echo=print)
    print(f"{result.status}: step {result.step}/{result.total_steps}; model in "
          f"{Path(args.workdir) / 'model'}")
    return 0
