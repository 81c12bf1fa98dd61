"""The model a finished run leaves for `predict`: the best checkpoint by `eval.best_metric`,
else the final state, written to `<workdir>/model/` in the `save_model` format (weights,
config.json/yaml, a README.md model card with the run's metrics at that step and what it was
trained on, from `inputs.json`) with `export.json` (step, total steps, the selecting metric, its
value and direction, and the split it was computed on: `selected_on`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
from flax import nnx

from ctsearcher_jax.config import Config
from ctsearcher_jax.data.inputs import read_inputs
from ctsearcher_jax.errors import DataError
from ctsearcher_jax.io import atomic_write_json, loads_json
from ctsearcher_jax.model.factory import build
from ctsearcher_jax.model.serialization import save_model
from ctsearcher_jax.train.checkpoint import metric_higher_is_better
from ctsearcher_jax.train.evaluators import model_state_on_host


def eval_metrics_at(workdir: Path, step: int) -> dict[str, float | None]:
    """Every metric evaluated at `step` (from metrics.jsonl; the last such row), or {}."""
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return {}

    found: dict[str, float | None] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = loads_json(line, str(path))
        except DataError:
            continue  # a line cut by a kill
        if isinstance(row, dict) and row.get("step") == step and row.get("split") == "eval":
            found = {k: v for k, v in row.items() if k not in ("step", "split")}
    return found


def checkpoint_metric(workdir: Path, step: int, name: str | None) -> float | None:
    """`name` as evaluated at `step` (from metrics.jsonl), or None."""
    if name is None:
        return None
    return eval_metrics_at(workdir, step).get(name)


def export_model(config: Config, state, out_dir: Path, info: dict[str, Any],
                 card: dict[str, Any] | None = None) -> None:
    """Write the model of a TrainState in the `save_model` format (for `predict`/`evaluate`),
    plus `export.json` saying which step it is (`info`); `card`: what the model card adds
    (defaults to `info`).

    Every process takes part (gathering the parameters is a collective); process 0 writes.
    """
    host = model_state_on_host(state)
    if jax.process_index() == 0:
        model = build(config.model, nnx.Rngs(0))
        nnx.update(model, host)
        save_model(out_dir, model, config, card=card)
        atomic_write_json(out_dir / "export.json", info)


def export_selected(config: Config, workdir: Path, checkpoints, state, *, step: int,
                    total_steps: int, best_metric: str | None, restore_target) -> int:
    """Export the best checkpoint (by `best_metric` in its direction), else `state` at `step`.

    checkpoints: the run's `RunCheckpoints`; restore_target: the TrainState of ShapeDtypeStructs
    to restore the best step into. Returns the exported step.
    """
    best = checkpoints.best_step()
    exported = best if best is not None else step
    if exported != step:
        tree = checkpoints.restore_state(exported, restore_target.checkpoint_tree())
        state = type(restore_target).from_checkpoint_tree(tree)
    selected = best_metric if exported == best else None

    metrics = eval_metrics_at(workdir, exported)
    direction = None if selected is None else (
        "higher is better" if metric_higher_is_better(selected) else "lower is better")
    inputs = read_inputs(workdir)
    splits = (inputs or {}).get("splits") or {}
    info = {"step": exported, "total_steps": total_steps, "selected_by": selected,
            "value": metrics.get(selected) if selected else None, "direction": direction,
            # the split the metrics (and so the selection) were computed on
            "selected_on": {k: splits.get(k) for k in ("eval_split", "eval_source",
                                                       "validation_fraction", "validation_seed")}
            | {"cts": (splits.get("sizes") or {}).get("evaluation", {}).get("cts")}}
    card = {**info, "metrics": metrics, "directions": _directions(metrics), "inputs": inputs}
    try:
        card["num_train_cts"] = checkpoints.read_meta(exported).get("num_train_cts")
    except Exception:  # noqa: BLE001 - the card's CT count is informative only
        pass
    export_model(config, state, workdir / "model", info, card)
    return exported


def _directions(metrics: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name in metrics:
        try:
            out[name] = "higher" if metric_higher_is_better(name) else "lower"
        except Exception:  # noqa: BLE001 - a metric without a declared direction
            continue
    return out
