"""The memory the extraction's loader threads may fill with decoded volumes.

Each loader thread reads and decodes a whole CT ahead of the device; with `workers` of them (up to
8 by default) the CTs in flight, not one CT, decide the memory a run needs. `MemoryBudget` grants
each volume its decoded size (`NiftiInfo.decoded_bytes`, known from the header before a voxel is
read) in file order, and a loader waits until the volumes ahead of it leave enough room; the
encoder loop gives the bytes back once it is done with a volume. A volume larger than the whole
budget is refused (DataError naming the file, its size and the budget) instead of read; the
largest total held at once is the run's `peak` (said in the summary).

Order matters: the encoder takes volumes in file order, so a later volume may never hold room an
earlier one waits for (that would wait forever). `reserve(i, ...)` therefore waits for its turn:
every volume before `i` has reserved or passed (`skip`: up to date, or failed before reading).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ctsearcher_jax.errors import DataError

GB = 1e9


def default_budget_bytes() -> int:
    """Half the machine's physical memory (4 GB when it cannot be read)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * int(GB)
    return max(1, int(total) // 2)


class BudgetClosed(Exception):
    """The run stopped while a loader waited for room (the loader just ends)."""


class MemoryBudget:
    """Bytes of decoded volumes in flight, granted in file order (module docstring).

    limit: bytes at most held at once. in_flight: bytes held now. peak: the most held at once.
    """

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.in_flight = 0
        self.peak = 0
        self._turn = 0                # index of the next volume to reserve or pass
        self._passed: set[int] = set()  # later indices that passed out of turn
        self._closed = False
        self._cond = threading.Condition()

    def reserve(self, index: int, nbytes: int, path: Path | str) -> None:
        """Block until it is volume `index`'s turn and `nbytes` fit beside the bytes held.

        Raises DataError (the volume passes) when `nbytes` alone exceeds the limit, and
        BudgetClosed when the run stopped meanwhile.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._turn == index)
            if self._closed:
                raise BudgetClosed
            if nbytes > self.limit:
                self._advance()
                raise DataError(f"{path}: decoding it needs {nbytes / GB:.2f} GB, more than the "
                                f"loaders' memory budget of {self.limit / GB:.2f} GB; raise it "
                                f"(--memory-budget GB, or extract.memory_budget_gb)")
            self._cond.wait_for(lambda: self._closed or self.in_flight + nbytes <= self.limit)
            if self._closed:
                raise BudgetClosed
            self.in_flight += nbytes
            self.peak = max(self.peak, self.in_flight)
            self._advance()

    def skip(self, index: int) -> None:
        """Volume `index` needs no room (up to date, or failed before it was read)."""
        with self._cond:
            if index == self._turn:
                self._advance()
            elif index > self._turn:
                self._passed.add(index)

    def release(self, nbytes: int) -> None:
        """Give back the bytes of a volume the encoder is done with (or that failed)."""
        with self._cond:
            self.in_flight -= nbytes
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiting loader with BudgetClosed (the run is stopping)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _advance(self) -> None:
        self._turn += 1
        while self._turn in self._passed:
            self._passed.discard(self._turn)
            self._turn += 1
        self._cond.notify_all()
