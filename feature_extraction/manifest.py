"""The feature directory's `manifest.json`: what was extracted from which file, how.

Layout (JSON, written atomically after every volume so an interrupted run keeps its progress):

    {"format": "ctsearcher-features/1",
     "volumes": {"<name>": {
         "source": "/abs/path/<name>.nii.gz", "source_size": bytes, "source_sha256": hex,
         "volume_shape": [I, J, K], "padded_shape": [...], "grid_shape": [gi, gj, gk],
         "spacing": [mm, mm, mm], "channels": C, "windows": W,
         "weights": {"kind": "file" | "random", "sha256": hex, "path" | "seed": ...},
         "settings": {roi, overlap, hu_min, hu_max, merge, canonical, compute_dtype,
                      feature_size, merging_order},
         "dtype": "float32", "outputs": {"dec4": "<name>.npy",
                                         "hidden_states_out_4": "<name>_hidden_states_out_4.npy"},
         "created": ISO-8601 UTC}}}

With several processes (multi-host extraction) process p writes `manifest.part-<p>.json`; process 0
merges the parts into `manifest.json` at the end. `read_manifest` reads `manifest.json` and any parts.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ctsearcher_jax.errors import DataError
from ctsearcher_jax.io import atomic_write_json

FORMAT = "ctsearcher-features/1"
MANIFEST = "manifest.json"
PART_GLOB = "manifest.part-*.json"


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(out_dir: str | os.PathLike[str], process_index: int = 0,
                  process_count: int = 1) -> Path:
    """Where this process records its volumes."""
    if process_count == 1:
        return Path(out_dir) / MANIFEST
    return Path(out_dir) / f"manifest.part-{process_index:05d}.json"


def _read_one(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable feature manifest ({exc}); delete it to re-extract") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("volumes"), dict):
        raise DataError(f"{path}: not a {FORMAT} manifest; delete it to re-extract")
    return data["volumes"]


def read_part(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Entries of one manifest file ({} when it does not exist yet)."""
    path = Path(path)
    return _read_one(path) if path.is_file() else {}


def read_manifest(out_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """All volume entries of a feature directory (`manifest.json` plus per-process parts), by name."""
    out_dir = Path(out_dir)
    volumes: dict[str, dict[str, Any]] = {}
    main = out_dir / MANIFEST
    if main.is_file():
        volumes.update(_read_one(main))
    for part in sorted(out_dir.glob(PART_GLOB)):
        volumes.update(_read_one(part))
    return volumes


def write_manifest(path: str | os.PathLike[str], volumes: dict[str, dict[str, Any]]) -> Path:
    """Write entries atomically (sorted by name)."""
    return atomic_write_json(path, {"format": FORMAT, "volumes": dict(sorted(volumes.items()))})


def merge_parts(out_dir: str | os.PathLike[str]) -> Path:
    """Fold every `manifest.part-*.json` into `manifest.json` and remove the parts (process 0, at the end)."""
    out_dir = Path(out_dir)
    parts = sorted(out_dir.glob(PART_GLOB))
    path = write_manifest(out_dir / MANIFEST, read_manifest(out_dir))
    for part in parts:
        part.unlink()
    return path


def entry_is_current(entry: dict[str, Any] | None, *, source_sha256: str, settings: dict[str, Any],
                     weights_sha256: str, out_dir: str | os.PathLike[str]) -> bool:
    """True when `entry` was made from the same bytes, settings and weights and its outputs exist."""
    if not entry:
        return False
    if entry.get("source_sha256") != source_sha256 or entry.get("settings") != settings:
        return False
    if (entry.get("weights") or {}).get("sha256") != weights_sha256:
        return False
    outputs = entry.get("outputs") or {}
    return bool(outputs) and all((Path(out_dir) / name).is_file() for name in outputs.values())
