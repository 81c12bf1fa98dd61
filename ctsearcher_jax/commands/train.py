"""`ctsearcher train --config C --workdir W [--set k=v ...]`: train, or resume the run in W."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

HELP = ("train CT-Searcher (resumes from WORKDIR's checkpoints by itself; SIGTERM saves and "
        "exits 0); multi-host under SLURM / TPU pods or with --coordinator")


COMPILES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ctsearcher_jax.commands.extract import _multiprocess_flags
    from ctsearcher_jax.flags import ListAction

    parser.add_argument("--config", metavar="CONFIG",
                        help="YAML config file or bundled config name (paper, tiny); default when "
                             "resuming: WORKDIR/config.yaml")
    parser.add_argument("--workdir", metavar="DIR",
                        help="run folder: checkpoints/, tb/, metrics.jsonl, config.yaml, "
                             "inputs.json, model/ (required unless --print-config; default: none)")
    parser.add_argument("--set", dest="overrides", action=ListAction, default=[],
                        metavar="KEY=VALUE",
                        help="override config keys, e.g. --set train.lr=3e-4 data.eval_split=test")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar: a log line every train.log_every steps instead "
                             "(what a non-terminal stderr gets anyway)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (file + --set) as YAML and exit")
    _multiprocess_flags(parser)
    parser.add_argument("--distributed", action="store_true",
                        help="always call jax.distributed.initialize() and let JAX detect the "
                             "cluster (TPU pods, clusters the automatic check does not know)")


def run(args: argparse.Namespace) -> int:
    from ctsearcher_jax.config import dumps, load
    from ctsearcher_jax.errors import ConfigError, OutputError
    from ctsearcher_jax.model.factory import check_architecture, check_sampling
    from ctsearcher_jax.paths import check_output_dir
    from ctsearcher_jax.train.distributed import maybe_initialize

    config_path = args.config
    if args.workdir is None and not (args.print_config and config_path is not None):
        raise ConfigError("--workdir is required (the run folder to create or resume)")
    if config_path is None:
        resolved = Path(args.workdir) / "config.yaml"
        if not resolved.is_file():
            raise ConfigError(f"--config is required: {resolved} does not exist (new run)")
        config_path = resolved
    config = load(config_path, args.overrides)
    check_architecture(config.model)
    check_sampling(config.model.arch, config.eval.temperature, config.eval.top_k)
    if args.print_config:
        print(dumps(config), end="")
        return 0
    check_output_dir(args.workdir, flag="--workdir")  # before compiling anything
    maybe_initialize(coordinator=args.coordinator, num_processes=args.num_processes,
                     process_id=args.process_id, force=args.distributed)
    from ctsearcher_jax.runtime.devices import describe, startup_line

    devices = describe()
    # every process: a host that sees no accelerator stands out
    logging.getLogger(__name__).info(startup_line(devices))

    import jax

    from ctsearcher_jax.runtime.folder_lock import locked

    # one writer per workdir: a second `train` there stops here (only process 0 writes its logs)
    with locked(args.workdir, command="train", flag="--workdir", writer=jax.process_index() == 0):
        if jax.process_index() == 0:
            from ctsearcher_jax.provenance import collect, record_launch

            Path(args.workdir).mkdir(parents=True, exist_ok=True)
            record_launch(args.workdir, {**collect(devices), "startup": startup_line(devices),
                                         "argv": sys.argv[1:]})

        from ctsearcher_jax.train.loop import train_and_evaluate

        try:
            result = train_and_evaluate(config, args.workdir, progress=not args.no_progress)
        except OutputError as exc:
            _exit_if_writer_stuck(exc)
            raise
    if jax.process_index() == 0:
        print(f"{result.status}: step {result.step}/{result.total_steps}; "
              f"checkpoints in {Path(args.workdir) / 'checkpoints'}"
              + (f" (best: step {result.best_step})" if result.best_step is not None else ""))
        print(f"TensorBoard: tensorboard --logdir {Path(args.workdir) / 'tb'}")
    return 0


def _exit_if_writer_stuck(exc: Exception) -> None:
    """Report a failed checkpoint write and leave at once when a writer thread is still alive.

    Orbax leaves a background thread of an aborted save waiting; a normal exit would wait for it
    and then print its tracebacks at interpreter shutdown (hundreds of lines after our one-line
    error). Everything committed is on disk and the tracker is closed, so exiting now loses
    nothing.
    """
    import os
    import sys
    import threading

    alive = [t for t in threading.enumerate()
             if t is not threading.main_thread() and t.is_alive() and not t.daemon]
    if not alive:
        return
    print(f"ctsearcher train: error: {exc}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2)
