"""Experiment tracking: a small `Tracker` interface; metrics.jsonl, TensorBoard and W&B.

`train.tracker` picks the dashboards (`[tensorboard]` by default, `[tensorboard, wandb]`, `[]`);
`metrics.jsonl` is always written (`report` and checkpoint selection read it). Only process 0
writes (`make_tracker` returns a `NullTracker` elsewhere), so a multi-host run logs each value
once. On resume, `start_step` drops what a killed run logged after its last checkpoint: JSON lines
with a larger step are removed, TensorBoard is told to purge them (purge_step), and W&B continues
the same run (its id is kept in `<workdir>/wandb/run_id`).

Dashboard tags are `<split>/<name>` with the names made plain (`tag`): `train/duration_loss`,
`eval/loss`, `eval/scanmatch_with_duration`; metrics.jsonl keeps the metric names themselves.
"""

from __future__ import annotations

import json
import math
import secrets
import sys
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
from PIL import Image

# tensorboardX's writer module runs `try: import torch` only to accept torch tensors, which we
# never log (floats and numpy images). With PyTorch installed (MONAI users, the test extra) that
# import costs about 2 s of every training start. While tensorboardX loads, a None entry in
# sys.modules makes `import torch` raise ImportError, which tensorboardX catches; a torch that is
# already imported is left alone, and later imports of torch work as usual.
_HIDE_TORCH = "torch" not in sys.modules
if _HIDE_TORCH:
    sys.modules["torch"] = None  # type: ignore[assignment]
try:
    from tensorboardX import SummaryWriter
    from tensorboardX.summary import hparams as hparams_summary
finally:
    if _HIDE_TORCH and sys.modules.get("torch", 0) is None:  # ours, not a real torch
        del sys.modules["torch"]

from ctsearcher_jax.errors import ConfigError, DataError
from ctsearcher_jax.installation import install_hint
from ctsearcher_jax.io import atomic_write_text, loads_json

TRACKERS = ("tensorboard", "wandb")

# metric name -> dashboard name, where the name alone does not say what it is
_PLAIN = {"spatial": "spatial_loss", "duration": "duration_loss"}


def tag(prefix: str, name: str) -> str:
    """Dashboard tag of metric `name` logged under `prefix` ("" = train).

    `eval_loss` under eval -> `eval/loss` (no doubled prefix); `duration` -> `duration_loss`.
    """
    prefix = prefix or "train"
    if name.startswith(prefix + "_"):
        name = name[len(prefix) + 1:]
    return f"{prefix}/{_PLAIN.get(name, name)}"


def _hparam_value(v: Any) -> bool | int | float | str:
    """A config value as the HParams plugin and W&B take it (tuples and null as text)."""
    if isinstance(v, (bool, int, float, str)):
        return v
    return "null" if v is None else str(list(v) if isinstance(v, tuple) else v)


class Tracker(Protocol):
    def log_scalars(self, step: int, scalars: Mapping[str, float], *, prefix: str = "") -> None: ...
    def log_hparams(self, hparams: Mapping[str, Any], metrics: Sequence[str] = ()) -> None: ...
    def log_image(self, step: int, name: str, png_path: Path) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class NullTracker:
    """Logs nothing (processes other than 0)."""

    def log_scalars(self, step, scalars, *, prefix=""):
        pass

    def log_hparams(self, hparams, metrics=()):
        pass

    def log_image(self, step, name, png_path):
        pass

    def flush(self):
        pass

    def close(self):
        pass


class JsonlTracker(NullTracker):
    """`<workdir>/metrics.jsonl`: one JSON object per log call: {"step", "split", values...}."""

    def __init__(self, path: Path, start_step: int = 0):
        self.path = Path(path)
        if self.path.exists():
            keep = []
            for line in self.path.read_text(errors="replace").splitlines():
                try:
                    row = loads_json(line, str(self.path))
                except DataError:
                    continue  # a line cut by a kill
                if isinstance(row, dict) and isinstance(row.get("step", 0), (int, float)) \
                        and row.get("step", 0) <= start_step:
                    keep.append(line)
            atomic_write_text(self.path, "".join(k + "\n" for k in keep))
        self._file = open(self.path, "a")

    def log_scalars(self, step, scalars, *, prefix=""):
        row = {"step": int(step), "split": prefix or "train"}
        # NaN/inf are not JSON: written as null (the run's loss exploding must still be visible).
        row.update({k: (float(v) if math.isfinite(float(v)) else None) for k, v in scalars.items()})
        self._file.write(json.dumps(row) + "\n")

    def flush(self):
        self._file.flush()

    def close(self):
        self._file.close()


class TensorBoardTracker(NullTracker):
    """tensorboardX event files in `<workdir>/tb`; scalars under `tag(prefix, name)`."""

    def __init__(self, logdir: Path, start_step: int = 0):
        self.writer = SummaryWriter(str(logdir), purge_step=start_step + 1 if start_step else None)
        self._session_end = None

    def log_scalars(self, step, scalars, *, prefix=""):
        for k, v in scalars.items():
            self.writer.add_scalar(tag(prefix, k), float(v), int(step))

    def log_hparams(self, hparams, metrics=()):
        """The config through TensorBoard's HParams plugin (one session = this run, its metric
        columns the eval tags), and as text."""
        values = {k: _hparam_value(v) for k, v in hparams.items()}
        experiment, start, end = hparams_summary(values, {tag("eval", m): 0.0 for m in metrics})
        self.writer.file_writer.add_summary(experiment)
        self.writer.file_writer.add_summary(start)
        self._session_end = end
        text = "\n".join(f"    {k}: {v}" for k, v in sorted(hparams.items()))
        self.writer.add_text("config", text, 0)

    def log_image(self, step, name, png_path):
        image = np.asarray(Image.open(png_path).convert("RGB"))
        self.writer.add_image(name, image, int(step), dataformats="HWC")

    def flush(self):
        self.writer.flush()

    def close(self):
        if self._session_end is not None:
            self.writer.file_writer.add_summary(self._session_end)
        self.writer.close()


class WandbTracker(NullTracker):
    """Weights & Biases (the `wandb` extra): the same scalars under the same
    tags, the config, and the scanpath figures, in `<workdir>/wandb`.

    The project is `train.wandb_project`; WANDB_MODE=offline (or `wandb offline`) keeps the run on
    disk for a later `wandb sync`. A resumed training run continues the same W&B run.
    """

    def __init__(self, workdir: Path, project: str, start_step: int = 0):
        try:
            import wandb  # noqa: PLC0415 (optional dependency: the [wandb] extra)
        except ImportError:
            raise ConfigError(f"train.tracker lists wandb but wandb is not installed: "
                              f"{install_hint('wandb')}, or drop wandb from "
                              f"train.tracker") from None
        self._wandb = wandb
        folder = Path(workdir) / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / "run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        if not id_file.is_file():
            atomic_write_text(id_file, run_id + "\n")
        # console="off": wandb must not wrap stdout/stderr (our logs and results stay as they are)
        self.run = wandb.init(project=project, dir=str(folder), id=run_id, resume="allow",
                              name=Path(workdir).resolve().name,
                              settings=wandb.Settings(console="off"))

    def log_scalars(self, step, scalars, *, prefix=""):
        self.run.log({tag(prefix, k): float(v) for k, v in scalars.items()}, step=int(step))

    def log_hparams(self, hparams, metrics=()):
        self.run.config.update({k: _hparam_value(v) for k, v in hparams.items()},
                               allow_val_change=True)

    def log_image(self, step, name, png_path):
        self.run.log({name: self._wandb.Image(str(png_path))}, step=int(step))

    def close(self):
        self.run.finish()


class MultiTracker(NullTracker):
    def __init__(self, trackers: list):
        self.trackers = trackers

    def log_scalars(self, step, scalars, *, prefix=""):
        for t in self.trackers:
            t.log_scalars(step, scalars, prefix=prefix)

    def log_hparams(self, hparams, metrics=()):
        for t in self.trackers:
            t.log_hparams(hparams, metrics)

    def log_image(self, step, name, png_path):
        for t in self.trackers:
            t.log_image(step, name, png_path)

    def flush(self):
        for t in self.trackers:
            t.flush()

    def close(self):
        for t in self.trackers:
            t.close()


def make_tracker(workdir: Path, *, process_index: int, start_step: int = 0,
                 trackers: Sequence[str] = ("tensorboard",),
                 wandb_project: str = "ctsearcher-jax") -> Tracker:
    """metrics.jsonl plus the dashboards named in `trackers` on process 0; nothing elsewhere."""
    if process_index != 0:
        return NullTracker()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out: list = [JsonlTracker(workdir / "metrics.jsonl", start_step)]
    if "tensorboard" in trackers:
        out.append(TensorBoardTracker(workdir / "tb", start_step))
    if "wandb" in trackers:
        out.append(WandbTracker(workdir, wandb_project, start_step))
    return MultiTracker(out)
