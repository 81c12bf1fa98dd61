"""What a training run learned from, recorded once per launch in `<workdir>/inputs.json`:

    {"dataset":  {"path", "sha256", "cts", "scanpaths"},
     "features": {"dir", "manifest", "manifest_sha256", "encoders": [...], "unrecorded_cts"},
     "splits":   RunSplits.record() (eval split, how it was made, sizes, evaluation CT names)}

`encoders` lists the Swin UNETR weights the run's feature files were made with (from the feature
manifest, one entry per distinct weights hash): `{"kind": "file", "path", "sha256",
"feature_size"}` or `{"kind": "random", "seed", "sha256", "feature_size"}`; features without a
manifest entry (extracted elsewhere) are counted in `unrecorded_cts`. The model card
(`model/card.py`) and the report read this file; `encoder_words` says it in one phrase.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from ctsearcher_jax.data.manifest import MANIFEST, read_manifest
from ctsearcher_jax.data.schema import CTItem, find_dataset_json
from ctsearcher_jax.data.splits import RunSplits
from ctsearcher_jax.errors import DataError
from ctsearcher_jax.io import atomic_write_json, file_sha256, read_json

INPUTS = "inputs.json"


def _encoders(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for entry in entries:
        weights = entry.get("weights") if isinstance(entry, dict) else None
        if not isinstance(weights, dict):
            continue
        key = str(weights.get("sha256"))
        if key not in seen:
            seen[key] = {k: weights.get(k) for k in ("kind", "path", "seed", "sha256", "feature_size")
                         if weights.get(k) is not None}
            seen[key]["cts"] = 0
        seen[key]["cts"] += 1
    return list(seen.values())


def describe_inputs(data_dir: str | os.PathLike[str], feature_dir: str | os.PathLike[str],
                    items: Sequence[CTItem], splits: RunSplits) -> dict[str, Any]:
    """The `inputs.json` content of a run over `items` (every CT of the dataset) and `splits`."""
    json_path = find_dataset_json(data_dir)
    used = {it.name for it in (*splits.train, *splits.evaluation)}
    feature_dir = Path(feature_dir)
    try:
        manifest = read_manifest(feature_dir)
    except DataError:
        manifest = {}  # an unreadable manifest: the features are unrecorded, not the run broken
    manifest_file = feature_dir / MANIFEST
    return {
        "dataset": {"path": str(json_path.resolve()), "sha256": file_sha256(json_path),
                    "cts": len(items), "scanpaths": sum(len(it.readers) for it in items)},
        "features": {
            "dir": str(feature_dir.resolve()),
            "manifest": str(manifest_file.resolve()) if manifest_file.is_file() else None,
            "manifest_sha256": file_sha256(manifest_file) if manifest_file.is_file() else None,
            "encoders": _encoders(manifest[n] for n in sorted(used) if n in manifest),
            "unrecorded_cts": len([n for n in used if n not in manifest]),
        },
        "splits": splits.record(),
    }


def write_inputs(workdir: str | os.PathLike[str], inputs: dict[str, Any]) -> Path:
    """Write `<workdir>/inputs.json` atomically."""
    return atomic_write_json(Path(workdir) / INPUTS, inputs)


def read_inputs(workdir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """`<workdir>/inputs.json`, or None when the run did not record it (older runs) or it is
    unreadable."""
    path = Path(workdir) / INPUTS
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except DataError:
        return None
    return data if isinstance(data, dict) else None


def random_encoder(inputs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The random-initialised encoder the features came from, or None (file weights, unknown)."""
    for enc in ((inputs or {}).get("features") or {}).get("encoders") or []:
        if isinstance(enc, dict) and enc.get("kind") == "random":
            return enc
    return None


def encoder_words(inputs: dict[str, Any] | None) -> str:
    """The Swin UNETR weights of a run's features in one phrase (for the card and the report)."""
    features = (inputs or {}).get("features")
    if not isinstance(features, dict):
        return "not recorded (no inputs.json in the run)"
    parts = []
    for enc in features.get("encoders") or []:
        size = f"feature_size {enc.get('feature_size')}"
        if enc.get("kind") == "random":
            parts.append(f"random-initialised (seed {enc.get('seed')}, {size}; no pretrained "
                         f"weights)")
        else:
            parts.append(f"file {enc.get('path')} (sha256 {enc.get('sha256')}, {size})")
    if features.get("unrecorded_cts"):
        parts.append(f"not recorded for {features['unrecorded_cts']} CT(s) (no manifest entry)")
    return "; ".join(parts) or "not recorded (no feature manifest)"
