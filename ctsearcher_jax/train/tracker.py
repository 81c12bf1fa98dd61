"""Experiment tracking: a small `Tracker` interface, TensorBoard and JSON-lines implementations.

Only process 0 writes (`make_tracker` returns a `NullTracker` elsewhere), so a multi-host run logs
each value once. On resume, `start_step` drops what a killed run logged after its last checkpoint:
JSON lines with a larger step are removed, and TensorBoard is told to purge them (purge_step).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np

from ctsearcher_jax.errors import DataError
from ctsearcher_jax.io import atomic_write_text, loads_json


class Tracker(Protocol):
    def log_scalars(self, step: int, scalars: Mapping[str, float], *, prefix: str = "") -> None: ...
    def log_hparams(self, hparams: Mapping[str, Any]) -> None: ...
    def log_image(self, step: int, name: str, png_path: Path) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class NullTracker:
    """Logs nothing (processes other than 0)."""

    def log_scalars(self, step, scalars, *, prefix=""):
        pass

    def log_hparams(self, hparams):
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
    """tensorboardX event files in `<workdir>/tb`; scalars under `<prefix>/<name>`."""

    def __init__(self, logdir: Path, start_step: int = 0):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(logdir), purge_step=start_step + 1 if start_step else None)

    def log_scalars(self, step, scalars, *, prefix=""):
        for k, v in scalars.items():
            self.writer.add_scalar(f"{prefix or 'train'}/{k}", float(v), int(step))

    def log_hparams(self, hparams):
        text = "\n".join(f"    {k}: {v}" for k, v in sorted(hparams.items()))
        self.writer.add_text("config", text, 0)

    def log_image(self, step, name, png_path):
        from PIL import Image

        image = np.asarray(Image.open(png_path).convert("RGB"))
        self.writer.add_image(name, image, int(step), dataformats="HWC")

    def flush(self):
        self.writer.flush()

    def close(self):
        self.writer.close()


class MultiTracker(NullTracker):
    def __init__(self, trackers: list):
        self.trackers = trackers

    def log_scalars(self, step, scalars, *, prefix=""):
        for t in self.trackers:
            t.log_scalars(step, scalars, prefix=prefix)

    def log_hparams(self, hparams):
        for t in self.trackers:
            t.log_hparams(hparams)

    def log_image(self, step, name, png_path):
        for t in self.trackers:
            t.log_image(step, name, png_path)

    def flush(self):
        for t in self.trackers:
            t.flush()

    def close(self):
        for t in self.trackers:
            t.close()


def make_tracker(workdir: Path, *, process_index: int, start_step: int = 0) -> Tracker:
    """TensorBoard + metrics.jsonl on process 0; nothing elsewhere."""
    if process_index != 0:
        return NullTracker()
    workdir = Path(workdir)
    return MultiTracker([TensorBoardTracker(workdir / "tb", start_step),
                         JsonlTracker(workdir / "metrics.jsonl", start_step)])
