"""Native CPU kernels: C++ XLA FFI handlers shipped as source, compiled on first use.

A few inner loops are sequential by nature (a dynamic programme whose next row needs this one) and
XLA:CPU runs them one small vector step at a time; a C++ loop runs them 4x faster or more
(`metrics/scanmatch/native.py` measures it). Such a kernel is a `.cc` file next to the module that
uses it, written against the XLA FFI headers that jaxlib ships (`jax.ffi.include_dir()`), and is
called inside `jax.jit` like any other op (`jax.ffi.ffi_call`). It has a jnp twin that gives the
same results: accelerators, sharded batches and machines without a compiler use that.

`load(source)` compiles the file once per machine with the system C++ compiler (`$CXX`, else
`c++`, `g++` or `clang++`; ~3 s; for this CPU's vector units on x86-64 when its feature flags can
be read) into `$CTSEARCHER_NATIVE_CACHE`, else `$XDG_CACHE_HOME/ctsearcher-jax/native`
(`~/.cache/...` without XDG_CACHE_HOME), named `<stem>-<key>.so` by a hash of the source, the
jaxlib version, the content of the FFI headers (not their path: every virtual environment with the
same jaxlib shares one build), the compiler, its flags and the CPU, so an upgrade or another kind
of node rebuilds, and a new build removes the older builds of the same source for the same CPU.

The cache trusts nothing it did not build (a `.so` runs code as it loads):
- the folder must belong to this user and not be writable by group or others (created 0700);
- each library has a sidecar `<stem>-<key>.json` written at build time with its sha256; a library
  is loaded only when its bytes match it, so a file planted under the cache's name (or a truncated
  one) is never loaded: it is rebuilt, once;
- a library that cannot load (dlopen fails) is rebuilt once; a build that leaves no library
  (e.g. `CXX=/bin/true`) is a build error;
- builds take an `fcntl` lock on `.<stem>.lock` in the folder: N processes on one node compile once;
- every failure is one warning naming the file and the fix, then the jnp kernel; never a traceback.
`CTSEARCHER_NATIVE=0` (also off/false/no) turns native kernels off. Results never depend on
which path ran.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import functools
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import jax
import jaxlib

from ctsearcher_jax import logs

log = logs.get(__name__)

ENV = "CTSEARCHER_NATIVE"
CACHE_ENV = "CTSEARCHER_NATIVE_CACHE"
_OFF = {"0", "off", "false", "no", "none"}
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-w")
# On x86-64 the kernels are built for this machine's vector units (float64 ScanMatch: 1.7x faster
# with AVX-512 than with the baseline SSE2 on the project's CPU), only when the CPU's feature
# flags are read into the key: a cache in a home shared by nodes of several CPU generations stays
# correct.
NATIVE_ARCH_FLAGS = ("-march=native",)
BUILD_TIMEOUT_S = 300
_KEY = re.compile(r"-[0-9a-f]{16}\.so$")


def enabled(env: dict[str, str] | None = None) -> bool:
    """False when `CTSEARCHER_NATIVE` turns native kernels off."""
    env = os.environ if env is None else env
    return env.get(ENV, "1").strip().lower() not in _OFF


def cache_dir(env: dict[str, str] | None = None) -> Path:
    """Where compiled kernels are kept (created 0700 on first build)."""
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


def cpu_id() -> str | None:
    """This CPU's model and feature flags (Linux `/proc/cpuinfo`), or None when they cannot be
    read (then nothing is built for this machine's vector units)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            lines = [line for line in info if line.startswith(("model name", "flags", "Features"))]
    except OSError:
        return None
    if not any(line.startswith(("flags", "Features")) for line in lines):
        return None
    return "".join(sorted(set(lines)))


def arch_flags(cpu: str | None) -> tuple[str, ...]:
    """`-march=native` on x86-64 when the CPU's features are known (they are in the key)."""
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    return NATIVE_ARCH_FLAGS if x86 and cpu else ()


@functools.lru_cache(maxsize=8)
def include_digest(include_dir: str) -> str:
    """sha256 of the FFI headers' relative paths and contents (the key does not depend on where
    the virtual environment is)."""
    h = hashlib.sha256()
    root = Path(include_dir)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


class BuildError(RuntimeError):
    """A native kernel could not be compiled, trusted or loaded (the caller falls back to jnp)."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """What building `source` means on this machine: the command and where the library goes."""

    source: Path
    command: tuple[str, ...]   # the compiler and its flags, without -o
    key: str
    cpu: str                   # digest of the CPU identity (old builds of the same CPU go)
    directory: Path

    @property
    def target(self) -> Path:
        return self.directory / f"{self.source.stem}-{self.key}.so"

    @property
    def sidecar(self) -> Path:
        return self.target.with_suffix(".json")


def plan(source: Path, env: dict[str, str] | None = None) -> Plan:
    """The build of `source`: compiler, flags and the cache key (BuildError without a compiler)."""
    cxx = compiler(env)
    if cxx is None:
        raise BuildError("no C++ compiler found (set CXX, or install g++ or clang++)")
    try:
        version = subprocess.run([*cxx, "--version"], capture_output=True, text=True,
                                 timeout=60).stdout.splitlines()[:1]
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"C++ compiler {shlex.join(cxx)!r} does not run: {exc}") from None
    include = jax.ffi.include_dir()
    cpu = cpu_id()
    flags = (*FLAGS, *arch_flags(cpu))
    parts = [source.read_text(), jaxlib.__version__, include_digest(include), *cxx, *version,
             *flags, cpu or platform.machine()]
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    cpu_digest = hashlib.sha256((cpu or platform.machine()).encode()).hexdigest()[:16]
    return Plan(source, (*cxx, *flags, f"-I{include}"), key, cpu_digest, cache_dir(env))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_folder(directory: Path) -> None:
    """BuildError unless `directory` is this user's and not writable by group or others."""
    st = directory.stat()
    if st.st_uid != os.geteuid():
        raise BuildError(f"the kernel cache {directory} belongs to user id {st.st_uid}, not to "
                         f"you ({os.geteuid()}): nothing there is loaded; set {CACHE_ENV} to a "
                         "folder of yours")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise BuildError(f"the kernel cache {directory} is writable by others "
                         f"({stat.filemode(st.st_mode)}): nothing there is loaded; run "
                         f"`chmod go-w {directory}` or set {CACHE_ENV} to a private folder")


def trusted(p: Plan) -> bool:
    """True when the library exists, is this user's, and its bytes match its sidecar's sha256."""
    try:
        record = json.loads(p.sidecar.read_text())
        st = p.target.stat()
    except (OSError, ValueError):
        return False
    return (isinstance(record, dict) and st.st_uid == os.geteuid()
            and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            and record.get("sha256") == _sha256(p.target))


@contextlib.contextmanager
def _build_lock(p: Plan) -> Iterator[None]:
    """The cache's build lock of this source (fcntl): one process builds, the others wait."""
    fd = os.open(p.directory / f".{p.source.stem}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        deadline = time.monotonic() + BUILD_TIMEOUT_S + 60
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) \
                        or time.monotonic() > deadline:
                    raise BuildError(f"cannot take the build lock in {p.directory} ({exc})") \
                        from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # releases the flock


def build(source: Path, env: dict[str, str] | None = None, *, rebuild: bool = False) -> Path:
    """The trusted library of `source` in the cache: built now unless a trusted one is there
    (`rebuild`: build it again whatever is there). BuildError says why not."""
    p = plan(Path(source), env)
    try:
        p.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot create the kernel cache {p.directory} ({exc.strerror or exc}); "
                         f"set {CACHE_ENV} to a writable folder") from None
    check_folder(p.directory)
    with _build_lock(p):
        if not rebuild and trusted(p):
            return p.target
        _compile(p)
        _remove_older(p)
    return p.target


def _compile(p: Plan) -> None:
    """Compile into a temporary name, write the sidecar, rename both into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{p.source.stem}-", suffix=".so", dir=p.directory)
    os.close(fd)
    command = [*p.command, str(p.source), "-o", tmp]
    log.info("compiling native kernel %s (first use on this machine)", p.source.name)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise BuildError(f"{shlex.join(command)} failed ({done.returncode}):\n{tail}")
        if os.path.getsize(tmp) == 0:
            raise BuildError(f"{shlex.join(command)} exited 0 but wrote no library; set CXX to a "
                             "working C++ compiler")
        os.chmod(tmp, 0o644)
        record = {"sha256": _sha256(Path(tmp)), "source": p.source.name, "key": p.key,
                  "cpu": p.cpu, "jaxlib": jaxlib.__version__, "command": list(p.command)}
        p.sidecar.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, p.target)  # atomic: another process sees no file or the whole library
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"compiling {p.source.name} failed: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _remove_older(p: Plan) -> None:
    """Remove the other builds of this source for this CPU (`<stem>-<key>.so` + sidecar; files
    without a sidecar under that name too). Builds for other CPUs (a shared home) are kept."""
    for lib in p.directory.glob(f"{p.source.stem}-*.so"):
        if lib == p.target or not _KEY.search(lib.name) \
                or lib.name[: -len("-0123456789abcdef.so")] != p.source.stem:
            continue
        sidecar = lib.with_suffix(".json")
        try:
            cpu = json.loads(sidecar.read_text()).get("cpu") if sidecar.exists() else p.cpu
        except (OSError, ValueError, AttributeError):
            cpu = p.cpu
        if cpu == p.cpu:
            for path in (lib, sidecar):
                with contextlib.suppress(OSError):
                    path.unlink()


_lock = threading.Lock()  # one build and one registration per source, whichever thread asks first


def load(source: str) -> ctypes.CDLL | None:
    """The compiled library of `source` (a path), or None when native kernels are off or it could
    not be built, trusted or loaded (warned once per source and process). Thread-safe."""
    with _lock:
        return _load(source)


def _warn(source: str, why: str) -> None:
    log.warning("native kernel %s unavailable, using the jnp kernel (same results, slower on CPU): "
                "%s", Path(source).name, " ".join(str(why).split()))


@functools.lru_cache(maxsize=None)
def _load(source: str) -> ctypes.CDLL | None:
    if not enabled():
        return None
    try:
        path = build(Path(source))
    except BuildError as exc:
        _warn(source, exc)
        return None
    try:
        return ctypes.CDLL(str(path))
    except OSError as first:  # a library that cannot load: rebuilt once
        log.info("native kernel %s does not load (%s); rebuilding it once", path, first)
    try:
        path = build(Path(source), rebuild=True)
        return ctypes.CDLL(str(path))
    except (BuildError, OSError) as exc:
        _warn(source, f"{path} cannot be loaded ({exc}); delete it and its .json, check CXX, or "
                      f"set {ENV}=0")
        return None


def register(source: str, handlers: tuple[tuple[str, str], ...]) -> bool:
    """Register `(target name, handler symbol)` pairs of `source`'s library with XLA for CPU.

    Returns False (and registers nothing; one warning) when the library is unavailable or lacks
    a symbol. Once per process; thread-safe.
    """
    with _lock:
        return _register(source, handlers)


@functools.lru_cache(maxsize=None)
def _register(source: str, handlers: tuple[tuple[str, str], ...]) -> bool:
    lib = _load(source)
    if lib is None:
        return False
    try:
        capsules = [(target, jax.ffi.pycapsule(getattr(lib, symbol))) for target, symbol in handlers]
    except (AttributeError, TypeError, ValueError) as exc:
        _warn(source, f"{lib._name} lacks a handler ({exc}); delete it and its .json (it is "
                      f"rebuilt), or set {ENV}=0")
        return False
    try:
        for target, capsule in capsules:
            jax.ffi.register_ffi_target(target, capsule, platform="cpu")
    except Exception as exc:  # noqa: BLE001 - XLA's registration errors have no common type
        _warn(source, f"registering {lib._name} with XLA failed ({type(exc).__name__}: {exc}); "
                      f"set {ENV}=0")
        return False
    return True


def clear_caches() -> None:
    """Forget loaded libraries and registrations (tests; XLA keeps what was registered)."""
    _load.cache_clear()
    _register.cache_clear()
