"""Host memory for XLA on the CPU: keep freed blocks for the next call (glibc's malloc).

XLA's CPU runtime mallocs each call's temporaries and frees them when the call returns. The
Swin UNETR encoder's are large (window attention: hundreds of MB per batch of 96^3 windows),
and glibc serves every block above its mmap threshold (32 MiB at most) with a fresh mmap,
unmaps it on free and shrinks the heaps of its per-thread arenas, so each call faults its
temporaries in again, 4 KiB page by page: extraction on CPU spends about half its time in the
kernel's page faults. `retain_freed_memory()` asks glibc (mallopt) to serve every block from
one heap (one arena, no mmaps) that it never trims, so the next call reuses pages already
mapped. It must run before JAX starts its backend: XLA's threads take their arenas then.

`extract` and `predict` (which extracts when given volumes) call it at start on a CPU-only host
(`cli.main` -> `for_extraction()`, the commands' `EXTRACTS`). Measured on the 2-core CPU box
(`scripts/bench_extract.py --skip-original --batch 2`, one 130x100x70 CT, 4 windows of 96^3,
off and on alternated):
feature_size 12: 9.6 / 9.6 s per volume and 6.6-7.2 M minor page faults off, 6.3 / 5.5 s and
1.7 M on; feature_size 48: 9.9 s and 7.2 M off, 6.7 s and 2.6 M on; peak RSS 3.3 -> 4.1 GB and
3.6 -> 4.7 GB (the heap stays at its peak until the process ends). One arena makes threads
that allocate at once wait on its lock: where extraction is not most of the work it gains
nothing (the demo: 84-91 s either way) or costs (the test suite's model and metric tests: 15-35
s more user CPU in 190 s), which is why only these two commands ask for it.

Only glibc (Linux) has these knobs; elsewhere it does nothing. `CTSEARCHER_RETAIN_FREED_MEMORY=0`
turns it off.
"""

from __future__ import annotations

import ctypes
import os
import sys

from ctsearcher_jax.runtime import platforms

try:
    from jax._src.xla_bridge import backends_are_initialized
except ImportError:  # pragma: no cover - JAX moved it: assume a backend may have started
    def backends_are_initialized() -> bool:
        return True

ENV = "CTSEARCHER_RETAIN_FREED_MEMORY"
# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_SETTINGS = ((_M_ARENA_MAX, 1),  # one heap: threads' arenas are mmapped heaps glibc shrinks
             (_M_MMAP_MAX, 0),  # no block gets its own mmap (unmapped again on free)
             (_M_TRIM_THRESHOLD, 2**31 - 1))  # never give the heap's top back to the kernel

_applied = False


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse, once per process; True when in effect.

    False (and nothing changed) when turned off, off glibc, or once JAX's backend has started.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get(ENV, "1").strip().lower() in ("0", "off", "false", "no"):
        return False
    if not sys.platform.startswith("linux") or backends_are_initialized():
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already uses
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no such mallopt knobs)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = all(mallopt(param, value) == 1 for param, value in _SETTINGS)
    return _applied


def for_extraction() -> bool:
    """`retain_freed_memory()` where JAX will run on the CPU alone (what `extract` and `predict`
    call at start); True when in effect."""
    return platforms.cpu_only() and retain_freed_memory()
