"""Tiny on-disk datasets for the training tests: dataset JSON + random feature grids.

Also runnable as a script (used by subprocess tests): `python tinydata.py OUT_DIR`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

FEATURE_DIM = 8
FEATURE_GRID = (3, 3, 2)  # deliberately not the model grid: exercises the legacy nearest resize
DATASET_JSON = "data_simplified_split_matched_pt.json"


def write_tiny_dataset(out: Path, *, num_train: int = 6, num_test: int = 3, seed: int = 0) -> Path:
    """Write `out/data/<json>` and `out/features/<name>.npy`; CTs have 1 to 3 readers."""
    rng = np.random.default_rng(seed)
    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "features").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(num_train + num_test):
        name = f"ct_{i:03d}"
        split = "train" if i < num_train else "test"
        for reader in range(1 + i % 3):
            n = int(rng.integers(1, 12))
            records.append({
                "name": name, "subject": reader + 1, "task": "t",
                "X": rng.uniform(1, 512, n).round(1).tolist(),
                "Y": rng.uniform(1, 512, n).round(1).tolist(),
                "Z": rng.uniform(1, 512, n).round(1).tolist(),
                "T": rng.uniform(0.05, 0.8, n).round(3).tolist(),
                "length": n, "split": split, "report": "",
            })
        grid = rng.normal(size=(FEATURE_DIM, *FEATURE_GRID)).astype(np.float32)
        np.save(out / "features" / f"{name}.npy", grid, allow_pickle=False)
    (out / "data" / DATASET_JSON).write_text(json.dumps(records))
    return out


def tiny_config_dict(root: Path, **train_overrides) -> dict:
    """Config mapping of a tiny model on the tiny dataset (plain data, YAML-writable)."""
    train = {"seed": 3, "lr": 3e-3, "warmup_epochs": 1, "epochs": 3, "batch_size": 4,
             "log_every": 1, "eval_every_epochs": 1, "keep_last": 2, "keep_best": 1,
             "eval_scanpath_metrics": False}
    train.update(train_overrides)
    return {
        "model": {"d_model": 16, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1,
                  "dim_feedforward": 32, "dropout": 0.1, "feature_dim": FEATURE_DIM,
                  "grid": [2, 2, 2], "max_length": 8},
        # eval_split test: these runs check the training mechanics on fixed CT counts (16
        # training CTs = 2 steps per epoch); the validation carve has its own tests
        # (tests/data/test_splits.py, tests/train/test_validation_split.py).
        "data": {"data_dir": str(Path(root) / "data"), "feature_dir": str(Path(root) / "features"),
                 "eval_split": "test"},
        "train": train,
        "eval": {"best_metric": "eval_loss", "min_length": 1},
    }


if __name__ == "__main__":
    write_tiny_dataset(Path(sys.argv[1]))
