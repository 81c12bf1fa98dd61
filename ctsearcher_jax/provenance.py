"""Where a result came from: package version, git commit (when run from a checkout), time,
devices. `train` appends one entry per launch to `<workdir>/provenance.json`; `report` prints
them next to its own."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from ctsearcher_jax._version import __version__
from ctsearcher_jax.errors import DataError
from ctsearcher_jax.io import atomic_write_json, read_json

PROVENANCE = "provenance.json"


def git_commit(root: Path | None = None) -> str | None:
    """`<sha>` (`<sha>+dirty` with uncommitted changes) of the checkout the package runs from;
    None for an installed package or when git is unavailable."""
    root = Path(__file__).resolve().parents[1] if root is None else Path(root)
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "") if sha else None


def collect(devices: dict[str, Any] | None = None) -> dict[str, Any]:
    """This process's provenance: version, commit, UTC time, host, Python, and `devices` (e.g.
    `runtime.devices.describe()`) when given."""
    info: dict[str, Any] = {
        "ctsearcher_jax": __version__,
        "git_commit": git_commit(),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
    }
    if devices is not None:
        info["devices"] = devices
    return info


def record_launch(workdir: str | os.PathLike[str], info: dict[str, Any]) -> Path:
    """Append `info` to the `launches` of `<workdir>/provenance.json` (atomically)."""
    path = Path(workdir) / PROVENANCE
    launches: list = []
    if path.is_file():
        try:
            launches = list(read_json(path).get("launches", []))
        except (DataError, AttributeError, TypeError):
            launches = []  # a damaged file: start again rather than fail the run
    return atomic_write_json(path, {"launches": [*launches, info]})


def read_launches(workdir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The launches recorded in `<workdir>/provenance.json` ([] when none)."""
    path = Path(workdir) / PROVENANCE
    if not path.is_file():
        return []
    try:
        launches = read_json(path).get("launches", [])
    except (DataError, AttributeError):
        return []
    return [x for x in launches if isinstance(x, dict)]
