"""JAX's persistent compilation cache, on by default in a per-user cache directory.

A second run of the same shapes loads its XLA executables from disk instead of compiling them again
(`extract` compiles the Swin UNETR for about 46 s on 2 CPU cores, `train` 24 s, `evaluate` 4-5 s).

Where: `$CTSEARCHER_COMPILE_CACHE` when it names a directory, else `$XDG_CACHE_HOME/ctsearcher-jax/jax`
(`~/.cache/ctsearcher-jax/jax` without XDG_CACHE_HOME). Off: `ctsearcher --no-compile-cache ...`
(or the flag after the command) turns off every persistent cache; `CTSEARCHER_COMPILE_CACHE=0`
(also `off`, `false`, `no`) turns off ours. A user who configured JAX's own cache
(`JAX_COMPILATION_CACHE_DIR`) keeps it unless the flag is given.

Entries are keyed by JAX on the program, the jax/jaxlib versions, the backend and the device
kind, so upgrading JAX or moving to another card compiles afresh; a stale or corrupt entry is
recompiled by JAX (a warning), never trusted. The cache only grows: delete the directory to reclaim it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jax

ENV = "CTSEARCHER_COMPILE_CACHE"
_OFF = {"0", "off", "false", "no", "none", ""}
# Programs that compile faster than this are not written (JAX's default is 1 s; the CLI's small
# jitted helpers compile in well under that and would only add files).
MIN_COMPILE_SECONDS = 0.5


def cache_dir(env: dict[str, str] | None = None) -> Path | None:
    """The cache directory this process should use, or None when the cache is turned off."""
    env = os.environ if env is None else env
    value = env.get(ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else Path(value).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "ctsearcher-jax" / "jax"


def configure(enabled: bool = True, env: dict[str, str] | None = None) -> Path | None:
    """Turn JAX's persistent compilation cache on (returns its directory) or off (returns None).

    Call before the first compilation. `enabled=False` (the `--no-compile-cache` flag) turns off
    every persistent cache, JAX's own included. Otherwise a directory the user gave JAX
    (`JAX_COMPILATION_CACHE_DIR`) is kept, and `CTSEARCHER_COMPILE_CACHE=0` only drops our default
    directory (JAX's own settings stay as they are). When JAX is not imported yet, this only sets JAX's
    environment variables, so commands that never use JAX do not pay for importing it.
    """
    settings: dict[str, object]
    user_dir = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if "jax" in sys.modules:
        user_dir = user_dir or sys.modules["jax"].config.jax_compilation_cache_dir
    if not enabled:
        settings = {"jax_enable_compilation_cache": False}
        directory = None
    elif user_dir:
        return Path(user_dir)  # the user's own JAX cache wins
    else:
        directory = cache_dir(env)
        if directory is None:
            return None  # CTSEARCHER_COMPILE_CACHE=0: leave JAX's defaults (no persistent cache)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None  # read-only home etc.: run without the cache rather than fail
        settings = {"jax_enable_compilation_cache": True,
                    "jax_compilation_cache_dir": str(directory),
                    "jax_persistent_cache_min_compile_time_secs": MIN_COMPILE_SECONDS,
                    "jax_persistent_cache_min_entry_size_bytes": 0}
    if "jax" in sys.modules:
        for name, value in settings.items():
            sys.modules["jax"].config.update(name, value)
    else:  # read by JAX when it is imported
        for name, value in settings.items():
            os.environ[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    return directory


def active_dir() -> Path | None:
    """The directory JAX's persistent cache uses in this process (None when off)."""
    if not jax.config.jax_enable_compilation_cache or not jax.config.jax_compilation_cache_dir:
        return None
    return Path(jax.config.jax_compilation_cache_dir)
