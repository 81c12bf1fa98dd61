"""Paths built from user data, and output paths checked before any work starts.

Two jobs, one per half of this module:

- **Names as path components.** A record's `name` (a CT) becomes `<feature_dir>/<name>.npy`,
  `figures/<name>_projections.png`, ... A crafted name (`../../x`, `/etc/x`, `a/b`) must never read
  or write outside its folder. `name_problem` says why a name is not a plain file name;
  `child_path` is the only way a name becomes a path. The dataset reader (`data.schema`) refuses
  such records, so `validate-data` lists them, and every command refuses them before touching a
  file.
- **Outputs.** `check_output_file` / `check_output_dir` run before the expensive work: an output
  that is one of the command's inputs (also through links), a folder where a file is expected (or
  the reverse), a parent that is a file or not writable are refused with one line naming the path.
  `os_error` turns an `OSError` met while writing into that one line.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Iterable

from ctsearcher_jax.errors import DataError, OutputError

# A CT name is at most this many UTF-8 bytes, leaving room for the longest suffix we add
# (`_hidden_states_out_4.npy`) and the atomic writer's `.<name>.<random>.tmp` within the usual
# 255-byte file-name limit.
MAX_NAME_BYTES = 200


def name_problem(name: object) -> str | None:
    """Why `name` cannot be used as a file-name component (None when it can)."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if name in (".", ".."):
        return f"{name!r} is a directory reference, not a file name"
    if "/" in name or "\\" in name:
        return "contains a path separator ('/' or '\\'); a CT name is a plain file name"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains control characters (NUL, newline, ...)"
    if name.startswith("."):
        return "starts with '.' (a hidden file name)"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def check_name(name: object, where: str) -> str:
    """`name` itself, or DataError `"{where}: name ... <why>"` when it is not a plain file name."""
    problem = name_problem(name)
    if problem is not None:
        raise DataError(f"{where}: name {name!r} {problem}; rename the record/file")
    return name  # type: ignore[return-value]


def child_path(directory: str | os.PathLike[str], name: str, suffix: str = "", *,
               where: str | None = None) -> Path:
    """`directory / (name + suffix)` after checking `name` (DataError naming `where` or the name)."""
    check_name(name, where or f"CT {name!r}")
    return Path(directory) / f"{name}{suffix}"


# ----------------------------------------------------------------------------- outputs

def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when `a` and `b` are the same file (links resolved; also when neither exists yet)."""
    a, b = Path(a), Path(b)
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _first_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _writable_dir(directory: Path, flag: str, target: Path) -> None:
    """OutputError unless `directory` (existing) is a folder we can create files in."""
    if not directory.is_dir():
        raise OutputError(f"{flag} {target}: {directory} is a file, not a folder; choose another "
                          f"{flag}")
    try:  # a real probe: os.access ignores read-only mounts and is always True for root
        fd, probe = tempfile.mkstemp(prefix=".ctsearcher-probe.", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{flag} {target}: cannot write in {directory} "
                          f"({exc.strerror or exc}); choose a writable location") from None


def check_output_file(path: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str]] = (),
                      flag: str = "--out") -> Path:
    """Check, before any work, that a file can be written at `path` without losing an input.

    Refused (OutputError naming `path`): `path` resolves to one of `inputs`; `path` is an existing
    folder; its nearest existing ancestor is a file or is not writable. Returns `path`.
    """
    path = Path(path)
    for src in inputs:
        if src is not None and Path(src).exists() and same_file(path, src):
            raise OutputError(f"{flag} {path}: is the input {src}; writing it would destroy the "
                              f"input, choose another {flag}")
    if path.is_dir():
        raise OutputError(f"{flag} {path}: is a folder; give a file name (e.g. {path / 'out.json'})")
    _writable_dir(_first_existing(path.parent), flag, path)
    return path


def check_output_dir(path: str | os.PathLike[str], *, flag: str = "--out") -> Path:
    """Check, before any work, that `path` is (or can be made) a writable folder. Returns `path`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path}: is a file, not a folder; choose another {flag}")
    _writable_dir(_first_existing(path), flag, path)
    return path


def os_error(path: str | os.PathLike[str] | None, exc: OSError, action: str = "cannot write") -> OutputError:
    """One-line OutputError for an OSError met at `path` (disk full, permissions, ...)."""
    where = exc.filename if path is None and getattr(exc, "filename", None) else path
    cause = exc.strerror or str(exc) or type(exc).__name__
    hint = {errno.ENOSPC: "; free some space and run again (earlier results are intact)",
            errno.EDQUOT: "; free some space and run again (earlier results are intact)",
            errno.EACCES: "; check the folder's permissions",
            errno.EROFS: "; choose a writable location"}.get(exc.errno or 0, "")
    return OutputError(f"{where}: {action} ({cause}){hint}")
