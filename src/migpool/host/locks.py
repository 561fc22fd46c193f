"""A lock on a file that orders processes (through `flock` on the file) and the threads of one process (through a
lock in memory). Threads of one process that wait for each other wake at once, instead of polling the file: a
pool's threads (its controller, the thread that starts workers, a telemetry sampler) take the simulator's and the
journal's locks, and a file lock alone makes each wait a multiple of its poll.

The file is opened without following a symbolic link (safefiles.open_nofollow), since root takes these locks in
directories that a `migpool` group may write. The kernel drops the lock when its holder dies."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from types import TracebackType

from .safefiles import open_nofollow

POLL_S = 0.005  # how often a process that waits for another process's lock looks again


class LockTimeout(TimeoutError):  # noqa: N818 - named like filelock.Timeout, which it replaces
    """The lock was not free within the time given."""

    def __init__(self, path: str) -> None:
        super().__init__(f"the lock {path} was held by another process")
        self.path = path


class _Shared:
    """What every PathLock of one path shares in this process: the threads' lock and the file lock's count."""

    def __init__(self) -> None:
        self.threads = threading.RLock()
        self.fd: int | None = None
        self.depth = 0


_guard = threading.Lock()
_by_path: dict[str, _Shared] = {}


class PathLock:
    """Reentrant in the thread that holds it (also through another PathLock of the same path). `acquire` raises
    LockTimeout on timeout."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        with _guard:
            self._shared = _by_path.setdefault(self.path, _Shared())

    def acquire(self, timeout: float = -1) -> None:
        """Wait up to `timeout` seconds (forever if negative)."""
        sh = self._shared
        deadline = None if timeout < 0 else time.monotonic() + timeout
        if not sh.threads.acquire(timeout=-1 if deadline is None else timeout):
            raise LockTimeout(self.path)
        try:
            if sh.depth == 0:
                sh.fd = _flock(self.path, deadline)
            sh.depth += 1
        except BaseException:
            sh.threads.release()
            raise

    def release(self) -> None:
        sh = self._shared
        sh.depth -= 1
        if sh.depth == 0 and sh.fd is not None:
            os.close(sh.fd)  # closing the only descriptor drops the flock
            sh.fd = None
        sh.threads.release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _flock(path: str, deadline: float | None) -> int:
    fd = open_nofollow(Path(path), os.O_RDWR | os.O_CREAT)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeout(path) from None
                time.sleep(POLL_S)
    except BaseException:
        os.close(fd)
        raise
