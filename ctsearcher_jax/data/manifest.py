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

import os
from pathlib import Path
from typing import Any

import numpy as np

from ctsearcher_jax.errors import DataError
from ctsearcher_jax.io import atomic_write_json, read_json
from ctsearcher_jax.paths import name_problem

FORMAT = "ctsearcher-features/1"
MANIFEST = "manifest.json"
PART_GLOB = "manifest.part-*.json"


def manifest_path(out_dir: str | os.PathLike[str], process_index: int = 0,
                  process_count: int = 1) -> Path:
    """Where this process records its volumes."""
    if process_count == 1:
        return Path(out_dir) / MANIFEST
    return Path(out_dir) / f"manifest.part-{process_index:05d}.json"


def _read_one(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except DataError as exc:
        raise DataError(f"{exc} (an unreadable feature manifest; delete it to re-extract)") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("volumes"), dict):
        raise DataError(f"{path}: not a {FORMAT} manifest; delete it to re-extract")
    bad = [name for name in data["volumes"] if name_problem(name) is not None]
    if bad:
        raise DataError(f"{path}: volume name {bad[0]!r} {name_problem(bad[0])}; not a manifest "
                        "this tool writes: delete it to re-extract")
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
    """True when `entry` was made from the same bytes, settings and weights and its outputs are
    intact (`outputs_intact`: a truncated or replaced array is not up to date)."""
    if not entry:
        return False
    if entry.get("source_sha256") != source_sha256 or entry.get("settings") != settings:
        return False
    if (entry.get("weights") or {}).get("sha256") != weights_sha256:
        return False
    return outputs_intact(entry, out_dir) is None


def describe_weights(weights: Any) -> str:
    """The weights of a manifest entry in words (for messages)."""
    if not isinstance(weights, dict):
        return "unrecorded weights"
    size = f"feature_size {weights.get('feature_size')}"
    if weights.get("kind") == "random":
        return f"a random-initialised encoder (weights 'random', seed {weights.get('seed')}, {size})"
    sha = str(weights.get("sha256", ""))[:12]
    return f"weights file {weights.get('path')} (sha256 {sha}..., {size})"


def same_weights(entry: dict[str, Any], weights: dict[str, Any]) -> bool:
    """Whether a manifest entry was made with the encoder `weights` (an extractor's record)."""
    have = entry.get("weights") if isinstance(entry, dict) else None
    return isinstance(have, dict) and have.get("sha256") == weights.get("sha256")


def expected_shape(entry: dict[str, Any]) -> tuple[int, ...] | None:
    """`(channels, gi, gj, gk)` of an entry's arrays, or None when the entry does not say."""
    try:
        shape = (int(entry["channels"]), *(int(g) for g in entry["grid_shape"]))
    except (KeyError, TypeError, ValueError):
        return None
    return shape if len(shape) == 4 else None


def npy_problem(path: Path, shape: tuple[int, ...] | None) -> str | None:
    """Why the `.npy` at `path` is not a complete float32 array of `shape` (None when it is).

    Reads only the header and the file size, so checking a cache of thousands of CTs is cheap:
    a truncated file (a copy cut short, a full disk) has fewer bytes than its header promises.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)(f)
            offset = f.tell()
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError) as exc:
        return f"not a readable .npy ({str(exc).splitlines()[0][:120]})"
    got_shape, _, dtype = header
    if dtype != np.dtype(np.float32):
        return f"dtype {dtype}, expected float32"
    if shape is not None and tuple(got_shape) != tuple(shape):
        return f"shape {tuple(got_shape)}, the manifest says {tuple(shape)}"
    need = offset + int(np.prod(got_shape)) * dtype.itemsize
    if size != need:
        return f"{size} bytes, a complete array has {need} (truncated or damaged)"
    return None


def outputs_intact(entry: dict[str, Any], out_dir: str | os.PathLike[str]) -> str | None:
    """Why an entry's output arrays cannot be trusted (None when they are all intact)."""
    outputs = entry.get("outputs") or {}
    if not isinstance(outputs, dict) or not outputs:
        return "the manifest lists no outputs"
    shape = expected_shape(entry)
    for name in outputs.values():
        if name_problem(name) is not None:
            return f"output name {name!r} {name_problem(name)}"
        problem = npy_problem(Path(out_dir) / name, shape)
        if problem is not None:
            return f"{Path(out_dir) / name}: {problem}"
    return None
