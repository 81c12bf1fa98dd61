"""Native CPU kernels: C++ XLA FFI handlers shipped as source, compiled on first use.

A few inner loops are sequential by nature (a dynamic programme whose next row needs this one) and
XLA:CPU runs them one small vector step at a time; a C++ loop runs them 4x faster or more
(`metrics/scanmatch/native.py` measures it). Such a kernel is a `.cc` file next to the module that
uses it, written against the XLA FFI headers that jaxlib ships (`jax.ffi.include_dir()`), and is
called inside `jax.jit` like any other op (`jax.ffi.ffi_call`). It has a jnp twin that gives the
same results: accelerators, sharded batches and machines without a compiler use that.

`load(source)` compiles the file once per machine with the system C++ compiler (`$CXX`, else
`c++`, `g++` or `clang++`; ~3 s; for this CPU's vector units on x86-64) into
`$CTSEARCHER_NATIVE_CACHE`, else `$XDG_CACHE_HOME/ctsearcher-jax/native` (`~/.cache/...` without
XDG_CACHE_HOME), named by a hash of the source, the jaxlib version, the compiler, its flags and
the CPU, so an upgrade or another kind of node rebuilds. The library is
written to a temporary name and renamed into place (concurrent processes never load half a file).
`CTSEARCHER_NATIVE=0` (also off/false/no) turns native kernels off; a missing compiler or a failed
build does too, with one warning naming the reason. Results never depend on which path ran.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import jax
import jaxlib

from ctsearcher_jax import logs

log = logs.get(__name__)

ENV = "CTSEARCHER_NATIVE"
CACHE_ENV = "CTSEARCHER_NATIVE_CACHE"
_OFF = {"0", "off", "false", "no", "none"}
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-w")
# On x86-64 the kernels are built for this machine's vector units (float64 ScanMatch: 1.7x faster
# with AVX-512 than with the baseline SSE2 on the project's CPU). A cache in a home shared by
# nodes of several CPU generations stays correct: the CPU's feature flags are part of the key.
ARCH_FLAGS = ("-march=native",) if platform.machine().lower() in ("x86_64", "amd64") else ()
BUILD_TIMEOUT_S = 300


def enabled(env: dict[str, str] | None = None) -> bool:
    """False when `CTSEARCHER_NATIVE` turns native kernels off."""
    env = os.environ if env is None else env
    return env.get(ENV, "1").strip().lower() not in _OFF


def cache_dir(env: dict[str, str] | None = None) -> Path:
    """Where compiled kernels are kept (created on first build)."""
    env = os.environ if env is None else env
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "ctsearcher-jax" / "native"


def compiler(env: dict[str, str] | None = None) -> list[str] | None:
    """The C++ compiler command (`$CXX` split like a shell would), or None when there is none."""
    env = os.environ if env is None else env
    if env.get("CXX"):
        return shlex.split(env["CXX"])
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def cpu_id() -> str:
    """This CPU's model and feature flags (Linux), else its architecture: part of the cache key,
    since `ARCH_FLAGS` build for the machine that compiles."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            lines = [line for line in info if line.startswith(("model name", "flags", "Features"))]
    except OSError:
        lines = []
    return "".join(sorted(set(lines))) or platform.machine()


class BuildError(RuntimeError):
    """A native kernel could not be compiled or loaded (the caller falls back to jnp)."""


def build(source: Path, env: dict[str, str] | None = None) -> Path:
    """Compile `source` into the cache (once; later calls return the cached library's path)."""
    cxx = compiler(env)
    if cxx is None:
        raise BuildError("no C++ compiler found (set CXX, or install g++ or clang++)")
    try:
        version = subprocess.run([*cxx, "--version"], capture_output=True, text=True,
                                 timeout=60).stdout.splitlines()[:1]
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"C++ compiler {shlex.join(cxx)!r} does not run: {exc}") from None
    include = jax.ffi.include_dir()
    flags = (*FLAGS, *ARCH_FLAGS)
    key = hashlib.sha256("\0".join([source.read_text(), jaxlib.__version__, include, *cxx,
                                    *version, *flags, cpu_id()]).encode()).hexdigest()[:16]
    directory = cache_dir(env)
    target = directory / f"{source.stem}-{key}.so"
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{source.stem}-", suffix=".so", dir=directory)
    os.close(fd)
    command = [*cxx, *flags, f"-I{include}", str(source), "-o", tmp]
    log.info("compiling native kernel %s (first use on this machine)", source.name)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise BuildError(f"{shlex.join(command)} failed ({done.returncode}):\n{tail}")
        os.replace(tmp, target)  # atomic: another process sees no file or the whole library
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"compiling {source.name} failed: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


_lock = threading.Lock()  # one build and one registration per source, whichever thread asks first


def load(source: str) -> ctypes.CDLL | None:
    """The compiled library of `source` (a path), or None when native kernels are off or the build
    failed (warned once per source and process). Thread-safe."""
    with _lock:
        return _load(source)


@functools.lru_cache(maxsize=None)
def _load(source: str) -> ctypes.CDLL | None:
    if not enabled():
        return None
    try:
        return ctypes.CDLL(str(build(Path(source))))
    except (BuildError, OSError) as exc:
        log.warning("native kernel %s unavailable, using the jnp kernel (same results, slower "
                    "on CPU): %s", Path(source).name, exc)
        return None


def register(source: str, handlers: tuple[tuple[str, str], ...]) -> bool:
    """Register `(target name, handler symbol)` pairs of `source`'s library with XLA for CPU.

    Returns False (and registers nothing) when the library is unavailable. Once per process;
    thread-safe.
    """
    with _lock:
        return _register(source, handlers)


@functools.lru_cache(maxsize=None)
def _register(source: str, handlers: tuple[tuple[str, str], ...]) -> bool:
    lib = _load(source)
    if lib is None:
        return False
    for target, symbol in handlers:
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                    platform="cpu")
    return True


def clear_caches() -> None:
    """Forget loaded libraries and registrations (tests; XLA keeps what was registered)."""
    _load.cache_clear()
    _register.cache_clear()
