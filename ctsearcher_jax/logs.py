"""Diagnostics through stdlib `logging`; results (tables, paths) stay on stdout.

The library logs to the `ctsearcher_jax` and `feature_extraction` loggers and installs no handler
(a script that imports it decides what to show; warnings reach stderr through Python's last-resort
handler). The CLI calls `setup(verbosity)`: one stderr handler, INFO by default, `-v` for DEBUG,
`-q` for warnings and errors only. Lines read

    14:02:31 step 40/300 loss 3.1416 ...            (one process)
    14:02:31 [p1/4] step 40/300 loss 3.1416 ...     (process 1 of a 4-process run)

`set_process` is called once `jax.distributed` is up, so every line names its host on multi-host
runs. `progress_bars(flag)` says whether a command draws tqdm bars (a terminal) or writes plain
log lines (a log file, a pipe, `--no-progress`).
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAMES = ("ctsearcher_jax", "feature_extraction")

_process: tuple[int, int] = (0, 1)


def get(name: str) -> logging.Logger:
    """The logger of module `name` (pass `__name__`)."""
    return logging.getLogger(name)


def set_process(index: int, count: int) -> None:
    """Name this process in every line from now on when the run has more than one process."""
    global _process
    _process = (int(index), int(count))


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        index, count = _process
        prefix = f"[p{index}/{count}] " if count > 1 else ""
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        text = f"{self.formatTime(record, '%H:%M:%S')} {prefix}{level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _StderrHandler(logging.StreamHandler):
    """Writes to the current `sys.stderr` (pytest's capture, a redirected stream)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup(verbosity: int = 0) -> None:
    """Route the package's log records to stderr: verbosity 0 = INFO, >0 DEBUG, <0 WARNING/ERROR.

    Idempotent: calling it again (the demo runs several commands in one process) replaces the
    handler it installed before.
    """
    level = logging.DEBUG if verbosity > 0 else (
        logging.INFO if verbosity == 0 else logging.WARNING if verbosity == -1 else logging.ERROR)
    for name in LOGGER_NAMES:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
            logger.removeHandler(handler)
        handler = _StderrHandler()
        handler.setFormatter(_Formatter())
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def progress_bars(enabled: bool = True) -> bool:
    """True when a command should draw tqdm bars: progress is on, stderr is a terminal and info
    lines are shown (`-q` leaves stderr to warnings: no bars either).

    Otherwise it writes plain lines (no cursor codes) through logging.
    """
    if not logging.getLogger(LOGGER_NAMES[0]).isEnabledFor(logging.INFO):
        return False
    try:
        return enabled and sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False
