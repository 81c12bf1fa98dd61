"""The `ctsearcher` command line.

Each subcommand lives in its own module under `ctsearcher_jax/commands/` and exposes `HELP`,
`add_arguments(parser)` and `run(args) -> int`. Command modules import heavy libraries (JAX, torch)
inside `run`, so `ctsearcher --help` stays fast.

Every command's flags follow one vocabulary (`ctsearcher_jax/flags.py`, docs/cli.md);
each `--help` shows the defaults. Diagnostics go through `logging` (`ctsearcher_jax.logs`;
`-v`/`-q` set the level, before or after the command name); results (tables, paths) go to stdout. Errors from the project's hierarchy (`ctsearcher_jax.errors`) become one line on stderr and exit
code 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from ctsearcher_jax._version import __version__
from ctsearcher_jax.errors import CTSearcherError
from ctsearcher_jax.paths import os_error

# Subcommand name -> module in ctsearcher_jax.commands (kept in the order `--help` lists them).
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "synth": "synth",
    "validate-data": "validate_data",
    "convert-monai": "convert_monai",
    "extract": "extract",
    "train": "train",
    "finetune": "finetune",
    "predict": "predict",
    "evaluate": "evaluate",
    "baselines": "baselines",
    "visualize": "visualize",
    "view": "view",
    "report": "report",
    "import-upstream": "import_upstream",
    "devices": "devices",
    "plan": "plan",
}


def build_parser() -> argparse.ArgumentParser:
    from ctsearcher_jax.flags import HelpFormatter, global_flags

    parser = argparse.ArgumentParser(
        prog="ctsearcher", formatter_class=HelpFormatter,
        description="CT-Searcher in JAX: 3D radiologist scanpaths on CT volumes.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    global_flags(parser, compiles=True, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    parser.command_parsers = {}  # type: ignore[attr-defined]
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"ctsearcher_jax.commands.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP,
                           formatter_class=HelpFormatter)
        module.add_arguments(p)
        # the global flags that act in this command, after its own (a group of their own)
        global_flags(p, compiles=getattr(module, "COMPILES", False))
        p.set_defaults(_run=module.run, _extracts=getattr(module, "EXTRACTS", False))
        parser.command_parsers[name] = p  # type: ignore[attr-defined]
    return parser


def main(argv: list[str] | None = None, *, parent: argparse.Namespace | None = None) -> int:
    """Run one command; the exit code. `parent`: the arguments of a command that runs this one
    in its process (the demo's stages): its logging, compilation cache and --debug stand, so
    `ctsearcher -q demo` is quiet in every stage."""
    from ctsearcher_jax.flags import missing_required

    parser = build_parser()
    args = parser.parse_args(argv)
    command_parser = parser.command_parsers[args.command]
    missing = missing_required(command_parser, args)
    if missing:
        command_parser.error(f"the following arguments are required: {', '.join(missing)}")
    if parent is not None:
        args.debug = bool(args.debug or parent.debug)
    else:
        from ctsearcher_jax import logs

        logs.setup(args.verbose + args.sub_verbose - args.quiet - args.sub_quiet)
        from ctsearcher_jax.runtime import allocator, compile_cache, platforms

        platforms.skip_absent_tpu()  # libtpu installed on a host without TPUs: no backend warnings
        if args._extracts:
            allocator.for_extraction()  # before XLA's threads: no page faults on every call

        compile_cache.configure(enabled=not args.no_compile_cache)
    try:
        return int(args._run(args) or 0)
    except CTSearcherError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"ctsearcher {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ctsearcher {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, MemoryError) as exc:
        # A write or read the command did not wrap (disk full, permissions, out of memory):
        # still one line naming the file and the cause; earlier results are intact.
        if args.debug:
            traceback.print_exc()
        if isinstance(exc, MemoryError):
            what = "out of memory; use a smaller input or a machine with more memory"
        else:
            what = str(os_error(None, exc, "cannot read or write"))
        print(f"ctsearcher {args.command}: error: {what}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
