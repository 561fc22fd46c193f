"""A lock on a file that orders processes (through the file) and the threads of one process (through a lock in
memory). Threads of one process that wait for each other wake at once, instead of polling the file: a pool's
threads (its controller, the thread that starts workers, a telemetry sampler) take the simulator's and the
journal's locks, and a file lock alone makes each wait a multiple of its poll (50 ms by default)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

POLL_S = 0.005  # how often a process that waits for another process's lock looks again
_guard = threading.Lock()
_by_path: dict[str, tuple[threading.RLock, FileLock]] = {}  # shared by every PathLock of this process


class PathLock:
    """Reentrant in the thread that holds it (also through another PathLock of the same path), as FileLock is.
    `acquire` raises filelock.Timeout on timeout."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        with _guard:
            if self.path not in _by_path:
                _by_path[self.path] = (threading.RLock(), FileLock(self.path))
            self._threads, self._file = _by_path[self.path]

    def acquire(self, timeout: float = -1) -> None:
        """Wait up to `timeout` seconds (forever if negative)."""
        deadline = None if timeout < 0 else time.monotonic() + timeout
        if not self._threads.acquire(timeout=-1 if deadline is None else timeout):
            raise Timeout(self.path)
        try:
            left = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            self._file.acquire(timeout=left, poll_interval=POLL_S)
        except BaseException:
            self._threads.release()
            raise

    def release(self) -> None:
        self._file.release()
        self._threads.release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
