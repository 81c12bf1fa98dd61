"""One writer per output folder: an exclusive `fcntl.flock` on `<folder>/.ctsearcher.lock`.

Every command that writes a run folder (`train` and `finetune` their workdir, `extract` its
feature folder, `predict` its output folder and the feature folder it extracts into, `demo` its
run folder) takes the lock before its work starts and holds it until it ends; a second process
that asks for the same folder gets `OutputError` at once: one line naming the folder, the
holder's PID, host and command (exit code 2).

The kernel releases an flock when its holder ends, however it ends (killed with SIGKILL, out of
memory), so a killed holder leaves no stale lock: the file may stay, unlocked, and the next
command takes it. A holder that ends normally removes the file, and the folder too when the lock
created it and it is still empty (a command that fails early leaves nothing). The lock is per
folder and per
process: a command that locks a folder its own process already holds (`predict --features`
inside `--out`... or the same folder) gets the lock it has. Multi-host runs: only the process that
writes the folder's shared files locks (`writer=False` on the others), so the processes of one
run never refuse each other. On a network file system the lock is what its `flock` gives (NFS:
a lock on the server since Linux 2.6.12).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import fcntl
import json
import os
import socket
import threading
from pathlib import Path
from typing import Iterator

from ctsearcher_jax.errors import OutputError

LOCK_NAME = ".ctsearcher.lock"

_held: dict[Path, int] = {}   # folder (resolved) -> how many times this process holds it
_held_lock = threading.Lock()


@dataclasses.dataclass
class FolderLock:
    """A held lock (`release` or leave the `with` block to give it back)."""

    folder: Path
    path: Path
    fd: int | None
    created: tuple[Path, ...] = ()  # folders the lock created (innermost first)

    def release(self) -> None:
        """Remove the lock file and close it (the kernel releases the flock); remove the folders
        the lock created when they are still empty."""
        key = self.folder.resolve()
        with _held_lock:
            _held[key] -= 1
            if _held[key] or self.fd is None:
                return
            del _held[key]
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # while still holding it: no one can lock this file now
            os.close(self.fd)
            self.fd = None
            for folder in self.created:
                with contextlib.suppress(OSError):  # not empty: the run wrote there, keep it
                    folder.rmdir()


def holder(path: Path) -> dict:
    """What the lock file says of its holder ({} when it is empty or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _busy(folder: Path, path: Path, flag: str) -> OutputError:
    who = holder(path)
    about = [f"PID {who.get('pid', 'unknown')}"]
    if who.get("host"):
        about.append(f"on {who['host']}")
    if who.get("command"):
        about.append(f"`ctsearcher {who['command']}`")
    if who.get("started"):
        about.append(f"since {who['started']}")
    return OutputError(f"{flag} {folder}: another ctsearcher process is writing this folder "
                       f"({', '.join(about)}); wait for it to end, or choose another {flag}")


def acquire(folder: str | os.PathLike[str], *, command: str, flag: str = "--out") -> FolderLock:
    """Lock `folder` (created if missing) for this process, or OutputError naming the holder.

    command: what the lock file records (`train`, `extract`, ...), shown to a second process.
    """
    folder = Path(folder)
    created = tuple(p for p in (folder, *folder.parents) if not p.exists())
    _make(folder, flag)
    key, path = folder.resolve(), folder / LOCK_NAME
    with _held_lock:
        if key in _held:  # this process holds it already (nested commands, the same folder)
            _held[key] += 1
            return FolderLock(folder, path, None)
        fd = _lock_file(folder, path, flag)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                  "started": _dt.datetime.now().astimezone().replace(microsecond=0).isoformat()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(record).encode())
        _held[key] = 1
    return FolderLock(folder, path, fd, created)


def _make(folder: Path, flag: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{flag} {folder}: cannot create the folder ({exc.strerror or exc})") \
            from None


def _lock_file(folder: Path, path: Path, flag: str) -> int:
    """An open descriptor of `path` holding its exclusive flock (a file a finishing holder
    removed between our open and our lock is opened again)."""
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:  # a finishing holder removed the folder it had created
            _make(folder, flag)
            continue
        except OSError as exc:
            raise OutputError(f"{flag} {folder}: cannot create the lock file {path.name} "
                              f"({exc.strerror or exc}); choose a writable location") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _busy(folder, path, flag) from None
            raise OutputError(f"{flag} {folder}: cannot lock {path.name} ({exc.strerror or exc})") \
                from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise OutputError(f"{flag} {folder}: the lock file keeps changing; is another process "
                      "starting and stopping there?")


@contextlib.contextmanager
def locked(folder: str | os.PathLike[str] | None, *, command: str, flag: str = "--out",
           writer: bool = True) -> Iterator[FolderLock | None]:
    """`with locked(out, command="extract"):` the block runs holding `folder`'s lock.

    writer=False (a multi-host process that does not write the folder's shared files) and
    folder=None lock nothing.
    """
    if folder is None or not writer:
        yield None
        return
    lock = acquire(folder, command=command, flag=flag)
    try:
        yield lock
    finally:
        lock.release()
