"""One vocabulary for the command line: the argparse tree of every command against the written-down
table (`ctsearcher_jax/flags.py`, docs/cli.md "Flag vocabulary"), defaults in every --help, former names
as warning aliases, global flags only where they act, quiet stages in the demo."""

from __future__ import annotations

import argparse
import logging

import pytest

from ctsearcher_jax import cli, logs
from ctsearcher_jax import flags as vocab

PARSER = cli.build_parser()
COMMAND_PARSERS: dict[str, argparse.ArgumentParser] = PARSER.command_parsers


def _visible(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if action.option_strings and action.help is not argparse.SUPPRESS:
            yield action


def _kind_problem(action: argparse.Action, flag: vocab.Flag) -> str | None:
    kind = flag.kind
    if kind == "switch":
        return None if action.nargs == 0 else "takes a value"
    if action.nargs == 0:
        return "is a switch"
    if kind == "list":
        return None if isinstance(action, vocab.ListAction) else "is not a ListAction"
    if isinstance(action, vocab.ListAction) or action.nargs in ("+", "*"):
        return "takes a list"
    if kind == "tuple":
        return None if isinstance(action.nargs, int) and action.nargs > 1 else "is not a tuple"
    if kind == "choice":
        return None if action.choices else "has no choices"
    if action.choices:
        return "has choices"
    want = {"int": int, "float": float}.get(kind)
    if want is not None:
        return None if action.type is want else f"type {action.type}, not {want.__name__}"
    return None if action.type in (None, str) else f"type {action.type}"


def test_every_flag_means_one_thing_everywhere():
    """Each visible long flag of each command is in the vocabulary, of its kind and metavar."""
    problems = []
    seen: dict[str, set[str]] = {}
    for command, parser in {"(top)": PARSER, **COMMAND_PARSERS}.items():
        for action in _visible(parser):
            for option in (o for o in action.option_strings if o.startswith("--")):
                seen.setdefault(option, set()).add(command)
                flag = vocab.FLAGS.get(option)
                if flag is None:
                    problems.append(f"{command} {option}: not in the vocabulary")
                    continue
                problem = _kind_problem(action, flag)
                if problem:
                    problems.append(f"{command} {option}: a {flag.kind} in the vocabulary, but {problem}")
                metavar = action.metavar
                metavar = " ".join(metavar) if isinstance(metavar, tuple) else metavar
                if flag.kind not in ("switch", "choice", "tuple") and metavar != flag.metavar:
                    problems.append(f"{command} {option}: metavar {metavar}, vocabulary {flag.metavar}")
                if option in vocab.DEPRECATED:
                    problems.append(f"{command} {option}: a former name shown in --help")
    assert not problems, "\n".join(problems)
    unused = sorted(set(vocab.FLAGS) - set(seen))
    assert not unused, f"vocabulary entries no command has: {unused}"


def test_naming_rules_folders_counts_and_the_decided_names():
    for name, flag in vocab.FLAGS.items():
        if name.startswith(("--num-", "--max-", "--min-")):
            assert flag.kind == "int", name  # a count or a bound is a number ...
        if flag.kind == "path":
            assert not name.startswith(("--num-", "--max-", "--min-")), name  # ... never a path
    # the decisions of the vocabulary: an input folder of CTs vs a count of CTs; one flag for
    # the Swin weights, one for the model to use; --force replaces, --recompute recomputes
    assert vocab.FLAGS["--ct-dir"].kind == "path" and vocab.FLAGS["--num-cts"].kind == "int"
    users = {o: sorted(c for c, p in COMMAND_PARSERS.items()
                       if o in {s for a in _visible(p) for s in a.option_strings})
             for o in ("--swin-weights", "--model", "--force", "--recompute")}
    assert users == {"--swin-weights": ["extract", "predict"], "--model": ["finetune", "predict"],
                     "--force": ["demo", "import-upstream", "synth"], "--recompute": ["extract"]}


def test_hidden_flags_are_former_names_that_warn():
    for command, parser in COMMAND_PARSERS.items():
        for action in parser._actions:
            if action.option_strings and action.help is argparse.SUPPRESS:
                assert isinstance(action, vocab._Deprecated), (command, action.option_strings)


def test_every_help_shows_the_defaults():
    missing = []
    for command, parser in COMMAND_PARSERS.items():
        formatter = vocab.HelpFormatter(parser.prog)
        for action in _visible(parser):
            if action.nargs == 0 or action.required or "(required)" in (action.help or ""):
                continue
            if "default" not in formatter._get_help_string(action).lower():
                missing.append(f"{command} {action.option_strings[-1]}")
    assert not missing, f"no default shown: {missing}"
    text = COMMAND_PARSERS["extract"].format_help()
    assert "extract.batch of --config (paper 4, tiny 2)" in " ".join(text.split())
    assert "(default: scanmatch multimatch sed" in " ".join(COMMAND_PARSERS["evaluate"]
                                                             .format_help().split())


def test_global_flags_only_where_they_act():
    for command, parser in COMMAND_PARSERS.items():
        options = {o for a in parser._actions for o in a.option_strings}
        assert {"--debug", "-v", "-q"} <= options, command
        module = __import__(f"ctsearcher_jax.commands.{cli.COMMANDS[command]}",
                            fromlist=["COMPILES"])
        assert ("--no-compile-cache" in options) == getattr(module, "COMPILES", False), command
    assert "--no-compile-cache" not in COMMAND_PARSERS["report"].format_help()
    assert "--no-compile-cache" in COMMAND_PARSERS["train"].format_help()


def test_lists_take_spaces_repeat_and_replace_the_default(capsys):
    parse = PARSER.parse_args
    assert parse(["evaluate", "--data", "d"]).metrics == ["scanmatch", "multimatch", "sed"]
    assert parse(["evaluate", "--data", "d", "--metrics", "sed"]).metrics == ["sed"]
    both = parse(["evaluate", "--data", "d", "--metrics", "sed", "dtw", "--metrics", "saliency"])
    assert both.metrics == ["sed", "dtw", "saliency"]
    assert parse(["predict", "--model", "m", "--out", "o", "--reader", "1", "2"]).readers == ["1", "2"]
    assert parse(["train", "--set", "a.b=1", "c.d=2", "--set", "e.f=3"]).overrides == \
        ["a.b=1", "c.d=2", "e.f=3"]
    assert capsys.readouterr().err == ""
    old = parse(["visualize", "--data", "d", "--name", "c", "--out", "o", "--figures",
                 "drilling,density"])
    assert old.figures == ["drilling", "density"]
    assert "comma-separated --figures is deprecated" in capsys.readouterr().err


@pytest.mark.parametrize("argv, dest, value, new", [
    (["extract", "--cts", "C", "--weights", "random", "--out", "o"], "ct_dir", "C", "--ct-dir"),
    (["extract", "--ct-dir", "C", "--weights", "W", "--out", "o"], "swin_weights", "W",
     "--swin-weights"),
    (["extract", "--ct-dir", "C", "--swin-weights", "W", "--out", "o", "--limit", "3"], "max_cts",
     3, "--max-cts"),
    (["extract", "--ct-dir", "C", "--swin-weights", "W", "--out", "o", "--force"], "recompute",
     True, "--recompute"),
    (["synth", "--out", "o", "--cts", "3"], "num_cts", 3, "--num-cts"),
    (["demo", "--readers", "3"], "num_readers", 3, "--num-readers"),
    (["predict", "--checkpoint", "M", "--out", "o"], "model", "M", "--model"),
    (["predict", "--model", "M", "--out", "o", "--figure-cts", "0"], "max_figure_cts", 0,
     "--max-figure-cts"),
    (["finetune", "--from", "M", "--workdir", "w"], "source", "M", "--model"),
    (["evaluate", "--gt", "D"], "data", "D", "--data"),
    (["view", "--data", "d", "--name", "c", "--out", "o", "--metrics"], "score", True, "--score"),
    (["import-upstream", "x.pt", "--out", "o", "--overwrite"], "force", True, "--force"),
])
def test_former_names_still_work_with_a_warning(capsys, argv, dest, value, new):
    args = PARSER.parse_args(argv)
    assert getattr(args, dest) == value
    assert f"is deprecated; use {new}" in capsys.readouterr().err
    assert not vocab.missing_required(COMMAND_PARSERS[argv[0]], args)


def test_a_required_flag_is_still_required_when_it_has_an_alias(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", "--out", "o"])
    assert info.value.code == 2
    assert "the following arguments are required: --model" in capsys.readouterr().err


def test_docs_write_the_vocabulary_down(repo_root):
    """docs/cli.md holds the flag table (README links to it): the table `flag_table()` makes,
    a row for every flag, and what became of every former name."""
    doc = (repo_root / "docs" / "cli.md").read_text()
    assert vocab.flag_table() in doc, "docs/cli.md's flag table differs from flags.flag_table()"
    for name, flag in vocab.FLAGS.items():
        shown = f"{name} {flag.metavar}" if flag.metavar else name
        assert f"| `{shown}` | {flag.kind} |" in doc, f"docs/cli.md's flag table lacks {shown}"
    for old in vocab.DEPRECATED:
        assert f"`{old}`" in doc, f"docs/cli.md does not say what became of {old}"


def test_stages_run_in_process_keep_the_callers_verbosity(capsys, tmp_path):
    """`ctsearcher -q demo`: each stage runs through cli.main(argv, parent=args) and leaves
    logging as the demo set it (before, every stage reset it to INFO)."""
    parent = PARSER.parse_args(["-q", "demo"])
    logs.setup(-1)
    try:
        (tmp_path / "w").mkdir()
        assert cli.main(["report", "--workdir", str(tmp_path / "w")], parent=parent) == 2
        assert logging.getLogger("ctsearcher_jax").level == logging.WARNING
        assert not logs.progress_bars(True)  # -q: no bars either
    finally:
        logs.setup(0)
    assert "nothing to report" in capsys.readouterr().err
