"""One Markdown and one HTML report of a run: config, training curves, metric table, figures.

Reads what the other stages leave in a workdir:

- `config.yaml`: the resolved config (training writes it);
- `metrics.jsonl`: one JSON object per log call (`{"step", "split", loss...}`), drawn as curves;
- `evaluation/<row>.json`: reports of `ctsearcher evaluate --out` (the model and the baselines),
  one table row each, the row name being the file stem;
- `predictions/figures/*`: figures written by `ctsearcher predict`, and its interactive viewers
  (`<CT>_viewer.html`).

- `model/export.json`: which step the exported model is and the metric (and value) that chose it;
- `provenance.json`: one entry per training launch (version, git commit, time, devices).

Writes `<workdir>/report/report.md`, `report.html` and `curves.png` (atomically). The report
folder is self-contained: the figures shown are copied into `report/figures/` and the viewers of
the CTs shown into `report/viewers/` (each one self-contained page), all linked by relative paths,
so `report/` can be copied or sent on its own. It ends with its provenance: package version, git
commit when run from a checkout, date, the training launches' devices, and the resolved config.
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ctsearcher_jax.errors import DataError
from ctsearcher_jax.io import atomic_write, atomic_write_text, loads_json, read_json
from ctsearcher_jax.metrics.registry import METRICS
from ctsearcher_jax.provenance import collect, read_launches

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
    fig = Figure(figsize=(3.4 * cols, 2.6 * nrows), dpi=100)
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
    fig.tight_layout()
    return atomic_write(out, lambda f: fig.savefig(f, format="png"))


def _html_code(escaped: str) -> str:
    """`code` spans of an already escaped Markdown sentence as <code> elements."""
    parts = escaped.split("`")
    return "".join(f"<code>{p}</code>" if k % 2 else p for k, p in enumerate(parts))


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
            cells.append("" if s is None else f"{_fmt(s.get('mean'))} ± {_fmt(s.get('std'))}")
        rows.append(cells)
    return header, rows


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


def exported_model_lines(workdir: Path) -> list[str]:
    """Plain sentences on `<workdir>/model`: its step, and the metric and value that chose it."""
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
                f"`{info['selected_by']}` = {_fmt(info.get('value'))} on the evaluation split"
                + (f" ({direction})" if direction else "") + "."]
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


def write_report(workdir: str | os.PathLike[str], *, title: str | None = None,
                 max_figures: int = 8) -> ReportFiles:
    """Collect what the run left in `workdir` and write the Markdown and HTML reports."""
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
    figures = sorted(p for p in (workdir / FIGURE_DIR).glob("*") if p.suffix in (".png", ".gif")) \
        if (workdir / FIGURE_DIR).is_dir() else []
    by_ct: dict[str, list[Path]] = {}
    for p in figures:
        by_ct.setdefault(p.stem.rsplit("_", 1)[0], []).append(p)
    ct_names = list(by_ct)[: max(1, max_figures // 4)]
    viewers = copy_viewers(workdir / FIGURE_DIR, ct_names, out / VIEWER_DIR)
    copies = copy_figures([p for n in ct_names for p in by_ct[n]], out / REPORT_FIGURES)
    by_ct = {n: [copies[p] for p in by_ct[n]] for n in ct_names}
    exported = exported_model_lines(workdir)
    provenance = provenance_lines(workdir)
    header, table = metric_table(evaluations)
    title = title or f"CT-Searcher run: {workdir.name}"
    train_rows = [r for r in rows if r.get("split", "train") == "train"]

    def rel(p: Path) -> str:
        return os.path.relpath(p, out)

    # Markdown
    md = [f"# {title}", "", f"Workdir: `{workdir}`", ""]
    if train_rows:
        md += [f"Training: {len(train_rows)} logged steps, last step {train_rows[-1]['step']}, "
               f"last loss {_fmt(train_rows[-1].get('loss'))}.", ""]
    md += ["## Exported model", "", *exported, "", "## Metrics", ""]
    if table:
        md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(r) + " |" for r in table]
        md += ["", "Mean ± population std over scored pairs (`ctsearcher evaluate`); "
                   "↑ higher is better, ↓ lower is better.", ""]
    else:
        md += ["No evaluation reports found in `evaluation/`.", ""]
    if curves:
        md += ["## Training curves", "", f"![training curves]({rel(curves)})", ""]
    if ct_names:
        md += ["## Figures", ""]
        for name in ct_names:
            md += [f"### {name}", ""]
            if name in viewers:
                md += [f"[Interactive viewer]({rel(viewers[name])}) (replay the scanpaths over "
                       f"the slices; opens in any browser)", ""]
            md += [f"![{p.name}]({rel(p)})" for p in by_ct[name]] + [""]
    md += ["## Provenance", "", *[f"- {line}" for line in provenance], ""]
    md += ["## Resolved config", "", "```yaml", _config_text(workdir).rstrip(), "```", ""]
    md_path = atomic_write_text(out / "report.md", "\n".join(md))

    # HTML (its images are the copies under report/)
    e = html.escape
    h = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{e(title)}</title>",
         "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;"
         "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%;"
         "border:1px solid #eee;margin:4px 0}pre{background:#f6f6f6;padding:1em;overflow:auto}"
         "</style></head><body>", f"<h1>{e(title)}</h1>", f"<p>Workdir: <code>{e(str(workdir))}</code></p>"]
    if train_rows:
        h.append(f"<p>Training: {len(train_rows)} logged steps, last step {train_rows[-1]['step']}, "
                 f"last loss {e(_fmt(train_rows[-1].get('loss')))}.</p>")
    h += ["<h2>Exported model</h2>", *[f"<p>{_html_code(e(line))}</p>" for line in exported]]
    h.append("<h2>Metrics</h2>")
    if table:
        h.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in header) + "</tr>")
        h += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in table]
        h.append("</table><p>Mean ± population std over scored pairs; ↑ higher is better, "
                 "↓ lower is better.</p>")
    else:
        h.append("<p>No evaluation reports found in <code>evaluation/</code>.</p>")
    if curves:
        h += ["<h2>Training curves</h2>", f"<img src='{e(rel(curves))}' alt='training curves'>"]
    if ct_names:
        h.append("<h2>Figures</h2>")
        for name in ct_names:
            h.append(f"<h3>{e(name)}</h3>")
            if name in viewers:
                h.append(f"<p><a href='{e(rel(viewers[name]))}'>Interactive viewer</a> (replay "
                         f"the scanpaths over the slices; opens in any browser)</p>")
            h += [f"<img src='{e(rel(p))}' alt='{e(p.name)}'>" for p in by_ct[name]]
    h += ["<h2>Provenance</h2>", "<ul>", *[f"<li>{_html_code(e(line))}</li>" for line in provenance],
          "</ul>"]
    h += ["<h2>Resolved config</h2>", f"<pre>{e(_config_text(workdir))}</pre>", "</body></html>"]
    html_path = atomic_write_text(out / "report.html", "\n".join(h))
    return ReportFiles(markdown=md_path, html=html_path, curves=curves)
