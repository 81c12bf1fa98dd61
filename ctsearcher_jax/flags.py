"""The command line's vocabulary: every long flag of every command, decided once.

A flag name means one thing in every command that has it (`FLAGS`; docs/cli.md is
the same table, and tests/test_cli_vocabulary.py walks the argparse tree against both):

- an input folder or file is a noun (`--data`, `--ct-dir`, `--features`, `--model`, `--pred`,
  `--swin-weights`); a count is `--num-*` (exactly N), `--max-*` / `--min-*` (a bound) or a unit
  (`--epochs`, `--samples`, `--workers`);
- a list takes space-separated values and may be repeated: `--reader 1 2` = `--reader 1
  --reader 2` (`ListAction`); values given replace the default;
- `--force` means one thing: replace output that is already there (otherwise refused);
  `extract --recompute` re-extracts features that are up to date;
- every `--help` shows each option's default (`HelpFormatter`), the config's value where a
  config decides (`config_default`).

Old names stay as hidden aliases that print a deprecation warning (`alias`, `DEPRECATED`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from typing import Any

from ctsearcher_jax.config import bundled_configs, load

# kind: what argparse must make of it (checked by the test)
#   switch  no value (store_true / count)      int, float  one number
#   choice  one of a fixed set                 text        one string
#   path    a file or folder                   list        ListAction (space-separated, repeatable)
#   tuple   a fixed number of values (nargs=N)


@dataclasses.dataclass(frozen=True)
class Flag:
    """One entry of the vocabulary: its kind, its metavar (None for a switch) and its meaning."""

    kind: str
    metavar: str | None
    meaning: str


FLAGS: dict[str, Flag] = {
    # inputs
    "--data": Flag("path", "DIR", "a dataset folder (data_simplified_split_matched_pt.json and "
                   "cts/) or its JSON"),
    "--ct-dir": Flag("path", "DIR", "a folder of NIfTI CT volumes (.nii/.nii.gz)"),
    "--features": Flag("path", "DIR", "a feature folder (`extract`'s output: one .npy per CT "
                       "and manifest.json)"),
    "--model": Flag("path", "PATH", "the model to use: a model folder or a training run folder "
                    "(its model/)"),
    "--swin-weights": Flag("path", "FILE", "Swin UNETR weights (`convert-monai`'s output), or "
                           "'random' for a seeded random-initialised encoder"),
    "--pred": Flag("path", "FILE", "a predictions file (dataset record format, no split)"),
    "--config": Flag("path", "CONFIG", "a YAML config file or a bundled config name (paper, tiny)"),
    "--workdir": Flag("path", "DIR", "a training run folder (checkpoints/, tb/, metrics.jsonl, "
                      "model/, report/)"),
    # outputs
    "--out": Flag("path", "PATH", "where the command writes its result (a folder or a file)"),
    "--summary-json": Flag("path", "FILE", "also write the run summary as JSON here"),
    # selection
    "--split": Flag("text", "SPLIT", "a dataset split (train, test, ...)"),
    "--name": Flag("list", "CT", "CT names (record `name` = volume file stem)"),
    "--reader": Flag("list", "ID", "reader subject ids"),
    "--reference": Flag("text", "ID", "the reader other scanpaths are scored against"),
    "--metrics": Flag("list", "FAMILY", "metric families to score"),
    "--baseline": Flag("list", "NAME", "baselines to write"),
    "--figures": Flag("list", "KIND", "figure kinds to draw"),
    "--ignore": Flag("list", "PREFIX", "checkpoint key prefixes to drop"),
    "--set": Flag("list", "KEY=VALUE", "config overrides (`section.field=value`, YAML values)"),
    # counts
    "--num-cts": Flag("int", "N", "how many CTs to make"),
    "--num-readers": Flag("int", "N", "readers per CT (synth: to make; plan: reader slots of a "
                          "batch)"),
    "--num-heads": Flag("int", "N", "attention heads of the imported model"),
    "--num-processes": Flag("int", "N", "processes of a multi-process run (with --coordinator)"),
    "--max-cts": Flag("int", "N", "at most this many CTs (the first, by file name)"),
    "--max-figure-cts": Flag("int", "N", "draw figures for at most this many CTs (0 = none)"),
    "--max-figures": Flag("int", "N", "at most this many figures"),
    "--max-problems": Flag("int", "N", "print at most this many problems"),
    "--max-voxels": Flag("int", "N", "refuse a volume whose header claims more voxels, unread"),
    "--max-pred": Flag("int", "N", "at most this many predicted scanpaths per figure"),
    "--max-side": Flag("int", "PX", "at most this many pixels per slice side"),
    "--min-fixations": Flag("int", "N", "fewest fixations per scanpath"),
    "--max-fixations": Flag("int", "N", "most fixations per scanpath"),
    "--epochs": Flag("int", "N", "training epochs"),
    "--samples": Flag("int", "N", "scanpaths sampled per CT and reader"),
    "--workers": Flag("int", "N", "loader threads"),
    "--batch": Flag("int", "N", "sliding windows per device per step"),
    "--global-batch": Flag("int", "N", "a planned program's batch per call over all its chips"),
    "--chip-batch": Flag("int", "N", "a planned program's batch per chip"),
    # numbers and settings
    "--seed": Flag("int", "SEED", "the random seed (the same seed gives the same result)"),
    "--process-id": Flag("int", "I", "this process's index (with --coordinator)"),
    "--feature-size": Flag("int", "N", "Swin UNETR width (48 = BTCV)"),
    "--dpi": Flag("int", "DPI", "PNG resolution"),
    "--overlap": Flag("float", "F", "sliding-window overlap in [0, 1)"),
    "--memory-budget": Flag("float", "GB", "memory the loaders' decoded volumes may hold at once"),
    "--hu-step": Flag("float", "HU", "quantisation step of embedded intensities"),
    "--shape": Flag("tuple", "I J K", "voxels per volume: rows, columns, slices"),
    "--coordinator": Flag("text", "HOST:PORT", "process 0 of a multi-process run without "
                          "SLURM/TPU auto-detection"),
    "--window": Flag("text", "WINDOW", "CT window: soft, lung, bone, auto or WIDTH,LEVEL in HU"),
    "--z-extent": Flag("text", "K", "slice count for Z: volume (each CT's) or an integer"),
    "--title": Flag("text", "TEXT", "the report's title"),
    "--topology": Flag("text", "TOPOLOGY", "a TPU slice as chip:shape (v5e:2x2, v5p:4x4x4)"),
    "--dtype": Flag("choice", None, "encoder compute dtype"),
    "--merge": Flag("choice", None, "how window features are combined"),
    "--merging-order": Flag("choice", None, "PatchMerging order of the weights"),
    "--parts": Flag("choice", None, "parts of the checkpoint to keep"),
    "--protocol": Flag("choice", None, "which pairs are scored"),
    "--multimatch-alignment": Flag("choice", None, "MultiMatch saccade alignment"),
    "--sed-code": Flag("choice", None, "SED character code"),
    "--projection": Flag("choice", None, "projection of the windowed volume"),
    "--require": Flag("choice", None, "the JAX backend this machine must have"),
    "--program": Flag("list", "PROGRAM", "programs to compile (train, finetune, predict, "
                      "extract, all)"),
    # switches
    "--force": Flag("switch", None, "replace output that is already there (refused otherwise)"),
    "--recompute": Flag("switch", None, "recompute results that are up to date"),
    "--no-progress": Flag("switch", None, "no progress bars: plain lines"),
    "--headers-only": Flag("switch", None, "check the volumes' headers only, not their voxels"),
    "--json": Flag("switch", None, "print the result as JSON on stdout"),
    "--strict": Flag("switch", None, "an unscored CT or reader is an error"),
    "--score": Flag("switch", None, "score every scanpath against a reader and show it"),
    "--canonical": Flag("switch", None, "reorient volumes to RAS first"),
    "--no-volumes": Flag("switch", None, "do not check the CT volumes"),
    "--print-config": Flag("switch", None, "print the resolved config and exit"),
    "--largest-batch": Flag("switch", None, "find the largest batch that fits"),
    "--distributed": Flag("switch", None, "always call jax.distributed.initialize()"),
    # global (each command has those that act in it)
    "--debug": Flag("switch", None, "show tracebacks instead of one-line errors"),
    "--verbose": Flag("switch", None, "more diagnostics on stderr (-v)"),
    "--quiet": Flag("switch", None, "fewer diagnostics on stderr (-q: warnings, -qq: errors)"),
    "--no-compile-cache": Flag("switch", None, "do not use the persistent XLA compilation cache"),
    "--help": Flag("switch", None, "show the help and exit"),
    "--version": Flag("switch", None, "show the version and exit"),
}

# Former names, kept as hidden aliases that warn (old name -> new name).
DEPRECATED: dict[str, str] = {
    "--cts": "--ct-dir or --num-cts",
    "--readers": "--num-readers",
    "--weights": "--swin-weights",
    "--checkpoint": "--model",
    "--from": "--model",
    "--gt": "--data",
    "--limit": "--max-cts",
    "--figure-cts": "--max-figure-cts",
    "--overwrite": "--force",
}


class ListAction(argparse.Action):
    """A list flag: space-separated values, repeatable; the values given replace the default."""

    def __init__(self, option_strings, dest, nargs=None, **kwargs):
        super().__init__(option_strings, dest, nargs="+", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        items = [] if current is None or current is self.default else list(current)
        setattr(namespace, self.dest, items + list(values))


class CommaListAction(ListAction):
    """A list flag that took one comma-separated value before (`--figures a,b`): still read,
    with a deprecation warning."""

    def __call__(self, parser, namespace, values, option_string=None):
        if any("," in v for v in values):
            print(f"{parser.prog}: warning: comma-separated {option_string} is deprecated; "
                  f"separate the values with spaces", file=sys.stderr)
            values = [part for v in values for part in v.split(",") if part.strip()]
        super().__call__(parser, namespace, values, option_string)


class _Deprecated(argparse.Action):
    """A former flag name: warns on stderr, then acts as `target` (the flag that replaced it)."""

    def __init__(self, option_strings, dest, *, target: argparse.Action, **kwargs):
        self.target = target
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        new = self.target.option_strings[-1]
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {new}",
              file=sys.stderr)
        self.target(parser, namespace, values if self.nargs != 0 else None, new)


def alias(parser: argparse.ArgumentParser, old: str, target: argparse.Action) -> None:
    """Accept `old` (hidden from --help) for the option `target`, with a deprecation warning.

    A required `target` becomes optional to argparse (which would not count the alias) and
    `missing_required` checks it after parsing.
    """
    if target.required:
        target.required = False
        target.required_with_alias = True  # type: ignore[attr-defined]
        target.help = f"{target.help} (required)"
    kwargs: dict[str, Any] = {"nargs": target.nargs, "type": target.type,
                              "choices": target.choices, "metavar": target.metavar}
    if target.nargs == 0:
        kwargs = {"nargs": 0}
    parser.add_argument(old, dest=target.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                        action=_Deprecated, target=target, **kwargs)


def missing_required(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The required options (made optional by `alias`) that `args` lacks."""
    return [a.option_strings[-1] for a in parser._actions
            if getattr(a, "required_with_alias", False) and getattr(args, a.dest, None) is None]


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) or "none"
    return str(value)


class HelpFormatter(argparse.HelpFormatter):
    """Appends `(default: X)` to an option's help unless it already says what the default is;
    switches (off unless given) and defaults of None (the help says what happens) get nothing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if text is argparse.SUPPRESS or "default" in text.lower() or not action.option_strings:
            return text
        default = action.default
        if default is None or default is argparse.SUPPRESS or action.nargs == 0:
            return text
        return f"{text} (default: {_shown(default).replace('%', '%%')})"


@functools.cache
def _bundled() -> dict[str, Any]:
    return {name: load(path) for name, path in bundled_configs().items()}


def config_default(key: str, what: str = "") -> str:
    """'default: <key> of --config (paper 4, tiny 2)': where a config decides an option."""
    section, field = key.split(".")
    values = [f"{name} {_shown(getattr(getattr(cfg, section), field))}"
              for name, cfg in _bundled().items()]
    return f"default: {what or key} of --config ({', '.join(values)})"


def global_flags(parser: argparse.ArgumentParser, *, compiles: bool, top: bool = False) -> None:
    """The global flags that act in a command: --debug, -v, -q; --no-compile-cache where the
    command compiles with XLA. On a command they default to SUPPRESS (the top level's value
    stands unless given again after the command name)."""
    group = parser.add_argument_group("global options") if not top else parser
    keep = {} if top else {"default": argparse.SUPPRESS}
    group.add_argument("--debug", action="store_true",
                       help="show full tracebacks instead of one-line error messages", **keep)
    if compiles or top:
        group.add_argument("--no-compile-cache", action="store_true",
                           help="do not read or write the persistent XLA compilation cache "
                                "(default: on, in ~/.cache/ctsearcher-jax/jax; env "
                                "CTSEARCHER_COMPILE_CACHE=0 also turns it off, =DIR moves it)",
                           **keep)
    prefix = "" if top else "sub_"
    group.add_argument("-v", "--verbose", dest=f"{prefix}verbose", action="count", default=0,
                       help="more diagnostics on stderr (-v: debug)")
    group.add_argument("-q", "--quiet", dest=f"{prefix}quiet", action="count", default=0,
                       help="fewer diagnostics on stderr (-q: warnings and errors, -qq: errors); "
                            "results still go to stdout")


def flag_table() -> str:
    """The vocabulary as the Markdown table docs/cli.md shows."""
    rows = ["| flag | kind | meaning |", "|---|---|---|"]
    for name, flag in FLAGS.items():
        shown = f"{name} {flag.metavar}" if flag.metavar else name
        rows.append(f"| `{shown}` | {flag.kind} | {flag.meaning} |")
    return "\n".join(rows)
