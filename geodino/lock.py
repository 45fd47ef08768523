"""An exclusive lock on a file path that names its holder: one run per output, one download per file.

``fcntl.flock`` on a lock file beside what it protects: the OS releases it when the process dies, so
a stale lock file is simply taken over. The file holds ``pid N on HOST since TIME`` for the refusal
message. The holder unlinks it on release; a process that opened it just before checks, once locked,
that the path still names the same inode, and opens it again if not.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import socket
from collections.abc import Callable
from pathlib import Path

from geodino.errors import GeodinoError, OutputError


class OutputLock:
    """An exclusive ``flock`` on ``path`` holding ``pid host start`` (released by the OS if the process dies).

    ``busy(holder)`` makes the error raised when another process holds it (default: ``what`` is being written).
    """

    def __init__(self, path: Path, what: Path | str, busy: Callable[[str], GeodinoError] | None = None) -> None:
        self.path, self.what = path, what
        self.busy = busy or (
            lambda holder: OutputError(f"{what} is being written by another geodino run ({holder}): wait for it or stop it")
        )
        self.fd: int | None = None

    def acquire(self) -> OutputLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(f"cannot create the lock {self.path}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise self.busy(holder) from None
            if _same_file(fd, self.path):  # else its last holder unlinked it between our open and flock: again
                break
            os.close(fd)
        started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        """Unlink the lock file, then unlock (a process waiting on this inode then sees it is gone)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_ino, st.st_dev) == (mine.st_ino, mine.st_dev)


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = " ".join(os.pread(fd, 512, 0).decode(errors="replace").split())
        if text:
            return text
    return "starting up"
