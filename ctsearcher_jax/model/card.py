"""`README.md` of an exported model folder: what it is, what it was trained on, how well it did,
how to load it (a model card in the layout model hubs expect next to `model.safetensors` and
`config.json`).

`write_model_card(out_dir, config, info)` is called by `save_model`; `info` says what the caller
knows: for a training export `step`, `total_steps`, `selected_by`, `value`, `direction`,
`num_train_cts`, `metrics` (name -> value at that step) and `directions` (name -> "higher" /
"lower"); for an import `source`. Everything else comes from the config.
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any, Mapping

from ctsearcher_jax._version import __version__
from ctsearcher_jax.config import Config, dumps
from ctsearcher_jax.io import atomic_write_text


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4f}"
    return "n/a" if v is None else str(v)


def card_text(config: Config, info: Mapping[str, Any] | None = None) -> str:
    """The model card as Markdown (see the module docstring for `info`'s keys)."""
    info = dict(info or {})
    m, d = config.model, config.data
    lines = ["# CT-Searcher (ctsearcher-jax)", "",
             "A 3D scanpath model for CT volumes: given Swin UNETR features of a CT, it samples "
             "radiologist-like scanpaths (X, Y in pixels of a 512 x 512 slice, Z a slice, T seconds).",
             ""]
    written = info.get("written") or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines.append(f"Written by ctsearcher-jax {__version__} on {written}.")
    if "step" in info:
        step, total = info["step"], info.get("total_steps")
        of = f" of {total}" if total else ""
        if info.get("selected_by"):
            lines.append(f"Weights of training step {step}{of}: the best checkpoint by "
                         f"`{info['selected_by']}` = {_fmt(info.get('value'))} on the evaluation "
                         f"split ({info.get('direction', 'its declared direction')}).")
        else:
            lines.append(f"Weights of training step {step}{of}: the final step (no evaluation "
                         f"metric selected a checkpoint).")
    if info.get("source"):
        lines.append(f"Imported from `{info['source']}`.")
    lines += ["", "## How to load", "", "```python", "from ctsearcher_jax import load_model", "",
              'model, config = load_model("path/to/this/folder")  # Flax NNX model + Config',
              "```", "",
              "From the command line: `ctsearcher predict CT.nii.gz --checkpoint path/to/this/folder "
              "--swin-weights W.safetensors --out predictions/` (features are extracted with the "
              "settings of `config.json`'s `extract` section).", "",
              "## Data", ""]
    lines.append(f"- Dataset: `{d.data_dir}` (training split `{d.train_split}`"
                 + (f", {info['num_train_cts']} CTs" if info.get("num_train_cts") else "")
                 + f"; evaluation split `{d.eval_split}`).")
    lines.append(f"- Features: `{d.feature_dir}`, {m.feature_dim} channels resized to the "
                 f"{'x'.join(map(str, m.grid))} model grid; gaze frame {d.frame} px, Z extent "
                 f"{d.z_extent}.")
    lines.append(f"- Swin UNETR: feature_size {config.extract.feature_size}, merging order "
                 f"{config.extract.merging_order}, HU window [{config.extract.hu_min:g}, "
                 f"{config.extract.hu_max:g}].")
    metrics = info.get("metrics") or {}
    if metrics:
        lines += ["", f"## Metrics of the run (evaluation split, step {info.get('step')})", "",
                  "| metric | value | better |", "|---|---|---|"]
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
