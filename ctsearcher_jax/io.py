"""Atomic file writes: a reader never sees a half-written file, and a failure keeps the old one."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ctsearcher_jax.errors import DataError
from ctsearcher_jax.paths import os_error

_UMASK = os.umask(0)
os.umask(_UMASK)


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, streamed (CTs, weights files, datasets)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call `write(fileobj)` on a temporary file next to `path`, fsync it, then rename over `path`.

    An OSError (disk full, permissions, a file where a folder is expected) becomes one-line
    `OutputError` naming `path`; the old file, if any, is untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise os_error(path, exc) from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise os_error(path, exc) from None
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


# ----------------------------------------------------------------------------- reading JSON

# Integers longer than this cannot be a float64 (max ~1.8e308) and would make Python spend time
# (or refuse, beyond 4300 digits) converting them; they are read as +-inf so that the record
# checks report them as non-finite values with the record and field named.
_MAX_INT_DIGITS = 309


def _parse_int(text: str) -> int | float:
    digits = text.lstrip("-")
    if len(digits) > _MAX_INT_DIGITS:
        return float("-inf") if text.startswith("-") else float("inf")
    value = int(text)
    try:
        float(value)
    except OverflowError:
        return float("-inf") if value < 0 else float("inf")
    return value


def loads_json(text: str | bytes, source: str, error: type[Exception] | None = None) -> Any:
    """Parse JSON text from `source` (a file name, for messages) with hostile input in mind.

    Invalid JSON, nesting too deep for the parser, and text that is not UTF-8 become one-line
    `error` (default `DataError`) naming `source`; integers beyond float range become +-inf
    (callers that validate values then name the record and field).
    """
    error = error or DataError
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise error(f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                    f"{exc.msg})") from None
    except RecursionError:
        raise error(f"{source}: JSON nested too deeply to read (arrays or objects inside each "
                    "other thousands of levels deep); not a file this tool writes") from None
    except UnicodeDecodeError:
        raise error(f"{source}: not a UTF-8 JSON text file") from None
    except (ValueError, TypeError) as exc:
        raise error(f"{source}: not valid JSON ({str(exc).splitlines()[0][:200]})") from None


def read_json(path: str | os.PathLike[str], error: type[Exception] | None = None) -> Any:
    """Read and parse a JSON file (see `loads_json`); an unreadable file is one-line `error`."""
    error = error or DataError
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise error(f"{path}: is a folder, expected a JSON file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    return loads_json(data, str(path), error)
