"""`ctsearcher report --workdir W`: Markdown + HTML report of a run."""

from __future__ import annotations

import argparse

HELP = "write a Markdown and an HTML report of a run: config, curves, metric table, figures"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", required=True, metavar="DIR",
                        help="the run folder (from `ctsearcher train`)")
    parser.add_argument("--title", metavar="TEXT",
                        help="report title (default: from the workdir's name)")
    parser.add_argument("--max-figures", type=int, default=8, metavar="N",
                        help="at most this many figures (4 per CT)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ctsearcher_jax.paths import check_output_dir
    from ctsearcher_jax.report import write_report

    check_output_dir(Path(args.workdir) / "report", flag="--workdir")
    files = write_report(args.workdir, title=args.title, max_figures=args.max_figures)
    print(f"report: {files.html}")
    print(f"        {files.markdown}")
    return 0
