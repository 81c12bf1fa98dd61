"""Which CTs a run trains on and which it evaluates on during training (checkpoint selection).

`data.eval_split: validation` (the default) evaluates on a validation split: the dataset's own
(records with split `validation`, `valid` or `val`) when it has one, else one carved from the
training CTs: `data.validation_fraction` of them (at least one, never all), chosen by CT (a CT's
readers stay together) as the CTs whose `sha256("<data.validation_seed>/<name>")` is smallest.
The carve is a pure function of the training CTs' names and the seed: the same on every process
and at every launch (resume stays exact), independent of record order and of the numpy version,
and adding a CT to the dataset moves at most one CT between the two sides.

Any other `data.eval_split` names a split of the dataset as it is (`test`: the original's choice,
which selects the checkpoint on the test split; `none`: no evaluation).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Sequence

from ctsearcher_jax.config import DataConfig
from ctsearcher_jax.data.schema import CTItem
from ctsearcher_jax.errors import ConfigError, DataError

VALIDATION = "validation"
VALIDATION_NAMES = ("validation", "valid", "val")  # a dataset's own validation split
TEST = "test"


@dataclasses.dataclass(frozen=True)
class RunSplits:
    """The CTs of a run: `train` (what the model learns from), `evaluation` (what chooses the
    checkpoint), `test` (the dataset's test split, scored once at the end) and how `evaluation`
    was made: "carved" from the training split, "dataset" (a split of the file), or "none"."""

    train: tuple[CTItem, ...]
    evaluation: tuple[CTItem, ...]
    test: tuple[CTItem, ...]
    eval_split: str
    eval_source: str
    fraction: float | None = None
    seed: int | None = None

    @property
    def selects_on_test(self) -> bool:
        """True when the checkpoint is chosen on the test split (the original's protocol)."""
        return self.eval_source == "dataset" and self.eval_split == TEST and bool(self.evaluation)

    def record(self) -> dict[str, Any]:
        """What the run records (`inputs.json`, checkpoint metadata): sizes and CT names."""
        def readers(items):
            return sum(len(it.readers) for it in items)

        return {
            "eval_split": self.eval_split, "eval_source": self.eval_source,
            "validation_fraction": self.fraction, "validation_seed": self.seed,
            "sizes": {"train": {"cts": len(self.train), "scanpaths": readers(self.train)},
                      "evaluation": {"cts": len(self.evaluation),
                                     "scanpaths": readers(self.evaluation)},
                      "test": {"cts": len(self.test), "scanpaths": readers(self.test)}},
            "evaluation_cts": [it.name for it in self.evaluation],
        }


def carve_rank(name: str, seed: int) -> str:
    """The sort key of a CT in the carve: sha256 of "<seed>/<name>" (hex)."""
    return hashlib.sha256(f"{seed}/{name}".encode()).hexdigest()


def validation_count(num_train: int, fraction: float) -> int:
    """How many of `num_train` training CTs the carve takes: round(fraction * n), at least 1
    and at most n - 1 (0 when fraction is 0)."""
    if fraction <= 0:
        return 0
    return max(1, min(num_train - 1, round(fraction * num_train)))


def carve_validation(train: Sequence[CTItem], fraction: float, seed: int
                     ) -> tuple[tuple[CTItem, ...], tuple[CTItem, ...]]:
    """(remaining training CTs, validation CTs), each in the dataset's order (module docstring).

    Raises DataError when there are fewer than 2 training CTs to carve from.
    """
    n = validation_count(len(train), fraction)
    if n == 0:
        return tuple(train), ()
    if len(train) < 2:
        raise DataError(f"{len(train)} training CT: too few to carve a validation split from; "
                        f"add CTs, or set data.eval_split to a split of the dataset (e.g. test, "
                        f"as the original) or none")
    chosen = set(sorted((it.name for it in train), key=lambda name: carve_rank(name, seed))[:n])
    return (tuple(it for it in train if it.name not in chosen),
            tuple(it for it in train if it.name in chosen))


def split_items(items: Sequence[CTItem], data: DataConfig, source: str = "") -> RunSplits:
    """The run's splits of `items` (every CT of the dataset) under `data` (a DataConfig).

    Raises DataError when the training split is empty.
    """
    train = tuple(it for it in items if it.split == data.train_split)
    if not train:
        raise DataError(f"{source or data.data_dir}: no CT in the training split "
                        f"'{data.train_split}' (data.train_split)")
    test = tuple(it for it in items if it.split == TEST)
    if data.eval_split == VALIDATION:
        own = tuple(it for it in items if it.split in VALIDATION_NAMES)
        if own:
            return RunSplits(train, own, test, VALIDATION, "dataset")
        rest, validation = carve_validation(train, data.validation_fraction,
                                            data.validation_seed)
        return RunSplits(rest, validation, test, VALIDATION, "carved" if validation else "none",
                         data.validation_fraction, data.validation_seed)
    if data.eval_split == data.train_split:
        raise ConfigError(f"data.eval_split={data.eval_split!r} is the training split; use "
                          f"'validation' (carved from it) or another split")
    evaluation = tuple(it for it in items if it.split == data.eval_split)
    return RunSplits(train, evaluation, test, data.eval_split,
                     "dataset" if evaluation else "none")


def describe_selection(record: dict[str, Any] | None) -> str:
    """Words for the split that chose a checkpoint, from `RunSplits.record()` (or None)."""
    if not record:
        return "an evaluation split the run did not record"
    n = (record.get("sizes") or {}).get("evaluation", {}).get("cts")
    cts = "" if n is None else f"{n} CT" if n == 1 else f"{n} CTs"
    split, source = record.get("eval_split"), record.get("eval_source")
    if source == "carved":
        return (f"the validation split ({cts} carved from the training split: "
                f"data.validation_fraction {record.get('validation_fraction')}, "
                f"data.validation_seed {record.get('validation_seed')})")
    if source == "dataset":
        return f"the dataset's {split} split" + (f" ({cts})" if cts else "")
    if source == "none":
        return "no split (no evaluation during training)"
    return f"the {split} split (how it was made is not recorded)"
