"""One Markdown and one HTML report of a run: config, training curves, metric table, figures.

Reads what the other stages leave in a workdir:

- `config.yaml`: the resolved config (training writes it);
- `metrics.jsonl`: one JSON object per log call (`{"step", "split", loss...}`), drawn as curves;
- `evaluation/<row>.json`: reports of `ctsearcher evaluate --out` (the model and the baselines),
  one table row each, the row name being the file stem;
- `predictions/figures/*`: figures written by `ctsearcher predict`, and its interactive viewers
  (`<CT>_viewer.html`).

- `model/export.json`: which step the exported model is and the metric (and value) that chose it;
- `inputs.json`: the dataset's and the feature manifest's sha256, the encoder weights, the splits
  (which one chose the checkpoint, their sizes);
- `provenance.json`: one entry per training launch (version, git commit, time, devices).

Its first lines say what a reader must know before the numbers: features from a random encoder,
a checkpoint chosen on the test split. The table says which split it is on; a std that does not
exist is left out and a note says why.

Writes `<workdir>/report/report.md`, `report.html` and `curves.png` (atomically): `collect_report`
gathers a `ReportContent`, which two Jinja2 templates (`templates/report.{md,html}.j2`) render.
Every value from the run's files (CT names, steps, metric names, paths) is escaped by the
template environment, once per output kind: HTML by autoescape, Markdown by
`text.markdown_text`; figures draw text literally (`viz/figure.py`). The report
folder is self-contained: the figures shown are copied into `report/figures/` and the viewers of
the CTs shown into `report/viewers/` (each one self-contained page), all linked by relative paths,
so `report/` can be copied or sent on its own. It ends with its provenance: package version, git
commit when run from a checkout, date, the training launches' devices, and the resolved config.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import yaml

from ctsearcher_jax.data.inputs import encoder_words, random_encoder, read_inputs
from ctsearcher_jax.data.splits import describe_selection
from ctsearcher_jax.errors import DataError
from ctsearcher_jax.io import atomic_write, atomic_write_text, loads_json, read_json
from ctsearcher_jax.metrics.registry import METRICS
from ctsearcher_jax.provenance import collect, read_launches
from ctsearcher_jax.text import markdown_text, visible
from ctsearcher_jax.viz.figure import new_figure, save_png

REPORT_DIR = "report"
EVAL_DIR = "evaluation"
FIGURE_DIR = Path("predictions") / "figures"
VIEWER_DIR = "viewers"  # under report/: copies of the interactive viewers
REPORT_FIGURES = "figures"  # under report/: copies of the figures shown
CURVE_KEYS = ("loss", "spatial", "duration", "lr", "grad_norm")


@dataclasses.dataclass
class ReportFiles:
    """Paths written by `write_report`."""

    markdown: Path
    html: Path
    curves: Path | None


def read_metrics_log(path: Path) -> list[dict[str, Any]]:
    """Rows of `metrics.jsonl` (lines cut by a kill are skipped)."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = loads_json(line, str(path))
        except DataError:
            continue  # a line cut by a kill (or damaged): the curves use the others
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def read_evaluations(directory: Path) -> dict[str, dict[str, Any]]:
    """Row name -> `summary` of every evaluate report in `directory` (sorted, model first)."""
    rows: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            data = read_json(path)
            rows[path.stem] = data["summary"]
        except (DataError, KeyError, TypeError):
            raise DataError(f"{path}: not a report of `ctsearcher evaluate --out`; remove it or "
                            f"re-run evaluate") from None
    order = sorted(rows, key=lambda n: (n != "model", n == "human", n))
    return {n: rows[n] for n in order}


def plot_curves(rows: list[dict[str, Any]], out: Path) -> Path | None:
    """Training and eval curves, one panel per quantity (train and eval of the same loss share
    a panel; a few eval metrics follow); None when nothing was logged."""
    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for r in rows:
        split = r.get("split", "train")
        for k, v in r.items():
            if k in ("step", "split") or not isinstance(v, (int, float)):
                continue
            name = k[len("eval_"):] if split == "eval" and k.startswith("eval_") else k
            series.setdefault(name, {}).setdefault(split, []).append((r["step"], v))
    names = [k for k in CURVE_KEYS if k in series]
    names += [k for k in ("scanmatch_with_duration", "multimatch_mean", "sed") if k in series]
    if not names:
        return None
    cols = min(4, len(names))
    nrows = -(-len(names) // cols)
    fig = new_figure(3.4 * cols, 2.6 * nrows, dpi=100)
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrows, cols, i + 1)
        for split, pts in series[name].items():
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, ms=3, label=split)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return save_png(fig, out)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def metric_table(evaluations: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of mean ± std per metric, with the direction in the header.

    Columns in the metrics registry's order (metrics it does not know are appended, sorted);
    the direction is the report's own, else the registry's.
    """
    found = {m for s in evaluations.values() for m in s}
    metrics = [m for m in METRICS if m in found] + sorted(found - set(METRICS))
    header = ["row"]
    for m in metrics:
        hib = next((s[m].get("higher_is_better") for s in evaluations.values() if m in s), None)
        if hib is None and m in METRICS:
            hib = METRICS[m].higher_is_better
        header.append(f"{m} {'↑' if hib else '↓' if hib is not None else ''}".strip())
    rows = []
    for name, summary in evaluations.items():
        cells = [name]
        for m in metrics:
            s = summary.get(m)
            if s is None:
                cells.append("")
            elif not _finite(s.get("mean")):
                cells.append("n/a")
            else:  # a std that does not exist is left out (`std_notes` says why, once)
                std = s.get("std")
                cells.append(_fmt(s["mean"]) + (f" ± {_fmt(std)}" if _finite(std) else ""))
        rows.append(cells)
    return header, rows


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def std_notes(evaluations: dict[str, dict[str, Any]]) -> list[str]:
    """One sentence per metric of the table shown without a std (or without a value), saying why."""
    notes = []
    found = {m for s in evaluations.values() for m in s}
    for m in [m for m in METRICS if m in found] + sorted(found - set(METRICS)):
        cells = [(row, s[m]) for row, s in evaluations.items() if isinstance(s.get(m), dict)]
        no_mean = [row for row, c in cells if not _finite(c.get("mean"))]
        no_std = [row for row, c in cells if _finite(c.get("mean")) and not _finite(c.get("std"))]
        if no_std:
            what = (f"the {METRICS[m].description}: a summary of summaries, with no per-pair "
                    f"values to spread" if m in METRICS else "its report gives none")
            notes.append(f"`{m}` has no std ({what}).")
        if no_mean:
            unscored = [row for row, c in cells if not c.get("n")]
            notes.append(f"`{m}` is n/a in {', '.join(no_mean)}: "
                         + ("no pair was scored" if len(unscored) == len(no_mean) else
                            "a per-pair score is NaN (e.g. ScanMatch of two empty scanpaths), "
                            "which makes the mean NaN, as in the original") + ".")
    return notes


def copy_viewers(figure_dir: Path, names: list[str], dest: Path) -> dict[str, Path]:
    """Copy `<name>_viewer.html` of each CT in `names` from `figure_dir` into `dest` (atomically);
    {name: copy}. CTs without a viewer are left out."""
    copies: dict[str, Path] = {}
    for name in names:
        src = figure_dir / f"{name}_viewer.html"
        if src.is_file():
            data = src.read_bytes()
            copies[name] = atomic_write(dest / src.name, lambda f, data=data: f.write(data))
    return copies


def copy_figures(paths: list[Path], dest: Path) -> dict[Path, Path]:
    """Copy each figure into `dest` (atomically); {source: copy}."""
    copies: dict[Path, Path] = {}
    for src in paths:
        data = src.read_bytes()
        copies[src] = atomic_write(dest / src.name, lambda f, data=data: f.write(data))
    return copies


def read_evaluation_splits(directory: Path) -> dict[str, dict[str, Any]]:
    """Row name -> {"split", "num_cts", "num_pairs", "protocol"} of every evaluate report."""
    out = {}
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            data = read_json(path)
        except DataError:
            continue  # read_evaluations names it
        if isinstance(data, dict):
            out[path.stem] = {k: data.get(k) for k in ("split", "num_cts", "num_pairs", "protocol")}
    return out


def run_splits(workdir: Path, inputs: dict[str, Any] | None) -> dict[str, Any] | None:
    """How the run chose its checkpoint (`RunSplits.record()` from `inputs.json`); for a run
    written before inputs.json existed, its config.yaml's `data.eval_split` (a dataset split)."""
    if inputs and isinstance(inputs.get("splits"), dict):
        return inputs["splits"]
    try:
        data = yaml.safe_load((workdir / "config.yaml").read_text())
        split = data["data"]["eval_split"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    if not isinstance(split, str):
        return None
    return {"eval_split": split, "eval_source": "unrecorded" if split == "validation" else "dataset"}


def _selects_on_test(splits: dict[str, Any] | None) -> bool:
    return bool(splits) and splits.get("eval_source") == "dataset" and \
        splits.get("eval_split") == "test"


def notice_lines(inputs: dict[str, Any] | None, splits: dict[str, Any] | None,
                 exported: bool) -> list[str]:
    """What a reader must see before the numbers: a random encoder, a step chosen on test."""
    out = []
    encoder = random_encoder(inputs)
    if encoder is not None:
        out.append(f"The features come from a random-initialised Swin UNETR (seed "
                   f"{encoder.get('seed')}, no pretrained weights): these numbers show that the "
                   f"pipeline runs, not what CT-Searcher achieves.")
    if _selects_on_test(splits) and exported:
        out.append("The exported model's step was selected on the test split "
                   "(`data.eval_split: test`, as the original CT-Searcher does): its test-split "
                   "row is optimistic next to the baselines, which had no such selection. "
                   "`data.eval_split: validation` selects on a validation split instead.")
    return out


def table_lines(meta: dict[str, dict[str, Any]], splits: dict[str, Any] | None) -> list[str]:
    """Which split the table is on, and how that relates to the split that chose the step."""
    if not meta:
        return []
    by_split: dict[Any, list[str]] = {}
    for row, m in meta.items():
        by_split.setdefault(m.get("split"), []).append(row)
    if None in by_split:
        return [f"The reports of {', '.join(by_split[None])} do not name their split."]
    if len(by_split) > 1:
        return ["Rows are scored on different splits (" + "; ".join(
            f"{split}: {', '.join(rows)}" for split, rows in by_split.items())
            + "): they do not compare."]
    split = next(iter(by_split))
    cts = sorted({m.get("num_cts") for m in meta.values() if m.get("num_cts") is not None})
    line = (f"Every row is scored on the {split} split"
            + (f" ({cts[0]} CT{'s' if cts[0] != 1 else ''})" if len(cts) == 1 else "")
            + " by `ctsearcher evaluate`.")
    if "model" in meta and splits:
        if _selects_on_test(splits) and split == "test":
            line += " The model's step was chosen on these same CTs (see the first lines)."
        else:
            line += f" The model's step was chosen on {describe_selection(splits)}."
    return [line]


def data_lines(inputs: dict[str, Any] | None) -> list[str]:
    """The dataset, features, encoder weights and split sizes the run trained on."""
    if not inputs:
        return ["Not recorded (no `inputs.json` in the workdir: a run from before it existed)."]
    dataset, features = inputs.get("dataset") or {}, inputs.get("features") or {}
    sizes = (inputs.get("splits") or {}).get("sizes") or {}
    lines = [f"Dataset `{dataset.get('path')}` (sha256 `{dataset.get('sha256')}`): "
             f"{dataset.get('cts')} CTs, {dataset.get('scanpaths')} scanpaths."]
    if sizes:
        lines.append("Splits (CTs / scanpaths): " + ", ".join(
            f"{name} {v.get('cts')} / {v.get('scanpaths')}" for name, v in sizes.items())
            + "; evaluation during training on " + describe_selection(inputs.get("splits")) + ".")
    lines.append(f"Features `{features.get('dir')}`"
                 + (f" (manifest sha256 `{features['manifest_sha256']}`)"
                    if features.get("manifest_sha256") else " (no manifest)") + ".")
    lines.append(f"Swin UNETR weights: {encoder_words(inputs)}.")
    return lines


def exported_model_lines(workdir: Path, splits: dict[str, Any] | None = None) -> list[str]:
    """Plain sentences on `<workdir>/model`: its step, and the metric, value and split that chose
    it."""
    path = workdir / "model" / "export.json"
    if not path.is_file():
        return ["No exported model (`model/export.json`) in the workdir yet."]
    try:
        info = read_json(path)
        step, total = info["step"], info.get("total_steps")
    except (DataError, KeyError, TypeError):
        return [f"`{path}` is not readable; re-run training to export the model again."]
    of = f" of {total}" if total else ""
    if info.get("selected_by"):
        direction = info.get("direction") or ""
        return [f"`model/` holds the weights of step {step}{of}: the best checkpoint by "
                f"`{info['selected_by']}` = {_fmt(info.get('value'))} on "
                f"{describe_selection(splits)}" + (f" ({direction})" if direction else "") + "."]
    return [f"`model/` holds the weights of step {step}{of}: the final step (no evaluation "
            f"metric selected a checkpoint)."]


def provenance_lines(workdir: Path) -> list[str]:
    """This report's provenance and that of every training launch recorded in the workdir."""
    now = collect()
    lines = [f"Report written {now['time']} by ctsearcher-jax {now['ctsearcher_jax']}"
             + (f" (git {now['git_commit']})" if now.get("git_commit") else "") + "."]
    for k, launch in enumerate(read_launches(workdir), 1):
        lines.append(f"Training launch {k}: {launch.get('time', '?')} on {launch.get('host', '?')}, "
                     f"ctsearcher-jax {launch.get('ctsearcher_jax', '?')}"
                     + (f" (git {launch['git_commit']})" if launch.get("git_commit") else "")
                     + (f"; {launch['startup']}" if launch.get("startup") else "") + ".")
    if len(lines) == 1:
        lines.append("No training launch recorded (`provenance.json`).")
    return lines


def _config_text(workdir: Path) -> str:
    path = workdir / "config.yaml"
    return path.read_text() if path.is_file() else "(no config.yaml in the workdir)"


@dataclasses.dataclass
class FigureSet:
    """The figures of one CT in the report: its name, its viewer and images (report-relative)."""

    name: str
    viewer: str | None
    images: list[dict[str, str]]  # {"name", "path"}


@dataclasses.dataclass
class ReportContent:
    """Everything the report shows, collected from a workdir (`collect_report`). Sentences
    (`exported`, `provenance`) are lists of (is_code, text) parts; paths are relative to the
    report folder."""

    title: str
    workdir: str
    notices: list[list[tuple[bool, str]]]  # the first lines: random encoder, selection on test
    training: dict[str, Any] | None  # {"steps", "last_step", "last_loss"} of the train rows
    exported: list[list[tuple[bool, str]]]
    data: list[list[tuple[bool, str]]]  # dataset, features, encoder weights, split sizes
    table_header: list[str]
    table_rows: list[list[str]]
    table_split: list[list[tuple[bool, str]]]  # which split the table is on
    table_notes: list[list[tuple[bool, str]]]  # why a std (or a value) is missing
    curves: str | None
    figures: list[FigureSet]
    provenance: list[list[tuple[bool, str]]]
    config_text: str


def write_report(workdir: str | os.PathLike[str], *, title: str | None = None,
                 max_figures: int = 8) -> ReportFiles:
    """Collect what the run left in `workdir` and write the Markdown and HTML reports."""
    out = Path(workdir) / REPORT_DIR
    content = collect_report(workdir, title=title, max_figures=max_figures)
    md_path = atomic_write_text(out / "report.md", _MARKDOWN.get_template("report.md.j2")
                                .render(c=content))
    html_path = atomic_write_text(out / "report.html", _HTML.get_template("report.html.j2")
                                  .render(c=content))
    curves = out / content.curves if content.curves else None
    return ReportFiles(markdown=md_path, html=html_path, curves=curves)


def collect_report(workdir: str | os.PathLike[str], *, title: str | None = None,
                   max_figures: int = 8) -> ReportContent:
    """Read the run's files, draw the curves and copy the figures and viewers shown into
    `<workdir>/report/`; DataError when there is nothing to report."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise DataError(f"{workdir}: no such workdir; pass the folder given to `ctsearcher train`")
    out = workdir / REPORT_DIR
    rows = read_metrics_log(workdir / "metrics.jsonl")
    evaluations = read_evaluations(workdir / EVAL_DIR) if (workdir / EVAL_DIR).is_dir() else {}
    if not rows and not evaluations:
        raise DataError(f"{workdir}: nothing to report (no metrics.jsonl, no {EVAL_DIR}/*.json); "
                        f"train with `ctsearcher train --workdir {workdir}` and score with "
                        f"`ctsearcher evaluate --out {workdir}/{EVAL_DIR}/model.json`")
    curves = plot_curves(rows, out / "curves.png")
    train_rows = [r for r in rows if r.get("split", "train") == "train"]
    training = ({"steps": len(train_rows), "last_step": train_rows[-1]["step"],
                 "last_loss": _fmt(train_rows[-1].get("loss"))} if train_rows else None)
    header, table = metric_table(evaluations)
    inputs = read_inputs(workdir)
    splits = run_splits(workdir, inputs)
    exported = (workdir / "model" / "export.json").is_file()
    split_lines = table_lines(read_evaluation_splits(workdir / EVAL_DIR), splits)
    return ReportContent(
        title=title or f"CT-Searcher run: {workdir.name}", workdir=str(workdir),
        notices=[_spans(line) for line in notice_lines(inputs, splits, exported)],
        training=training, exported=[_spans(line) for line in exported_model_lines(workdir, splits)],
        data=[_spans(line) for line in data_lines(inputs)],
        table_header=header, table_rows=table,
        table_split=[_spans(line) for line in split_lines],
        table_notes=[_spans(line) for line in std_notes(evaluations)],
        curves=os.path.relpath(curves, out) if curves else None,
        figures=_figure_sets(workdir, out, max_figures),
        provenance=[_spans(line) for line in provenance_lines(workdir)],
        config_text=_config_text(workdir))


def _figure_sets(workdir: Path, out: Path, max_figures: int) -> list[FigureSet]:
    """The figures (and viewers) of the first CTs of `predictions/figures`, copied under `out`."""
    figure_dir = workdir / FIGURE_DIR
    figures = sorted(p for p in figure_dir.glob("*") if p.suffix in (".png", ".gif")) \
        if figure_dir.is_dir() else []
    by_ct: dict[str, list[Path]] = {}
    for p in figures:
        by_ct.setdefault(p.stem.rsplit("_", 1)[0], []).append(p)
    ct_names = list(by_ct)[: max(1, max_figures // 4)]
    viewers = copy_viewers(figure_dir, ct_names, out / VIEWER_DIR)
    copies = copy_figures([p for n in ct_names for p in by_ct[n]], out / REPORT_FIGURES)
    return [FigureSet(name, os.path.relpath(viewers[name], out) if name in viewers else None,
                      [{"name": p.name, "path": os.path.relpath(copies[p], out)} for p in by_ct[name]])
            for name in ct_names]


def _spans(line: str) -> list[tuple[bool, str]]:
    """A sentence with `code` spans as (is_code, text) parts."""
    return [(k % 2 == 1, part) for k, part in enumerate(line.split("`")) if part]


class _Verbatim(str):
    """Markdown the template built on purpose (code spans, fenced blocks, URLs): not escaped again."""


def _markdown_finalize(value: Any) -> str:
    return value if isinstance(value, _Verbatim) else markdown_text(value)


def _markdown_code(value: Any) -> _Verbatim:
    """Inline code span content: literal in Markdown; a backtick cannot close the span early."""
    return _Verbatim(visible(value).replace("`", "'"))


def _markdown_fenced(value: Any, language: str = "") -> _Verbatim:
    """A fenced code block longer than any backtick run inside it (its lines stay as they are)."""
    longest = max((len(run) for run in re.findall(r"`+", str(value))), default=0)
    fence = "`" * max(3, longest + 1)
    return _Verbatim(f"{fence}{language}\n{str(value).rstrip()}\n{fence}")


def _url(value: Any) -> _Verbatim:
    """A relative link target, percent-encoded (a CT name cannot end a link or add markup)."""
    return _Verbatim(urllib.parse.quote(str(value), safe="/"))


def _html_finalize(value: Any) -> Any:
    """Control and bidi characters made visible; autoescape then escapes the markup characters
    (macro output is already escaped Markup)."""
    return value if isinstance(value, markupsafe.Markup) else visible(value)


_LOADER = jinja2.PackageLoader("ctsearcher_jax", "templates")
_MARKDOWN = jinja2.Environment(loader=_LOADER, autoescape=False, finalize=_markdown_finalize,
                               keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
_MARKDOWN.filters.update(code=_markdown_code, fenced=_markdown_fenced, url=_url)
_HTML = jinja2.Environment(loader=_LOADER, autoescape=True, keep_trailing_newline=True,
                           undefined=jinja2.StrictUndefined, finalize=_html_finalize)
_HTML.filters.update(url=lambda value: urllib.parse.quote(str(value), safe="/"),
                     wbr=lambda value: markupsafe.Markup(
                         str(markupsafe.escape(visible(value))).replace("_", "_<wbr>")))
