"""How this package was installed, so that an install hint is a command that works.

`pip install -e '.[cuda]'` only works in a checkout, and `pip install 'ctsearcher-jax[torch]'`
only once the package is on an index. `install_hint(extra)` reads the installed distribution's
`direct_url.json` (PEP 610) and answers with

- an editable install or an install from a folder: `pip install [-e] '<folder>[extra]'`
  (`.` when the folder is the current directory);
- an install from an index (no direct_url.json): `pip install 'ctsearcher-jax[extra]'`;
- an install from a wheel or an archive: the extra's own requirements, read from the installed
  metadata (e.g. `pip install 'torch>=2.2'`), which need nothing but the index.

Code that runs from a checkout (an editable install, or PYTHONPATH) is told to install the
checkout with the extra.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import urllib.parse
import urllib.request
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "ctsearcher-jax"
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def install_source(root: Path | None = None) -> dict[str, str | None]:
    """{"kind": "source" | "editable" | "directory" | "archive" | "index", "path": the checkout,
    folder or archive (None for an index install)}. `root`: the folder above the package (where a
    checkout has pyproject.toml)."""
    root = Path(__file__).resolve().parents[1] if root is None else Path(root)
    if (root / "pyproject.toml").is_file():  # the code runs from a checkout (editable or not)
        return {"kind": "source", "path": str(root)}
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return {"kind": "index", "path": None}
    text = dist.read_text("direct_url.json")
    if not text:
        return {"kind": "index", "path": None}
    try:
        info = json.loads(text)
        url = urllib.parse.urlparse(info["url"])
    except (ValueError, KeyError, TypeError):
        return {"kind": "index", "path": None}
    path = urllib.request.url2pathname(url.path) if url.scheme == "file" else info["url"]
    if "dir_info" in info:
        editable = bool((info.get("dir_info") or {}).get("editable"))
        return {"kind": "editable" if editable else "directory", "path": path}
    return {"kind": "archive", "path": path}


def extra_requirements(extra: str) -> list[str]:
    """The requirements the installed metadata lists for `extra` (markers removed)."""
    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []
    out = []
    for req in requires:
        spec, _, marker = req.partition(";")
        if extra in _EXTRA_MARKER.findall(marker):
            out.append(spec.strip())
    return out


def _folder(path: str) -> str:
    try:
        if Path(path).resolve() == Path(os.getcwd()).resolve():
            return "."
    except OSError:
        pass
    return path


def install_hint(extra: str, source: dict[str, str | None] | None = None) -> str:
    """A pip command that adds `extra` (cuda, cuda13, tpu, torch, wandb) to this installation
    (`source`: an `install_source()` answer, for tests)."""
    source = install_source() if source is None else source
    kind, path = source["kind"], source["path"]
    if kind in ("editable", "source"):
        return f"pip install -e {shlex.quote(f'{_folder(str(path))}[{extra}]')}"
    if kind == "directory":
        return f"pip install {shlex.quote(f'{_folder(str(path))}[{extra}]')}"
    if kind == "index":
        return f"pip install {shlex.quote(f'{DISTRIBUTION}[{extra}]')}"
    requirements = extra_requirements(extra)
    if requirements:
        return "pip install " + " ".join(shlex.quote(r) for r in requirements)
    return f"pip install {shlex.quote(f'{DISTRIBUTION}[{extra}]')}"
