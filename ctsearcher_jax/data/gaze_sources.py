"""The scanpaths and volume of a CT as the figure commands (`visualize`, `view`) read them.

One place for: the dataset JSON, the optional predictions file, the CT volumes, the `--reader`
filter, and the one-line errors when a CT, its volume, its predictions or a reader is missing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from ctsearcher_jax.data.inspect import find_volumes
from ctsearcher_jax.data.schema import CTItem, Scanpath, find_dataset_json, load_dataset, load_records
from ctsearcher_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class GazeSources:
    """Ground truth, predictions and volumes of a dataset folder, filtered by reader."""

    json_path: Path                       # the dataset JSON
    items: dict[str, CTItem]              # CT name -> its ground-truth readers
    pred_path: str | None                 # the predictions file, when given
    pred_by_ct: dict[str, list[Scanpath]]  # CT name -> predicted scanpaths (file order)
    cts_dir: Path                         # <data>/cts
    volumes: dict[str, Path]              # CT name -> NIfTI file
    readers: frozenset[str] | None        # subject ids kept (None = every reader)

    @classmethod
    def load(cls, data: str | Path, pred: str | None = None,
             readers: Sequence[str] | None = None) -> "GazeSources":
        json_path = find_dataset_json(data)
        items = {it.name: it for it in load_dataset(json_path)}
        pred_by_ct: dict[str, list[Scanpath]] = {}
        if pred:
            for sp in load_records(pred, require_split=False, default_z_limit=None):
                pred_by_ct.setdefault(sp.name, []).append(sp)
        cts_dir = json_path.parent / "cts"
        volumes = find_volumes(cts_dir) if cts_dir.is_dir() else {}
        keep = None if readers is None else frozenset(str(r) for r in readers)
        return cls(json_path, items, pred, pred_by_ct, cts_dir, volumes, keep)

    def select(self, name: str, *, need_ground_truth: bool = True
               ) -> tuple[list[Scanpath], list[Scanpath]]:
        """(ground-truth readers, predictions) of CT `name` after the reader filter.

        Raises DataError naming the file when the CT, its volume, its predictions (when a
        predictions file was given) or the chosen readers are missing. With
        `need_ground_truth=False` a CT that only the predictions name is accepted.
        """
        in_gt = name in self.items
        if not in_gt and (need_ground_truth or name not in self.pred_by_ct):
            known = sorted(self.items)
            shown = ", ".join(known[:10]) + (f", ... ({len(known)} CTs)" if len(known) > 10 else "")
            also = f" nor in {self.pred_path}" if self.pred_path and not need_ground_truth else ""
            raise DataError(f"CT {name!r} is not in {self.json_path}{also}; known CTs: {shown}")
        if name not in self.volumes:
            raise DataError(f"CT {name!r}: no volume {self.cts_dir / (name + '.nii.gz')}; put the "
                            f"CT there (NIfTI .nii.gz or .nii)")
        gt = list(self.items[name].readers) if in_gt else []
        pred = self.pred_by_ct.get(name, [])
        if self.pred_path and not pred:
            raise DataError(f"{self.pred_path}: no predicted scanpath for CT {name!r}")
        if self.readers is not None:
            gt = [sp for sp in gt if str(sp.subject) in self.readers]
            pred = [sp for sp in pred if str(sp.subject) in self.readers]
            if not gt and (need_ground_truth or not pred):
                have = [str(s.subject) for s in self.items[name].readers] if in_gt else []
                raise DataError(f"CT {name!r}: no scanpath of reader(s) {sorted(self.readers)} in "
                                f"{self.json_path}" + (f" or {self.pred_path}" if self.pred_path else "")
                                + f"; its readers are {have}")
        return gt, pred
