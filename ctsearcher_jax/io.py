"""Atomic file writes: a reader never sees a half-written file, and a failure keeps the old one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call `write(fileobj)` on a temporary file next to `path`, fsync it, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write text atomically."""
    return atomic_write(path, lambda f: f.write(text), mode="w")


def atomic_write_json(path: str | os.PathLike[str], data: Any, indent: int | None = 1) -> Path:
    """Write JSON atomically (NaN/inf refused: they are not JSON)."""
    return atomic_write_text(path, json.dumps(data, indent=indent, allow_nan=False) + "\n")


def atomic_save_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Save one array as `.npy` atomically (never pickled)."""
    return atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))
