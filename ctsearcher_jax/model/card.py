"""`README.md` of an exported model folder: what it is, what it was trained on, how well it did,
how to load it (a model card in the layout model hubs expect next to `model.safetensors` and
`config.json`: YAML front matter, then Markdown).

`write_model_card(out_dir, config, info)` is called by `save_model`; `info` says what the caller
knows: for a training export `step`, `total_steps`, `selected_by`, `value`, `direction`,
`num_train_cts`, `metrics` (name -> value at that step), `directions` (name -> "higher" /
"lower") and `inputs` (the run's `inputs.json`: dataset hash, feature manifest, encoder weights,
splits; `data/inputs.py`); for an import `source`. Everything else comes from the config.

Its first lines say what a reader must know before using the numbers: a model trained on features
of a random-initialised encoder says so, and so does a step chosen on the test split.
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any, Mapping

import yaml

from ctsearcher_jax._version import __version__
from ctsearcher_jax.config import Config, dumps
from ctsearcher_jax.data.inputs import encoder_words, random_encoder
from ctsearcher_jax.data.splits import describe_selection
from ctsearcher_jax.io import atomic_write_text


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4f}"
    return "n/a" if v is None else str(v)


def warnings_of(inputs: Mapping[str, Any] | None) -> list[str]:
    """The sentences a reader must see first (Markdown): a random encoder, selection on test."""
    out = []
    encoder = random_encoder(inputs)
    if encoder is not None:
        out.append(f"**Trained on features of a random-initialised Swin UNETR** (seed "
                   f"{encoder.get('seed')}, no pretrained weights): the model shows that the "
                   f"pipeline runs; it has learned nothing about how radiologists read CTs.")
    splits = (inputs or {}).get("splits") or {}
    if splits.get("eval_source") == "dataset" and splits.get("eval_split") == "test":
        out.append("**The checkpoint was selected on the test split** (`data.eval_split: test`, "
                   "as the original CT-Searcher does): its test scores are optimistic next to "
                   "baselines, which had no such selection. `data.eval_split: validation` "
                   "selects on a validation split instead.")
    return out


def front_matter(info: Mapping[str, Any]) -> str:
    """YAML metadata in the model-hub layout (library, tags) plus what the run recorded."""
    inputs = info.get("inputs") or {}
    splits = inputs.get("splits") or {}
    encoders = (inputs.get("features") or {}).get("encoders") or []
    meta: dict[str, Any] = {
        "library_name": "ctsearcher-jax",
        "tags": ["scanpath-prediction", "eye-tracking", "radiology", "computed-tomography",
                 "jax", "flax"],
    }
    run = {"step": info.get("step"), "selected_by": info.get("selected_by"),
           "selected_on": splits.get("eval_split") if info.get("selected_by") else None,
           "selection_source": splits.get("eval_source") if info.get("selected_by") else None,
           "encoder": [e.get("kind") if e.get("kind") == "random" else e.get("sha256")
                       for e in encoders] or None,
           "dataset_sha256": (inputs.get("dataset") or {}).get("sha256"),
           "imported_from": info.get("source")}
    run = {k: v for k, v in run.items() if v is not None}
    if run:
        meta["ctsearcher"] = run
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, default_flow_style=None) + "---\n"


def _selection_line(info: Mapping[str, Any]) -> str:
    step, total = info["step"], info.get("total_steps")
    of = f" of {total}" if total else ""
    if info.get("selected_by"):
        on = describe_selection((info.get("inputs") or {}).get("splits"))
        return (f"Weights of training step {step}{of}: the best checkpoint by "
                f"`{info['selected_by']}` = {_fmt(info.get('value'))} on {on} "
                f"({info.get('direction', 'its declared direction')}).")
    return (f"Weights of training step {step}{of}: the final step (no evaluation metric "
            f"selected a checkpoint).")


def _data_lines(config: Config, info: Mapping[str, Any]) -> list[str]:
    m, d, inputs = config.model, config.data, info.get("inputs") or {}
    dataset, features = inputs.get("dataset") or {}, inputs.get("features") or {}
    sizes = (inputs.get("splits") or {}).get("sizes") or {}
    lines = [f"- Dataset: `{dataset.get('path', d.data_dir)}`"
             + (f" (sha256 `{dataset['sha256']}`)" if dataset.get("sha256") else "") + "."]
    if sizes:
        lines.append("- Splits (CTs / scanpaths): " + ", ".join(
            f"{name} {s.get('cts')} / {s.get('scanpaths')}" for name, s in sizes.items())
            + f"; training split `{d.train_split}`, evaluation during training: "
            + describe_selection(inputs.get("splits")) + ".")
    else:
        lines.append(f"- Splits: training `{d.train_split}`"
                     + (f", {info['num_train_cts']} CTs" if info.get("num_train_cts") else "")
                     + f"; evaluation `{d.eval_split}`.")
    lines.append(f"- Features: `{features.get('dir', d.feature_dir)}`"
                 + (f", manifest sha256 `{features['manifest_sha256']}`"
                    if features.get("manifest_sha256") else "")
                 + f"; {m.feature_dim} channels resized to the {'x'.join(map(str, m.grid))} "
                   f"model grid; gaze frame {d.frame} px, Z extent {d.z_extent}.")
    lines.append(f"- Swin UNETR weights: {encoder_words(inputs) if inputs else 'not recorded'}. "
                 f"Extraction settings for new CTs (`config.json`'s extract): feature_size "
                 f"{config.extract.feature_size}, merging order {config.extract.merging_order}, HU "
                 f"window [{config.extract.hu_min:g}, {config.extract.hu_max:g}].")
    return lines


def card_text(config: Config, info: Mapping[str, Any] | None = None) -> str:
    """The model card as Markdown with YAML front matter (module docstring for `info`)."""
    info = dict(info or {})
    m = config.model
    lines = [front_matter(info), "# CT-Searcher (ctsearcher-jax)", ""]
    for warning in warnings_of(info.get("inputs")):
        lines += [f"> {warning}", ""]
    lines += ["A 3D scanpath model for CT volumes: given Swin UNETR features of a CT, it samples "
              "radiologist-like scanpaths (X, Y in pixels of a 512 x 512 slice, Z a slice, T "
              "seconds).", ""]
    written = info.get("written") or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines.append(f"Written by ctsearcher-jax {__version__} on {written}.")
    if "step" in info:
        lines.append(_selection_line(info))
    if info.get("source"):
        lines.append(f"Imported from `{info['source']}`.")
    lines += ["", "## How to load", "", "```python", "from ctsearcher_jax import load_model", "",
              'model, config = load_model("path/to/this/folder")  # Flax NNX model + Config',
              "```", "",
              "From the command line: `ctsearcher predict CT.nii.gz --model path/to/this/folder "
              "--swin-weights W.safetensors --out predictions/` (features are extracted with the "
              "settings of `config.json`'s `extract` section).", "",
              "## Data", "", *_data_lines(config, info)]
    metrics = info.get("metrics") or {}
    if metrics:
        on = describe_selection((info.get("inputs") or {}).get("splits"))
        lines += ["", f"## Metrics at step {info.get('step')}, on {on}", "",
                  "The numbers that chose the step. Score the test split once, with "
                  "`ctsearcher predict` and `ctsearcher evaluate`, for a table next to baselines.",
                  "", "| metric | value | better |", "|---|---|---|"]
        directions = info.get("directions") or {}
        for name, value in metrics.items():
            lines.append(f"| {name} | {_fmt(value)} | {directions.get(name, '')} |")
    lines += ["", "## Model", "",
              f"- d_model {m.d_model}, {m.num_heads} heads, {m.num_encoder_layers} encoder + "
              f"{m.num_decoder_layers} decoder layers, feed-forward {m.dim_feedforward}, dropout "
              f"{m.dropout}, max_length {m.max_length}, positional table `{m.pe}`.",
              "", "## Files", "",
              "- `model.safetensors`: parameters and the positional table, float32 (sha256 in its "
              "metadata, checked on load)",
              "- `config.json` / `config.yaml`: the resolved config (the same content; "
              "`load_model` reads `config.json`)",
              "- `export.json`: the step and how it was selected (training exports)",
              "", "## Config", "", "```yaml", dumps(config).rstrip(), "```", ""]
    return "\n".join(lines)


def write_model_card(out_dir: str | Path, config: Config, info: Mapping[str, Any] | None = None
                     ) -> Path:
    """Write `out_dir/README.md` atomically; return its path."""
    path = Path(out_dir) / "README.md"
    atomic_write_text(path, card_text(config, info))
    return path
