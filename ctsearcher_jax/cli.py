"""The `ctsearcher` command line.

Each subcommand lives in its own module under `ctsearcher_jax/commands/` and exposes `HELP`,
`add_arguments(parser)` and `run(args) -> int`. Command modules import heavy libraries (JAX, torch)
inside `run`, so `ctsearcher --help` stays fast.

Diagnostics go through `logging` (`ctsearcher_jax.logs`; `-v`/`-q` set the level, before or after
the command name); results (tables, paths) go to stdout. Errors from the project's hierarchy (`ctsearcher_jax.errors`) become one line on stderr and exit
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
    parser = argparse.ArgumentParser(
        prog="ctsearcher",
        description="CT-Searcher in JAX: 3D radiologist scanpaths on CT volumes.")
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks instead of one-line error messages")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not read or write the persistent XLA compilation cache "
                             "(default: on, in ~/.cache/ctsearcher-jax/jax; env "
                             "CTSEARCHER_COMPILE_CACHE=0 also turns it off, =DIR moves it)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _verbosity_flags(parser, "")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"ctsearcher_jax.commands.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show full tracebacks instead of one-line error messages")
        p.add_argument("--no-compile-cache", action="store_true", default=argparse.SUPPRESS,
                       help="do not use the persistent XLA compilation cache")
        _verbosity_flags(p, "sub_")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _verbosity_flags(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.add_argument("-v", "--verbose", dest=f"{prefix}verbose", action="count", default=0,
                        help="more diagnostics on stderr (-v: debug)")
    parser.add_argument("-q", "--quiet", dest=f"{prefix}quiet", action="count", default=0,
                        help="fewer diagnostics on stderr (-q: warnings and errors, -qq: errors); "
                             "results still go to stdout")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ctsearcher_jax import logs

    logs.setup(args.verbose + args.sub_verbose - args.quiet - args.sub_quiet)
    from ctsearcher_jax.runtime import compile_cache, platforms

    platforms.skip_absent_tpu()  # libtpu installed on a host without TPUs: no backend warnings

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
